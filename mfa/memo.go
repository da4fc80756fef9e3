package mfa

import (
	"context"
	"sync"

	"github.com/totpgate/totpgate/store"
)

// A login through the gate asks about one user several times in a row
// (is the user enrolled, then the code check, or the trusted device) with
// nothing of the user's changing in between but what the store itself
// settles atomically (SettleAttempt, RotateDevice check the row as it is
// then). WithUserMemo lets such a request read each user's row once.

type userMemoKey struct{}

type userMemo struct {
	mu   sync.Mutex
	rows map[string]store.User
}

// WithUserMemo returns ctx in which Status reads each user's row from the
// store at most once. Only for one request that reads before it writes
// (the login gate's): a row read before a write is not read again.
func WithUserMemo(ctx context.Context) context.Context {
	return context.WithValue(ctx, userMemoKey{}, &userMemo{rows: map[string]store.User{}})
}

func memoOf(ctx context.Context) *userMemo {
	m, _ := ctx.Value(userMemoKey{}).(*userMemo)
	return m
}

func (m *userMemo) get(user string) (store.User, bool) {
	if m == nil {
		return store.User{}, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.rows[user]
	return u, ok
}

func (m *userMemo) put(u store.User) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rows[u.ID] = u
}
