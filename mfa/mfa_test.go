package mfa_test

import (
	"context"
	"encoding/base32"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/totpgate/totpgate/keyring"
	"github.com/totpgate/totpgate/mfa"
	"github.com/totpgate/totpgate/mfa/mfatest"
	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/sqlite"
	"github.com/totpgate/totpgate/totp"
)

type env struct {
	svc   *mfa.Service
	st    *sqlite.Store
	keys  *keyring.Local
	clock *mfatest.Clock
	dir   string
}

// newEnv wires the service to a real SQLite file and a real local keyring.
func newEnv(t testing.TB) *env {
	t.Helper()
	c := mfatest.NewClock(time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC))
	m := mfatest.New(t, c.Now)
	return &env{svc: m.Service, st: m.Store, keys: m.Keys, clock: c, dir: m.Dir}
}

// enroll runs start + confirm and returns the secret and recovery codes.
func (e *env) enroll(t *testing.T, user string) ([]byte, []string) {
	t.Helper()
	ctx := context.Background()
	en, err := e.svc.StartEnrollment(ctx, user, user+"@example.com")
	if err != nil {
		t.Fatal(err)
	}
	secret, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(en.Secret)
	if err != nil {
		t.Fatal(err)
	}
	codes, err := e.svc.ConfirmEnrollment(ctx, user, e.code(secret, 0))
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Add(30 * time.Second) // the confirming code's step is spent
	return secret, codes
}

func (e *env) code(secret []byte, stepOffset int64) string {
	p := totp.DefaultParams()
	return totp.Code(secret, p.Step(e.clock.Now())+stepOffset, p)
}

func TestJourney(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()

	if u, err := e.svc.Status(ctx, "alice"); err != nil || u.State != store.StateNone {
		t.Fatalf("status before: %+v %v", u, err)
	}
	secret, codes := e.enroll(t, "alice")
	if len(codes) != 10 {
		t.Fatalf("%d recovery codes, want 10", len(codes))
	}
	u, _ := e.svc.Status(ctx, "alice")
	if u.State != store.StateActive || u.RecoveryRemaining != 10 {
		t.Fatalf("status after confirm: %+v", u)
	}
	if _, err := e.svc.StartEnrollment(ctx, "alice", "alice"); !errors.Is(err, mfa.ErrAlreadyEnrolled) {
		t.Fatalf("re-enroll while active: %v", err)
	}

	code := e.code(secret, 0)
	if m, err := e.svc.Verify(ctx, "alice", code); err != nil || m != mfa.MethodTOTP {
		t.Fatalf("verify: %q %v", m, err)
	}
	var ce *mfa.CodeError
	if _, err := e.svc.Verify(ctx, "alice", code); !errors.As(err, &ce) || !ce.Replay {
		t.Fatalf("replay of the same code: %v, want a replay refusal", err)
	}
	if m, err := e.svc.Verify(ctx, "alice", codes[0]); err != nil || m != mfa.MethodRecovery {
		t.Fatalf("recovery code: %q %v", m, err)
	}
	if _, err := e.svc.Verify(ctx, "alice", codes[0]); !errors.Is(err, mfa.ErrInvalidCode) {
		t.Fatalf("recovery code twice: %v", err)
	}
	if _, _, err := e.svc.RegenerateRecoveryCodes(ctx, "alice", codes[1]); !errors.Is(err, mfa.ErrInvalidCode) {
		t.Fatalf("regenerate with a recovery code: %v, want refusal", err)
	}
	e.clock.Add(30 * time.Second)
	fresh, _, err := e.svc.RegenerateRecoveryCodes(ctx, "alice", e.code(secret, 0))
	if err != nil || len(fresh) != 10 {
		t.Fatalf("regenerate: %d %v", len(fresh), err)
	}
	if _, err := e.svc.Verify(ctx, "alice", codes[2]); !errors.Is(err, mfa.ErrInvalidCode) {
		t.Fatalf("old recovery code after regenerate: %v", err)
	}
	if _, err := e.svc.Disable(ctx, "alice", fresh[0]); err != nil {
		t.Fatalf("disable with recovery code: %v", err)
	}
	if u, _ := e.svc.Status(ctx, "alice"); u.State != store.StateNone {
		t.Fatalf("after disable: %+v", u)
	}
}

func TestBruteForceLocksEvenACorrectCode(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	secret, _ := e.enroll(t, "bob")
	for i := range 5 {
		_, err := e.svc.Verify(ctx, "bob", "000000")
		if i < 4 && !errors.Is(err, mfa.ErrInvalidCode) {
			t.Fatalf("wrong code %d: %v", i, err)
		}
		if i == 4 && !errors.Is(err, mfa.ErrLocked) {
			t.Fatalf("fifth wrong code: %v, want locked", err)
		}
	}
	if _, err := e.svc.Verify(ctx, "bob", e.code(secret, 0)); !errors.Is(err, mfa.ErrLocked) {
		t.Fatalf("correct code while locked: %v, want locked", err)
	}
	e.clock.Add(16 * time.Minute)
	if _, err := e.svc.Verify(ctx, "bob", e.code(secret, 0)); err != nil {
		t.Fatalf("after the lock: %v", err)
	}
}

func TestConcurrentSameCodePassesOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	secret, _ := e.enroll(t, "carol")
	code := e.code(secret, 0)
	var passed atomic.Int32
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if _, err := e.svc.Verify(context.Background(), "carol", code); err == nil {
				passed.Add(1)
			} else if errors.Is(err, mfa.ErrUnavailable) {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := passed.Load(); n != 1 {
		t.Fatalf("%d of 50 concurrent logins passed with one code, want exactly 1", n)
	}
}

func TestCrossUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	secretA, codesA := e.enroll(t, "a")
	e.enroll(t, "b")
	if _, err := e.svc.Verify(ctx, "b", e.code(secretA, 0)); !errors.Is(err, mfa.ErrInvalidCode) {
		t.Fatalf("A's TOTP code for B: %v", err)
	}
	if _, err := e.svc.Verify(ctx, "b", codesA[0]); !errors.Is(err, mfa.ErrInvalidCode) {
		t.Fatalf("A's recovery code for B: %v", err)
	}
	// A's ciphertext copied into B's row does not decrypt for B.
	ua, _ := e.st.GetUser(ctx, "a")
	if _, err := e.keys.Decrypt(ctx, store.BindingUser.BindTo("b"), ua.Ciphertext); !errors.Is(err, keyring.ErrDecrypt) {
		t.Fatalf("A's ciphertext under B: %v, want ErrDecrypt", err)
	}
}

func TestKeyringFailureFailsClosed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	secret, _ := e.enroll(t, "dave")
	u, _ := e.st.GetUser(ctx, "dave")
	if _, err := e.st.SwapSecrets(ctx, []store.Swap{{UserID: "dave", Old: u.Ciphertext, New: "local:v1:AAAA", Version: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Verify(ctx, "dave", e.code(secret, 0)); !errors.Is(err, mfa.ErrUnavailable) {
		t.Fatalf("verify with an undecryptable secret: %v, want ErrUnavailable", err)
	}
}

func TestPendingEnrollmentExpires(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	en, err := e.svc.StartEnrollment(ctx, "erin", "erin")
	if err != nil {
		t.Fatal(err)
	}
	secret, _ := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(en.Secret)
	e.clock.Add(16 * time.Minute)
	if _, err := e.svc.ConfirmEnrollment(ctx, "erin", e.code(secret, 0)); !errors.Is(err, mfa.ErrNotPending) {
		t.Fatalf("confirm after expiry: %v", err)
	}
}

// The recovery-code key is created once and shared: a second service on the
// same store and keyring accepts codes issued by the first.
func TestRecoveryKeyIsShared(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, codes := e.enroll(t, "frank")
	other, err := mfa.New(context.Background(), e.st, e.keys, mfa.DefaultConfig(), e.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Verify(context.Background(), "frank", codes[3]); err != nil {
		t.Fatalf("second service: %v", err)
	}
}

// failingStore is the real SQLite store with chosen methods broken, to show
// that a store fault in the middle of a check fails closed.
type failingStore struct {
	*sqlite.Store
	failSettle, failCodes, failRotate bool
}

func (f *failingStore) RotateDevice(ctx context.Context, user string, tokenHash, newHash []byte, now time.Time) (store.TrustedDevice, error) {
	if f.failRotate {
		return store.TrustedDevice{}, errDiskGone
	}
	return f.Store.RotateDevice(ctx, user, tokenHash, newHash, now)
}

var errDiskGone = errors.New("disk I/O error")

func (f *failingStore) SettleAttempt(ctx context.Context, id string, m store.Match, now time.Time, l store.Limits) (store.Settled, error) {
	if f.failSettle {
		return store.Settled{}, errDiskGone
	}
	return f.Store.SettleAttempt(ctx, id, m, now, l)
}

func (f *failingStore) RecoveryCodes(ctx context.Context, id string) ([]store.RecoveryCode, error) {
	if f.failCodes {
		return nil, errDiskGone
	}
	return f.Store.RecoveryCodes(ctx, id)
}

func TestStoreFailureMidCheckFailsClosed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	secret, codes := e.enroll(t, "ivy")
	for _, tc := range []struct {
		name string
		fs   *failingStore
		code string
	}{
		{"settling the attempt fails", &failingStore{Store: e.st, failSettle: true}, e.code(secret, 0)},
		{"settling a recovery code fails", &failingStore{Store: e.st, failSettle: true}, codes[0]},
		{"reading the recovery codes fails", &failingStore{Store: e.st, failCodes: true}, codes[0]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc, err := mfa.New(context.Background(), tc.fs, e.keys, mfa.DefaultConfig(), e.clock.Now)
			if err != nil {
				t.Fatal(err)
			}
			_, err = svc.Verify(context.Background(), "ivy", tc.code)
			if !errors.Is(err, mfa.ErrUnavailable) {
				t.Fatalf("Verify with a failing store = %v, want ErrUnavailable (refused)", err)
			}
		})
	}
	// The store recovered: the same codes still work, nothing was half-written.
	if _, err := e.svc.Verify(context.Background(), "ivy", e.code(secret, 0)); err != nil {
		t.Fatalf("after the fault: %v", err)
	}
	if m, err := e.svc.Verify(context.Background(), "ivy", codes[0]); err != nil || m != mfa.MethodRecovery {
		t.Fatalf("recovery code after the fault = %q, %v", m, err)
	}
	if u, err := e.svc.Status(context.Background(), "ivy"); err != nil || u.Failures != 0 {
		t.Fatalf("after the faults: Failures %d, %v; want 0 (no attempt was charged)", u.Failures, err)
	}
}

// Whatever a client sends as a challenge id or code, completing a challenge
// never panics and never releases anything.
func FuzzCompleteChallenge(f *testing.F) {
	e := newEnv(f)
	f.Add("short", "123456")
	f.Add(strings.Repeat("A", 43), "123456")
	f.Add(strings.Repeat("-", 43), "k7fq2-9xm4t-3hwrd-p8vbn")
	f.Add(strings.Repeat("\x00", 43), "")
	cc := mfa.ChallengeConfig{TTL: time.Minute, MaxAttempts: 5}
	f.Fuzz(func(t *testing.T, token, code string) {
		answer, _, _, err := e.svc.CompleteChallenge(context.Background(), token, code, cc)
		if err == nil || answer.Status != 0 {
			t.Fatalf("a made-up challenge released something: %+v %v", answer, err)
		}
	})
}

// TestSecretsAreNamespaced: a user's secret is bound to "user:" + id, so
// no user id (not even the recovery key's binding) shares a derivation
// context with the sidecar's own keys; rows written before namespaces
// (bound to the bare id) keep working until a rewrap moves them.
func TestSecretsAreNamespaced(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	id := mfa.PepperBinding // the id namespaces make harmless
	secret, codes := e.enroll(t, id)
	u, err := e.st.GetUser(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if u.Binding != store.BindingUser {
		t.Fatalf("new secret stored under binding %v", u.Binding)
	}
	if _, err := e.keys.Decrypt(ctx, mfa.PepperBinding, u.Ciphertext); !errors.Is(err, keyring.ErrDecrypt) {
		t.Fatalf("the user's secret opens under the recovery key's binding: %v", err)
	}
	pepper, err := e.st.Setting(ctx, mfa.PepperSetting)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.keys.Decrypt(ctx, u.BindTo(), string(pepper)); !errors.Is(err, keyring.ErrDecrypt) {
		t.Fatalf("the recovery key opens under the user's binding: %v", err)
	}
	if _, err := e.svc.Verify(ctx, id, e.code(secret, 0)); err != nil {
		t.Fatalf("TOTP of the user named like the recovery key: %v", err)
	}
	if _, err := e.svc.Verify(ctx, id, codes[0]); err != nil {
		t.Fatalf("recovery code of the user named like the recovery key: %v", err)
	}

	// A row as an earlier version wrote it: bound to the bare id.
	old := []byte("0123456789abcdefghij")
	ct, err := e.keys.Encrypt(ctx, "legacy", old)
	if err != nil {
		t.Fatal(err)
	}
	_, v, _ := keyring.ParseVersion(ct)
	p := totp.DefaultParams()
	if err := e.st.StartEnrollment(ctx, store.User{ID: "legacy", State: store.StatePending, Ciphertext: ct, KeyVersion: v,
		Binding: store.BindingBare, Params: store.TOTPParams{Algorithm: p.Algorithm, Digits: p.Digits, Period: p.Period, Skew: p.Skew},
		PendingExpiresAt: e.clock.Now().Add(time.Hour), UpdatedAt: e.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := e.st.ConfirmEnrollment(ctx, "legacy", ct, 0, nil, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Verify(ctx, "legacy", e.code(old, 0)); err != nil {
		t.Fatalf("TOTP of a row bound to the bare id: %v", err)
	}
}

// ImportAll, as the command line and the admin API use it: a user who
// already has another second factor refuses the whole batch before
// anything is written; a dry run writes nothing; a rerun is unchanged;
// ExportLines writes back what was imported.
func TestImportAllAndExportLines(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	enrolled, _ := e.enroll(t, "carol")
	s1, s2 := []byte("q7Zp2Lx9Kd4Vr8Ws1Ny6"), []byte("Hh3kT9wQz2Lm5Rx8Vb1N")
	file := "imp1," + totp.EncodeSecret(s1) + ",SHA256,8,60\n" + "imp2," + totp.EncodeSecret(s2) + "\n"
	parse := func(f string) []totp.Imported {
		t.Helper()
		recs, refused, _ := e.svc.ParseImport(strings.NewReader(f), "")
		if len(refused) > 0 {
			t.Fatalf("refused %v", refused)
		}
		return recs
	}
	var got []mfa.ImportResult
	collect := func(r mfa.ImportResult) error { got = append(got, r); return nil }

	err := e.svc.ImportAll(ctx, parse(file+"carol,"+totp.EncodeSecret(s2)+"\n"), true, false, collect)
	var refused *mfa.ImportRefusedError
	if !errors.As(err, &refused) || !errors.Is(err, mfa.ErrImportConflict) || len(refused.Lines) != 1 ||
		refused.Lines[0].Line != 3 || refused.Lines[0].Code != totp.ImportConflict || len(got) != 0 {
		t.Fatalf("conflict: %v %+v %+v", err, refused, got)
	}
	if err := e.svc.ImportAll(ctx, parse(file), true, true, collect); err != nil || len(got) != 2 || got[0].Outcome != mfa.Imported || got[0].RecoveryCodes != nil {
		t.Fatalf("dry run: %v %+v", err, got)
	}
	for _, u := range []string{"imp1", "imp2"} {
		if st, _ := e.svc.Status(ctx, u); st.State != store.StateNone {
			t.Fatalf("the dry run wrote %s: %+v", u, st)
		}
	}
	got = nil
	if err := e.svc.ImportAll(ctx, parse(file), true, false, collect); err != nil || len(got) != 2 || got[1].Outcome != mfa.Imported || len(got[1].RecoveryCodes) != 10 {
		t.Fatalf("import: %v %+v", err, got)
	}
	got = nil
	if err := e.svc.ImportAll(ctx, parse(file), true, false, collect); err != nil || got[0].Outcome != mfa.ImportUnchanged || got[0].RecoveryCodes != nil {
		t.Fatalf("rerun: %v %+v", err, got)
	}
	p := totp.Params{Algorithm: totp.SHA256, Digits: 8, Period: 60, Skew: 1}
	if _, err := e.svc.Verify(ctx, "imp1", totp.Code(s1, p.Step(e.clock.Now()), p)); err != nil {
		t.Fatalf("imported SHA256/8/60 code: %v", err)
	}

	var lines []string
	n, err := e.svc.ExportLines(ctx, totp.ExportCSV, func(l string) error { lines = append(lines, l); return nil })
	if err != nil || n != 3 {
		t.Fatalf("export: %d %v", n, err)
	}
	back, bad, _ := totp.ParseImport(strings.NewReader(strings.Join(lines, "\n")), totp.DefaultParams(), "*")
	if len(bad) > 0 || len(back) != 3 || back[0].UserID != "carol" || string(back[0].Secret) != string(enrolled) ||
		back[1].UserID != "imp1" || string(back[1].Secret) != string(s1) || back[1].Params.Period != 60 {
		t.Fatalf("export reads back as %+v %v", back, bad)
	}
}

// countingStore counts the user rows read.
type countingStore struct {
	store.Store
	reads atomic.Int64
}

func (c *countingStore) GetUser(ctx context.Context, id string) (store.User, error) {
	c.reads.Add(1)
	return c.Store.GetUser(ctx, id)
}

// Within WithUserMemo a user's row is read once for the questions of one
// login (enrolled, then the code); without it every call reads, so the API
// never answers from a stale row.
func TestUserMemoReadsTheRowOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	secret, _ := e.enroll(t, "alice")
	cs := &countingStore{Store: e.st}
	svc, err := mfa.New(context.Background(), cs, e.keys, mfa.DefaultConfig(), e.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	ctx := mfa.WithUserMemo(context.Background())
	before := cs.reads.Load()
	if on, err := svc.Enrolled(ctx, "alice"); err != nil || !on {
		t.Fatalf("Enrolled: %v %v", on, err)
	}
	if _, err := svc.Verify(ctx, "alice", e.code(secret, 0)); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if n := cs.reads.Load() - before; n != 1 {
		t.Errorf("one login read the row %d times, want 1", n)
	}
	before = cs.reads.Load()
	svc.Enrolled(context.Background(), "alice")
	svc.Enrolled(context.Background(), "alice")
	if n := cs.reads.Load() - before; n != 2 {
		t.Errorf("without the memo two questions read the row %d times, want 2", n)
	}
}

// markedKeys is a real keyring that records whether foreground work was
// marked while it decrypted.
type markedKeys struct {
	mfa.Keyring
	fg             *countingForeground
	decryptsMarked atomic.Int64
}

func (k *markedKeys) Decrypt(ctx context.Context, bindTo, ciphertext string) ([]byte, error) {
	if k.fg.active.Load() > 0 {
		k.decryptsMarked.Add(1)
	}
	return k.Keyring.Decrypt(ctx, bindTo, ciphertext)
}

// markedStore is a real store that records whether foreground work was
// marked while it settled an attempt.
type markedStore struct {
	store.Store
	fg             *countingForeground
	settlesMarked  atomic.Int64
	settlesOutside atomic.Int64
}

func (s *markedStore) SettleAttempt(ctx context.Context, user string, m store.Match, now time.Time, l store.Limits) (store.Settled, error) {
	if s.fg.active.Load() > 0 {
		s.settlesMarked.Add(1)
	} else {
		s.settlesOutside.Add(1)
	}
	return s.Store.SettleAttempt(ctx, user, m, now, l)
}

type countingForeground struct{ active, begun atomic.Int64 }

func (f *countingForeground) Begin() func() {
	f.begun.Add(1)
	f.active.Add(1)
	return func() { f.active.Add(-1) }
}

// TestCodeChecksAreForeground: a rewrap job in the process steps aside
// for every code check, so each one is marked, from before its decrypt to
// after its commit, and the mark ends with it.
func TestCodeChecksAreForeground(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := mfatest.NewClock(time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC))
	fg := &countingForeground{}
	base := mfatest.New(t, c.Now)
	keys := &markedKeys{Keyring: base.Keys, fg: fg}
	st := &markedStore{Store: base.Store, fg: fg}
	cfg := mfa.DefaultConfig()
	cfg.Foreground = fg
	svc, err := mfa.New(ctx, st, keys, cfg, c.Now)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{svc: svc, st: base.Store, keys: base.Keys, clock: c, dir: base.Dir}
	secret, codes := e.enroll(t, "alice")
	before := fg.begun.Load()
	if _, err := svc.Verify(ctx, "alice", e.code(secret, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Verify(ctx, "alice", "000000"); !errors.Is(err, mfa.ErrInvalidCode) {
		t.Fatalf("wrong code: %v", err)
	}
	if _, err := svc.Verify(ctx, "alice", codes[0]); err != nil {
		t.Fatal(err)
	}
	if got := fg.begun.Load() - before; got != 3 {
		t.Errorf("%d code checks marked as foreground, want 3", got)
	}
	if fg.active.Load() != 0 {
		t.Errorf("%d marks still open after the checks", fg.active.Load())
	}
	if keys.decryptsMarked.Load() < 2 {
		t.Errorf("%d decrypts inside a mark, want both TOTP checks'", keys.decryptsMarked.Load())
	}
	if st.settlesMarked.Load() < 3 || st.settlesOutside.Load() != 0 {
		t.Errorf("commits inside a mark: %d, outside: %d; want every check's inside", st.settlesMarked.Load(), st.settlesOutside.Load())
	}
}
