package usertx

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/internal/column"
)

// fakeTx records the statements run, in order, and answers from its
// fields; fail makes the named statement fail.
type fakeTx struct {
	row       column.CounterRow
	noRow     bool
	codeFree  bool
	activates bool
	active    bool
	devices   int
	fail      string
	calls     []string
	stored    store.Counter
}

var errStatement = errors.New("statement failed")

func (f *fakeTx) call(name string) error {
	f.calls = append(f.calls, name)
	if f.fail == name {
		return errStatement
	}
	return nil
}

func (f *fakeTx) Read(context.Context, string) (column.CounterRow, error) {
	if f.noRow {
		f.calls = append(f.calls, "Read")
		return column.CounterRow{}, store.ErrNotFound
	}
	return f.row, f.call("Read")
}

func (f *fakeTx) SpendCode(context.Context, string, int64, time.Time) (bool, error) {
	return f.codeFree, f.call("SpendCode")
}

func (f *fakeTx) Accept(context.Context, string, int64, time.Time) error { return f.call("Accept") }

func (f *fakeTx) Fail(_ context.Context, _ string, c store.Counter) error {
	f.stored = c
	return f.call("Fail")
}

func (f *fakeTx) Activate(context.Context, string, string, int64, time.Time) (bool, error) {
	return f.activates, f.call("Activate")
}

func (f *fakeTx) TouchActive(context.Context, string, time.Time) (bool, error) {
	return f.active, f.call("TouchActive")
}

func (f *fakeTx) ReplaceCodes(context.Context, string, [][]byte, time.Time) error {
	return f.call("ReplaceCodes")
}

func (f *fakeTx) RevokeDevices(context.Context, string) (int, error) {
	return f.devices, f.call("RevokeDevices")
}

// users is Users on f, whose Run commits nothing: it only hands f to fn.
func (f *fakeTx) users() Users {
	return Users{Driver: "fake", Run: func(_ context.Context, fn func(Tx) error) error { return fn(f) }}
}

var (
	t0     = time.Date(2031, time.March, 4, 5, 6, 7, 0, time.UTC)
	limits = store.Limits{MaxFailures: 3, Window: time.Minute, LockFor: time.Hour}
)

func TestSettle(t *testing.T) {
	t.Parallel()
	active := column.CounterRow{State: store.StateActive, LastStep: 100}
	locked := active
	locked.Counter = store.Counter{Failures: 3, WindowStart: t0, LockedUntil: t0.Add(time.Hour)}
	nearLock := active
	nearLock.Counter = store.Counter{Failures: 2, WindowStart: t0}
	for _, tc := range []struct {
		name  string
		tx    fakeTx
		m     store.Match
		want  store.Settled
		calls []string
		err   error
	}{
		{"newer step", fakeTx{row: active}, store.Match{Step: 101},
			store.Settled{Allowed: true, Accepted: true}, []string{"Read", "Accept"}, nil},
		{"replayed step", fakeTx{row: active}, store.Match{Step: 100},
			store.Settled{Allowed: true, Replay: true, Remaining: 2}, []string{"Read", "Fail"}, nil},
		{"free code", fakeTx{row: active, codeFree: true}, store.Match{RecoveryCodeID: 7},
			store.Settled{Allowed: true, Accepted: true}, []string{"Read", "SpendCode", "Accept"}, nil},
		{"spent code", fakeTx{row: active}, store.Match{RecoveryCodeID: 7},
			store.Settled{Allowed: true, Remaining: 2}, []string{"Read", "SpendCode", "Fail"}, nil},
		{"pending user", fakeTx{row: column.CounterRow{State: store.StatePending}, codeFree: true}, store.Match{Step: 5, RecoveryCodeID: 7},
			store.Settled{Allowed: true, Replay: true, Remaining: 2}, []string{"Read", "Fail"}, nil},
		{"locked: refused, nothing written", fakeTx{row: locked}, store.Match{Step: 101},
			store.Settled{LockedUntil: t0.Add(time.Hour)}, []string{"Read"}, nil},
		{"the failure that locks revokes the devices", fakeTx{row: nearLock, devices: 2}, store.Match{},
			store.Settled{Allowed: true, LockedUntil: t0.Add(time.Hour), LockStarted: true, DevicesRevoked: 2}, []string{"Read", "Fail", "RevokeDevices"}, nil},
		{"unknown user", fakeTx{noRow: true}, store.Match{Step: 101},
			store.Settled{}, []string{"Read"}, store.ErrNotFound},
		{"failed accept", fakeTx{row: active, fail: "Accept"}, store.Match{Step: 101},
			store.Settled{}, []string{"Read", "Accept"}, errStatement},
		{"failed revocation", fakeTx{row: nearLock, fail: "RevokeDevices"}, store.Match{},
			store.Settled{}, []string{"Read", "Fail", "RevokeDevices"}, errStatement},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tx := tc.tx
			got, err := Settle(t.Context(), &tx, "alice", tc.m, t0.Add(500*time.Microsecond), limits)
			if !errors.Is(err, tc.err) || got != tc.want || !slices.Equal(tx.calls, tc.calls) {
				t.Errorf("Settle = %+v, %v after %v; want %+v, %v after %v", got, err, tx.calls, tc.want, tc.err, tc.calls)
			}
		})
	}
}

// Settle decides at whole milliseconds, as the row stores times: the
// failure it stores starts its window at the millisecond.
func TestSettleAtWholeMilliseconds(t *testing.T) {
	t.Parallel()
	tx := fakeTx{row: column.CounterRow{State: store.StateActive}}
	if _, err := Settle(t.Context(), &tx, "alice", store.Match{}, t0.Add(1500*time.Microsecond), limits); err != nil {
		t.Fatal(err)
	}
	if want := t0.Add(time.Millisecond); !tx.stored.WindowStart.Equal(want) {
		t.Errorf("stored window start %v, want %v", tx.stored.WindowStart, want)
	}
}

func TestConfirmAndReplace(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	for _, tc := range []struct {
		name  string
		tx    fakeTx
		calls []string
		err   error
	}{
		{"confirmed", fakeTx{activates: true}, []string{"Activate", "ReplaceCodes"}, nil},
		{"no pending enrollment", fakeTx{}, []string{"Activate"}, store.ErrConflict},
		{"failed activation", fakeTx{activates: true, fail: "Activate"}, []string{"Activate"}, errStatement},
	} {
		tx := tc.tx
		if err := tx.users().Confirm(ctx, "alice", "ct", 1, nil, t0); !errors.Is(err, tc.err) || !slices.Equal(tx.calls, tc.calls) {
			t.Errorf("Confirm, %s: %v after %v; want %v after %v", tc.name, err, tx.calls, tc.err, tc.calls)
		}
	}
	for _, tc := range []struct {
		name    string
		tx      fakeTx
		devices int
		calls   []string
		err     error
	}{
		{"replaced", fakeTx{active: true, devices: 3}, 3, []string{"TouchActive", "ReplaceCodes", "RevokeDevices"}, nil},
		{"not active", fakeTx{devices: 3}, 0, []string{"TouchActive"}, store.ErrConflict},
		{"failed revocation", fakeTx{active: true, devices: 3, fail: "RevokeDevices"}, 0, []string{"TouchActive", "ReplaceCodes", "RevokeDevices"}, errStatement},
	} {
		tx := tc.tx
		n, err := tx.users().ReplaceRecoveryCodes(ctx, "alice", nil, t0)
		if n != tc.devices || !errors.Is(err, tc.err) || !slices.Equal(tx.calls, tc.calls) {
			t.Errorf("ReplaceRecoveryCodes, %s: %d, %v after %v; want %d, %v after %v", tc.name, n, err, tx.calls, tc.devices, tc.err, tc.calls)
		}
	}
}
