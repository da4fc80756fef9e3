package store

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// ErrUnavailable: the store is not open yet (the database was unreachable
// at start); every call fails with it until the background open succeeds.
var ErrUnavailable = errors.New("store: not available yet")

// Lazy is a Store that may open after the process started: when the
// database (PostgreSQL, or the SQLite file's volume) is unavailable at
// start, the sidecar still starts and passes traffic through, every
// second-factor operation fails closed with ErrUnavailable, and the open
// (migrations included, under the advisory lock for replicas) is retried
// in the background until it succeeds.
type Lazy struct {
	st     atomic.Pointer[Store]
	open   func(context.Context) (Store, error)
	log    *slog.Logger
	every  time.Duration
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	closed bool
}

// NewLazy tries open once; when it fails it keeps trying every retry in
// the background. A Lazy is ready once Open succeeded.
func NewLazy(ctx context.Context, open func(context.Context) (Store, error), retry time.Duration, log *slog.Logger) *Lazy {
	l := &Lazy{open: open, log: log, every: retry, done: make(chan struct{})}
	st, err := open(ctx)
	if err == nil {
		l.st.Store(&st)
		close(l.done)
		return l
	}
	log.Warn("store not available at start; second-factor work answers 503 until it is", slog.String("error", err.Error()))
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l.cancel = cancel
	go l.retry(bg)
	return l
}

func (lz *Lazy) retry(ctx context.Context) {
	defer close(lz.done)
	t := time.NewTicker(lz.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := lz.open(ctx)
		if err != nil {
			lz.log.Warn("store still not available", slog.String("error", err.Error()))
			continue
		}
		lz.mu.Lock()
		if lz.closed {
			lz.mu.Unlock()
			st.Close()
			return
		}
		lz.st.Store(&st)
		lz.mu.Unlock()
		lz.log.Info("store available; migrations applied")
		return
	}
}

func (lz *Lazy) get() (Store, error) {
	if p := lz.st.Load(); p != nil {
		return *p, nil
	}
	return nil, ErrUnavailable
}

// Close stops the background open and closes the store.
func (lz *Lazy) Close() error {
	lz.mu.Lock()
	lz.closed = true
	lz.mu.Unlock()
	if lz.cancel != nil {
		lz.cancel()
	}
	<-lz.done
	if st, err := lz.get(); err == nil {
		return st.Close()
	}
	return nil
}

func (lz *Lazy) GetUser(ctx context.Context, id string) (User, error) {
	st, err := lz.get()
	if err != nil {
		return User{}, err
	}
	return st.GetUser(ctx, id)
}

func (lz *Lazy) StartEnrollment(ctx context.Context, u User) error {
	st, err := lz.get()
	if err != nil {
		return err
	}
	return st.StartEnrollment(ctx, u)
}

func (lz *Lazy) ConfirmEnrollment(ctx context.Context, id, ciphertext string, step int64, recoveryHashes [][]byte, now time.Time) error {
	st, err := lz.get()
	if err != nil {
		return err
	}
	return st.ConfirmEnrollment(ctx, id, ciphertext, step, recoveryHashes, now)
}

func (lz *Lazy) DeleteUser(ctx context.Context, id string) (int, error) {
	st, err := lz.get()
	if err != nil {
		return 0, err
	}
	return st.DeleteUser(ctx, id)
}

func (lz *Lazy) SettleAttempt(ctx context.Context, id string, m Match, now time.Time, l Limits) (Settled, error) {
	st, err := lz.get()
	if err != nil {
		return Settled{}, err
	}
	return st.SettleAttempt(ctx, id, m, now, l)
}

func (lz *Lazy) Unlock(ctx context.Context, id string) error {
	st, err := lz.get()
	if err != nil {
		return err
	}
	return st.Unlock(ctx, id)
}

func (lz *Lazy) RecoveryCodes(ctx context.Context, id string) ([]RecoveryCode, error) {
	st, err := lz.get()
	if err != nil {
		return nil, err
	}
	return st.RecoveryCodes(ctx, id)
}

func (lz *Lazy) ReplaceRecoveryCodes(ctx context.Context, id string, hashes [][]byte, now time.Time) (int, error) {
	st, err := lz.get()
	if err != nil {
		return 0, err
	}
	return st.ReplaceRecoveryCodes(ctx, id, hashes, now)
}

func (lz *Lazy) CreateDevice(ctx context.Context, d TrustedDevice) error {
	st, err := lz.get()
	if err != nil {
		return err
	}
	return st.CreateDevice(ctx, d)
}

func (lz *Lazy) RotateDevice(ctx context.Context, user string, tokenHash, newHash []byte, now time.Time) (TrustedDevice, error) {
	st, err := lz.get()
	if err != nil {
		return TrustedDevice{}, err
	}
	return st.RotateDevice(ctx, user, tokenHash, newHash, now)
}

func (lz *Lazy) Devices(ctx context.Context, user string, now time.Time) ([]TrustedDevice, error) {
	st, err := lz.get()
	if err != nil {
		return nil, err
	}
	return st.Devices(ctx, user, now)
}

func (lz *Lazy) DeleteDevice(ctx context.Context, user, id string) (TrustedDevice, error) {
	st, err := lz.get()
	if err != nil {
		return TrustedDevice{}, err
	}
	return st.DeleteDevice(ctx, user, id)
}

func (lz *Lazy) DeleteDevices(ctx context.Context, user, except string, now time.Time) (int, error) {
	st, err := lz.get()
	if err != nil {
		return 0, err
	}
	return st.DeleteDevices(ctx, user, except, now)
}

func (lz *Lazy) DeleteExpiredDevices(ctx context.Context, now time.Time) (int, error) {
	st, err := lz.get()
	if err != nil {
		return 0, err
	}
	return st.DeleteExpiredDevices(ctx, now)
}

func (lz *Lazy) CreateChallenge(ctx context.Context, c Challenge) error {
	st, err := lz.get()
	if err != nil {
		return err
	}
	return st.CreateChallenge(ctx, c)
}

func (lz *Lazy) GetChallenge(ctx context.Context, idHash []byte, now time.Time) (Challenge, error) {
	st, err := lz.get()
	if err != nil {
		return Challenge{}, err
	}
	return st.GetChallenge(ctx, idHash, now)
}

func (lz *Lazy) FailChallenge(ctx context.Context, idHash []byte, maxAttempts int) (int, error) {
	st, err := lz.get()
	if err != nil {
		return 0, err
	}
	return st.FailChallenge(ctx, idHash, maxAttempts)
}

func (lz *Lazy) SatisfyChallenge(ctx context.Context, idHash []byte, now time.Time) error {
	st, err := lz.get()
	if err != nil {
		return err
	}
	return st.SatisfyChallenge(ctx, idHash, now)
}

func (lz *Lazy) SpendChallenge(ctx context.Context, idHash []byte, now time.Time) (Challenge, error) {
	st, err := lz.get()
	if err != nil {
		return Challenge{}, err
	}
	return st.SpendChallenge(ctx, idHash, now)
}

func (lz *Lazy) TakeRevocations(ctx context.Context, user string, now time.Time) ([]Challenge, error) {
	st, err := lz.get()
	if err != nil {
		return nil, err
	}
	return st.TakeRevocations(ctx, user, now)
}

func (lz *Lazy) DeleteExpiredChallenges(ctx context.Context, now time.Time) (int, error) {
	st, err := lz.get()
	if err != nil {
		return 0, err
	}
	return st.DeleteExpiredChallenges(ctx, now)
}

func (lz *Lazy) Setting(ctx context.Context, key string) ([]byte, error) {
	st, err := lz.get()
	if err != nil {
		return nil, err
	}
	return st.Setting(ctx, key)
}

func (lz *Lazy) PutSettingIfAbsent(ctx context.Context, key string, value []byte) ([]byte, error) {
	st, err := lz.get()
	if err != nil {
		return nil, err
	}
	return st.PutSettingIfAbsent(ctx, key, value)
}

func (lz *Lazy) SwapSetting(ctx context.Context, key string, old, replacement []byte) (bool, error) {
	st, err := lz.get()
	if err != nil {
		return false, err
	}
	return st.SwapSetting(ctx, key, old, replacement)
}

func (lz *Lazy) AcquireJob(ctx context.Context, name, owner string, now, leaseUntil time.Time) (Job, bool, error) {
	st, err := lz.get()
	if err != nil {
		return Job{}, false, err
	}
	return st.AcquireJob(ctx, name, owner, now, leaseUntil)
}

func (lz *Lazy) UpdateJob(ctx context.Context, name, owner string, state []byte, leaseUntil time.Time) error {
	st, err := lz.get()
	if err != nil {
		return err
	}
	return st.UpdateJob(ctx, name, owner, state, leaseUntil)
}

func (lz *Lazy) GetJob(ctx context.Context, name string) (Job, error) {
	st, err := lz.get()
	if err != nil {
		return Job{}, err
	}
	return st.GetJob(ctx, name)
}

func (lz *Lazy) SecretsPage(ctx context.Context, after string, target KeyRef, limit int) ([]SecretRef, error) {
	st, err := lz.get()
	if err != nil {
		return nil, err
	}
	return st.SecretsPage(ctx, after, target, limit)
}

func (lz *Lazy) SwapSecrets(ctx context.Context, swaps []Swap) (int, error) {
	st, err := lz.get()
	if err != nil {
		return 0, err
	}
	return st.SwapSecrets(ctx, swaps)
}

func (lz *Lazy) CountByKey(ctx context.Context) (map[KeyRef]int, error) {
	st, err := lz.get()
	if err != nil {
		return nil, err
	}
	return st.CountByKey(ctx)
}

func (lz *Lazy) CountBareBindings(ctx context.Context) (map[KeyRef]int, error) {
	st, err := lz.get()
	if err != nil {
		return nil, err
	}
	return st.CountBareBindings(ctx)
}

func (lz *Lazy) CountByState(ctx context.Context) (map[State]int, error) {
	st, err := lz.get()
	if err != nil {
		return nil, err
	}
	return st.CountByState(ctx)
}

func (lz *Lazy) Ping(ctx context.Context) error {
	st, err := lz.get()
	if err != nil {
		return err
	}
	return st.Ping(ctx)
}

var _ Store = (*Lazy)(nil)
