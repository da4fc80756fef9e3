// Package mfatest wires the real second-factor service for tests: a real
// SQLite store and a real local keyring in the test's temporary
// directory, on a clock the test moves.
package mfatest

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/totpgate/totpgate/keyring"
	"github.com/totpgate/totpgate/mfa"
	"github.com/totpgate/totpgate/store/sqlite"
)

// Clock is a settable time source shared by the service and the test.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock is a clock standing at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now is the clock's time.
func (c *Clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

// Add moves the clock by d (back, for a negative d).
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Env is a service and what it runs on.
type Env struct {
	Service *mfa.Service
	Store   *sqlite.Store
	Keys    *keyring.Local
	Dir     string
}

// New builds the service with the default policy on a fresh SQLite file
// and local keyring in t's temporary directory, on the clock now; the
// store is closed when the test ends.
func New(t testing.TB, now func() time.Time) Env {
	t.Helper()
	return NewWith(t, mfa.DefaultConfig(), now)
}

// NewWith is New with the policy cfg.
func NewWith(t testing.TB, cfg mfa.Config, now func() time.Time) Env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "totpgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	keys, err := keyring.OpenLocal(filepath.Join(dir, "keyring.json"))
	if err != nil {
		t.Fatal(err)
	}
	svc, err := mfa.New(ctx, st, keys, cfg, now)
	if err != nil {
		t.Fatal(err)
	}
	return Env{Service: svc, Store: st, Keys: keys, Dir: dir}
}
