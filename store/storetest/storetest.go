// Package storetest is the conformance suite every store.Store
// implementation must pass, unchanged:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, storetest.Harness{
//			Open:   func(t *testing.T) store.Store { ... },
//			Reopen: func(t *testing.T, s store.Store) store.Store { ... },
//		})
//	}
//
// Besides the doc comments of store.Store, the suite pins these details,
// so that implementations agree:
//
//   - Deadlines are exclusive: a challenge or pending enrollment whose
//     ExpiresAt/PendingExpiresAt equals now has expired, and a user whose
//     LockedUntil equals now is no longer locked.
//   - Times round-trip at millisecond precision (the suite uses whole
//     seconds); the zero time round-trips as the zero time.
//   - SecretsPage orders user ids by their bytes, as Go compares strings
//     ("B" < "a"); a PostgreSQL implementation needs COLLATE "C".
//   - StartEnrollment replacing a pending row also lifts a lock: failures
//     and lock were counted against a secret that is gone.
//   - ConfirmEnrollment clears the failure count like an accepted
//     SettleAttempt does.
//   - SettleAttempt answers ErrNotFound for an unknown user and counts an
//     attempt of a user who is not active as a failure (a step is then
//     reported as a replay); ReplaceRecoveryCodes and ConfirmEnrollment
//     answer ErrConflict for an unknown user; FailChallenge answers 0 (no
//     error) for an unknown challenge.
//   - What SettleAttempt answered survives a crash right after the answer
//     (Durability/Crash, with Harness.Crash).
//   - A call whose context is cancelled returns an error that is neither
//     ErrNotFound nor ErrConflict (callers fail closed on it).
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/totpgate/totpgate/store"
)

// Harness is the implementation under test.
type Harness struct {
	// Open returns a fresh, empty store and registers its Close with
	// t.Cleanup. Required. It is called once per subtest, from parallel
	// subtests.
	Open func(t *testing.T) store.Store
	// Reopen closes s, opens the same database again and returns the new
	// store, registering its Close with t.Cleanup. Optional: without it the
	// durability subtest is skipped. The cleanup Open registered for s runs
	// too, so Close must tolerate being called on a closed store.
	Reopen func(t *testing.T, s store.Store) store.Store
	// Crash ends s as a crash would, skipping every graceful step of its
	// Close (SQLite: the files exactly as a killed process leaves them, no
	// checkpoint; a server: its sessions cut, or the server itself killed),
	// opens the same database again and returns the new store, registering
	// its Close with t.Cleanup. Optional: without it the crash subtest is
	// skipped. The subtest calls it with no call of s in flight.
	Crash func(t *testing.T, s store.Store) store.Store
}

// Concurrency is how many goroutines race in the concurrency subtests.
const Concurrency = 50

// limits is the brute-force policy the lockout subtests use.
var limits = store.Limits{MaxFailures: 5, Window: 5 * time.Minute, LockFor: 15 * time.Minute}

// t0 is the suite's "now": a fixed time in whole seconds, so every
// implementation round-trips it exactly. Stores take now as a parameter,
// and the suite moves it forward by hand.
var t0 = time.Date(2031, time.March, 4, 5, 6, 7, 0, time.UTC)

var params = store.TOTPParams{Algorithm: "SHA256", Digits: 8, Period: 30, Skew: 1}

// Run runs the conformance suite against h.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.Open == nil {
		t.Fatal("storetest: Harness.Open is required")
	}
	tests := []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"Ping", testPing},
		{"CanceledContext", testCanceledContext},

		{"GetUser/NotFound", testGetUserNotFound},
		{"StartEnrollment/CreatesPending", testStartCreatesPending},
		{"StartEnrollment/ReplacesPending", testStartReplacesPending},
		{"StartEnrollment/ConflictWhenActive", testStartConflictWhenActive},
		{"ConfirmEnrollment/Activates", testConfirmActivates},
		{"ConfirmEnrollment/Conflicts", testConfirmConflicts},
		{"ConfirmEnrollment/NoRecoveryCodes", testConfirmNoCodes},
		{"ConfirmEnrollment/ClearsFailures", testConfirmClearsFailures},
		{"ConfirmEnrollment/Concurrent", testConfirmConcurrent},
		{"DeleteUser", testDeleteUser},
		{"IndependentUsersConcurrent", testIndependentUsersConcurrent},

		{"Step/OnlyNewer", testStepOnlyNewer},
		{"Step/OnlyActive", testStepOnlyActive},
		{"Step/ConcurrentSameStep", testStepConcurrentSame},
		{"Step/ConcurrentSteps", testStepConcurrentSteps},
		{"Step/ClearsFailures", testStepClearsFailures},

		{"Attempts/UnknownUser", testAttemptsUnknownUser},
		{"Attempts/Lockout", testAttemptsLockout},
		{"Attempts/WindowForgets", testAttemptsWindowForgets},
		{"Attempts/WindowCountsRecent", testAttemptsWindowCountsRecent},
		{"Attempts/LimitLowered", testAttemptsLimitLowered},
		{"Attempts/Concurrent", testAttemptsConcurrent},
		{"Attempts/ConcurrentUsers", testAttemptsConcurrentUsers},
		{"Attempts/Unlock", testUnlock},
		{"Attempts/PerUser", testAttemptsPerUser},

		{"Recovery/ListsUnused", testRecoveryListsUnused},
		{"Recovery/SpendOnce", testRecoverySpendOnce},
		{"Recovery/SpendConcurrent", testRecoverySpendConcurrent},
		{"Recovery/CrossUser", testRecoveryCrossUser},
		{"Recovery/SpendClearsFailures", testRecoverySpendClearsFailures},
		{"Recovery/Replace", testRecoveryReplace},
		{"Recovery/ReplaceConflict", testRecoveryReplaceConflict},
		{"Recovery/ReplaceConcurrent", testRecoveryReplaceConcurrent},

		{"Challenge/CreateGet", testChallengeCreateGet},
		{"Challenge/Expired", testChallengeExpired},
		{"Challenge/Duplicate", testChallengeDuplicate},
		{"Challenge/Fail", testChallengeFail},
		{"Challenge/FailConcurrent", testChallengeFailConcurrent},
		{"Challenge/Satisfy", testChallengeSatisfy},
		{"Challenge/Spend", testChallengeSpend},
		{"Challenge/SpendConcurrent", testChallengeSpendConcurrent},
		{"Challenge/SpendExpired", testChallengeSpendExpired},
		{"Challenge/DeleteExpired", testChallengeDeleteExpired},
		{"Challenge/TakeRevocations", testChallengeTakeRevocations},

		{"Settings/NotFound", testSettingNotFound},
		{"Settings/FirstWriterWins", testSettingFirstWriterWins},
		{"Settings/Concurrent", testSettingConcurrent},

		{"Rewrap/SecretsPage", testSecretsPage},
		{"Rewrap/SwapSecrets", testSwapSecrets},
		{"Rewrap/SwapSecretsConcurrent", testSwapSecretsConcurrent},
		{"Rewrap/SwapSecretAfterReenroll", testSwapSecretAfterReenroll},
		{"Rewrap/CountByKey", testCountByKey},
		{"Rewrap/BareBindings", testBareBindings},
		{"Rewrap/SwapSetting", testSwapSetting},
		{"Jobs/Lease", testJobLease},
		{"Jobs/LeaseConcurrent", testJobLeaseConcurrent},
		{"CountByState", testCountByState},

		{"Durability/Reopen", testReopen},
		{"Durability/Crash", testCrash},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, h)
		})
	}
}

// ---- helpers ----

func ctxOf(t *testing.T) context.Context { return t.Context() }

func ct(id string, n int) string { return fmt.Sprintf("vault:v%d:%s-secret-%d", n, id, n) }

func hashes(prefix string, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, "%s-hash-%02d", prefix, i)
	}
	return out
}

func pendingUser(id string, version int, now time.Time) store.User {
	return store.User{
		ID:               id,
		State:            store.StatePending,
		Ciphertext:       ct(id, version),
		KeyVersion:       version,
		Binding:          store.BindingUser,
		Params:           params,
		PendingExpiresAt: now.Add(10 * time.Minute),
		UpdatedAt:        now,
	}
}

func mustStart(t *testing.T, s store.Store, id string, version int, now time.Time) store.User {
	t.Helper()
	u := pendingUser(id, version, now)
	if err := s.StartEnrollment(ctxOf(t), u); err != nil {
		t.Fatalf("StartEnrollment(%s): %v", id, err)
	}
	return u
}

// mustActive enrolls and confirms id at t0 with step 100 and codes.
func mustActive(t *testing.T, s store.Store, id string, codes [][]byte) store.User {
	t.Helper()
	u := mustStart(t, s, id, 1, t0)
	if err := s.ConfirmEnrollment(ctxOf(t), id, u.Ciphertext, 100, codes, t0); err != nil {
		t.Fatalf("ConfirmEnrollment(%s): %v", id, err)
	}
	return mustGet(t, s, id)
}

func mustGet(t *testing.T, s store.Store, id string) store.User {
	t.Helper()
	u, err := s.GetUser(ctxOf(t), id)
	if err != nil {
		t.Fatalf("GetUser(%s): %v", id, err)
	}
	return u
}

func mustCodes(t *testing.T, s store.Store, id string) []store.RecoveryCode {
	t.Helper()
	cs, err := s.RecoveryCodes(ctxOf(t), id)
	if err != nil {
		t.Fatalf("RecoveryCodes(%s): %v", id, err)
	}
	return cs
}

// loose is a policy no subtest reaches, for subtests about something
// other than the lockout: their refused codes count as failures too.
var loose = store.Limits{MaxFailures: 1000, Window: time.Hour, LockFor: time.Hour}

func mustSettle(t *testing.T, s store.Store, id string, m store.Match, now time.Time, l store.Limits) store.Settled {
	t.Helper()
	r, err := s.SettleAttempt(ctxOf(t), id, m, now, l)
	if err != nil {
		t.Fatalf("SettleAttempt(%s, %+v): %v", id, m, err)
	}
	return r
}

// mustFail settles an attempt whose code matched nothing, under limits.
func mustFail(t *testing.T, s store.Store, id string, now time.Time) store.Settled {
	t.Helper()
	return mustSettle(t, s, id, store.Match{}, now, limits)
}

// accept settles a code valid for step, under loose limits, and reports
// whether it was accepted.
func accept(ctx context.Context, s store.Store, id string, step int64, now time.Time) (bool, error) {
	r, err := s.SettleAttempt(ctx, id, store.Match{Step: step}, now, loose)
	return r.Accepted, err
}

// spend settles recovery code codeID, under loose limits, and reports
// whether it was spent.
func spend(ctx context.Context, s store.Store, id string, codeID int64, now time.Time) (bool, error) {
	r, err := s.SettleAttempt(ctx, id, store.Match{RecoveryCodeID: codeID}, now, loose)
	return r.Accepted, err
}

// sortedHashes returns the codes' hashes, sorted.
func sortedHashes(cs []store.RecoveryCode) [][]byte {
	out := make([][]byte, len(cs))
	for i, c := range cs {
		out[i] = c.Hash
	}
	slices.SortFunc(out, bytes.Compare)
	return out
}

func equalHashes(a, b [][]byte) bool {
	return slices.EqualFunc(a, b, bytes.Equal)
}

// race runs f(i) for i in [0, n) on n goroutines released together.
func race(n int, f func(i int)) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			f(i)
		})
	}
	close(start)
	wg.Wait()
}

// concurrently races f on Concurrency goroutines and fails the test on
// any error.
func concurrently(t *testing.T, f func(i int) error) {
	t.Helper()
	errs := make([]error, Concurrency)
	race(Concurrency, func(i int) { errs[i] = f(i) })
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

func sameTime(a, b time.Time) bool { return a.Equal(b) }

// ---- misc ----

func testPing(t *testing.T, h Harness) {
	s := h.Open(t)
	if err := s.Ping(ctxOf(t)); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func testCanceledContext(t *testing.T, h Harness) {
	s := h.Open(t)
	codes := hashes("a", 2)
	mustActive(t, s, "alice", codes)
	ctx, cancel := context.WithCancel(ctxOf(t))
	cancel()
	isSentinel := func(err error) bool {
		return errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict)
	}
	if _, err := s.GetUser(ctx, "alice"); err == nil || isSentinel(err) {
		t.Errorf("GetUser with cancelled ctx: err = %v, want a non-sentinel error", err)
	}
	if _, err := s.GetUser(ctx, "nobody"); err == nil || isSentinel(err) {
		t.Errorf("GetUser(unknown) with cancelled ctx: err = %v, want a non-sentinel error", err)
	}
	for _, m := range []store.Match{{Step: 200}, {}, {RecoveryCodeID: mustCodes(t, s, "alice")[0].ID}} {
		if r, err := s.SettleAttempt(ctx, "alice", m, t0, limits); err == nil || r.Allowed || r.Accepted || isSentinel(err) {
			t.Errorf("SettleAttempt(%+v) with cancelled ctx = %+v, %v; want not allowed and a non-sentinel error", m, r, err)
		}
	}
	if _, err := s.SpendChallenge(ctx, []byte("x"), t0); err == nil || isSentinel(err) {
		t.Errorf("SpendChallenge with cancelled ctx: err = %v, want a non-sentinel error", err)
	}
	if err := s.ConfirmEnrollment(ctx, "alice", "x", 1, nil, t0); err == nil || isSentinel(err) {
		t.Errorf("ConfirmEnrollment with cancelled ctx: err = %v, want a non-sentinel error", err)
	}
	// Nothing changed.
	if u := mustGet(t, s, "alice"); u.LastStep != 100 || u.Failures != 0 || u.RecoveryRemaining != 2 {
		t.Errorf("after cancelled calls: LastStep %d Failures %d RecoveryRemaining %d, want 100, 0 and 2", u.LastStep, u.Failures, u.RecoveryRemaining)
	}
}

// ---- users and enrollment ----

func testGetUserNotFound(t *testing.T, h Harness) {
	s := h.Open(t)
	if _, err := s.GetUser(ctxOf(t), "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetUser(unknown): err = %v, want ErrNotFound", err)
	}
}

func testStartCreatesPending(t *testing.T, h Harness) {
	s := h.Open(t)
	want := mustStart(t, s, "alice", 3, t0)
	got := mustGet(t, s, "alice")
	if got.ID != "alice" || got.State != store.StatePending || got.Ciphertext != want.Ciphertext ||
		got.KeyVersion != 3 || got.Params != params {
		t.Errorf("GetUser = %+v, want pending row %+v", got, want)
	}
	if !sameTime(got.PendingExpiresAt, want.PendingExpiresAt) {
		t.Errorf("PendingExpiresAt = %v, want %v", got.PendingExpiresAt, want.PendingExpiresAt)
	}
	if got.LastStep != 0 || got.Failures != 0 || got.RecoveryRemaining != 0 {
		t.Errorf("LastStep %d Failures %d RecoveryRemaining %d, want all 0", got.LastStep, got.Failures, got.RecoveryRemaining)
	}
	if !got.LockedUntil.IsZero() || !got.ConfirmedAt.IsZero() || !got.FailureWindowStart.IsZero() {
		t.Errorf("LockedUntil %v ConfirmedAt %v FailureWindowStart %v, want zero times", got.LockedUntil, got.ConfirmedAt, got.FailureWindowStart)
	}
	if got.UpdatedAt.IsZero() {
		t.Errorf("UpdatedAt is zero")
	}
	if cs := mustCodes(t, s, "alice"); len(cs) != 0 {
		t.Errorf("pending user has %d recovery codes", len(cs))
	}
}

func testStartReplacesPending(t *testing.T, h Harness) {
	s := h.Open(t)
	first := mustStart(t, s, "alice", 1, t0)
	// Five failures lock the pending user.
	for range limits.MaxFailures {
		if a := mustFail(t, s, "alice", t0); !a.Allowed {
			t.Fatalf("attempt refused early: %+v", a)
		}
	}
	if u := mustGet(t, s, "alice"); u.Failures != limits.MaxFailures || u.LockedUntil.IsZero() {
		t.Fatalf("before replacing: Failures %d LockedUntil %v, want %d and a lock", u.Failures, u.LockedUntil, limits.MaxFailures)
	}

	now := t0.Add(time.Minute)
	second := pendingUser("alice", 2, now)
	second.Ciphertext = "vault:v2:replacement"
	second.Params = store.TOTPParams{Algorithm: "SHA1", Digits: 6, Period: 30, Skew: 1}
	if err := s.StartEnrollment(ctxOf(t), second); err != nil {
		t.Fatalf("StartEnrollment(replace pending): %v", err)
	}
	got := mustGet(t, s, "alice")
	if got.State != store.StatePending || got.Ciphertext != second.Ciphertext || got.KeyVersion != 2 || got.Params != second.Params {
		t.Errorf("after replace: %+v, want the second pending enrollment", got)
	}
	if !sameTime(got.PendingExpiresAt, second.PendingExpiresAt) {
		t.Errorf("PendingExpiresAt = %v, want %v", got.PendingExpiresAt, second.PendingExpiresAt)
	}
	if got.Failures != 0 || !got.LockedUntil.IsZero() {
		t.Errorf("after replace: Failures %d LockedUntil %v, want 0 and no lock", got.Failures, got.LockedUntil)
	}
	if a := mustFail(t, s, "alice", now); !a.Allowed || a.Remaining != limits.MaxFailures-1 {
		t.Errorf("failed attempt after replace = %+v, want allowed with %d remaining", a, limits.MaxFailures-1)
	}
	// The replaced secret can no longer be confirmed; the new one can.
	if err := s.ConfirmEnrollment(ctxOf(t), "alice", first.Ciphertext, 10, nil, now); !errors.Is(err, store.ErrConflict) {
		t.Errorf("ConfirmEnrollment(replaced ciphertext): err = %v, want ErrConflict", err)
	}
	if err := s.ConfirmEnrollment(ctxOf(t), "alice", second.Ciphertext, 10, nil, now); err != nil {
		t.Errorf("ConfirmEnrollment(new ciphertext): %v", err)
	}
}

func testStartConflictWhenActive(t *testing.T, h Harness) {
	s := h.Open(t)
	before := mustActive(t, s, "alice", hashes("a", 3))
	u := pendingUser("alice", 2, t0.Add(time.Minute))
	u.Ciphertext = "vault:v2:attacker"
	if err := s.StartEnrollment(ctxOf(t), u); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("StartEnrollment(active user): err = %v, want ErrConflict", err)
	}
	after := mustGet(t, s, "alice")
	if after.State != store.StateActive || after.Ciphertext != before.Ciphertext || after.KeyVersion != before.KeyVersion ||
		after.LastStep != before.LastStep || after.RecoveryRemaining != 3 {
		t.Errorf("active row changed by a refused StartEnrollment: before %+v, after %+v", before, after)
	}
}

func testConfirmActivates(t *testing.T, h Harness) {
	s := h.Open(t)
	u := mustStart(t, s, "alice", 1, t0)
	codes := hashes("alice", 10)
	now := t0.Add(time.Minute)
	if err := s.ConfirmEnrollment(ctxOf(t), "alice", u.Ciphertext, 12345, codes, now); err != nil {
		t.Fatalf("ConfirmEnrollment: %v", err)
	}
	got := mustGet(t, s, "alice")
	if got.State != store.StateActive || got.LastStep != 12345 || got.Ciphertext != u.Ciphertext || got.Params != params {
		t.Errorf("after confirm: %+v, want active with LastStep 12345", got)
	}
	if !sameTime(got.ConfirmedAt, now) {
		t.Errorf("ConfirmedAt = %v, want %v", got.ConfirmedAt, now)
	}
	if got.RecoveryRemaining != len(codes) {
		t.Errorf("RecoveryRemaining = %d, want %d", got.RecoveryRemaining, len(codes))
	}
	cs := mustCodes(t, s, "alice")
	if !equalHashes(sortedHashes(cs), codes) {
		t.Errorf("RecoveryCodes hashes = %q, want %q", sortedHashes(cs), codes)
	}
	ids := map[int64]bool{}
	for _, c := range cs {
		if ids[c.ID] {
			t.Errorf("duplicate recovery code id %d", c.ID)
		}
		ids[c.ID] = true
	}
	// The confirming step is used: it cannot be accepted again.
	if ok, err := accept(ctxOf(t), s, "alice", 12345, now); err != nil || ok {
		t.Errorf("AcceptStep(confirming step) = %v, %v; want false (replay)", ok, err)
	}
}

func testConfirmConflicts(t *testing.T, h Harness) {
	for _, tc := range []struct {
		name       string
		ciphertext func(u store.User) string
		now        func(u store.User) time.Time
	}{
		{"WrongCiphertext", func(u store.User) string { return u.Ciphertext + "x" }, func(store.User) time.Time { return t0 }},
		{"ExpiredAtDeadline", func(u store.User) string { return u.Ciphertext }, func(u store.User) time.Time { return u.PendingExpiresAt }},
		{"ExpiredAfterDeadline", func(u store.User) string { return u.Ciphertext }, func(u store.User) time.Time { return u.PendingExpiresAt.Add(time.Hour) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := h.Open(t)
			u := mustStart(t, s, "alice", 1, t0)
			err := s.ConfirmEnrollment(ctxOf(t), "alice", tc.ciphertext(u), 100, hashes("a", 3), tc.now(u))
			if !errors.Is(err, store.ErrConflict) {
				t.Fatalf("ConfirmEnrollment: err = %v, want ErrConflict", err)
			}
			got := mustGet(t, s, "alice")
			if got.State != store.StatePending || got.LastStep != 0 || got.RecoveryRemaining != 0 {
				t.Errorf("after refused confirm: %+v, want untouched pending row", got)
			}
		})
	}
	t.Run("UnknownUser", func(t *testing.T) {
		t.Parallel()
		s := h.Open(t)
		if err := s.ConfirmEnrollment(ctxOf(t), "nobody", "vault:v1:x", 1, nil, t0); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("ConfirmEnrollment(unknown): err = %v, want ErrConflict", err)
		}
		if _, err := s.GetUser(ctxOf(t), "nobody"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetUser after refused confirm: err = %v, want ErrNotFound", err)
		}
	})
	t.Run("AlreadyActive", func(t *testing.T) {
		t.Parallel()
		s := h.Open(t)
		u := mustActive(t, s, "alice", hashes("a", 3))
		if err := s.ConfirmEnrollment(ctxOf(t), "alice", u.Ciphertext, 500, hashes("b", 5), t0); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("ConfirmEnrollment(active): err = %v, want ErrConflict", err)
		}
		got := mustGet(t, s, "alice")
		if got.LastStep != 100 || got.RecoveryRemaining != 3 {
			t.Errorf("after refused confirm: LastStep %d RecoveryRemaining %d, want 100 and 3", got.LastStep, got.RecoveryRemaining)
		}
		if !equalHashes(sortedHashes(mustCodes(t, s, "alice")), hashes("a", 3)) {
			t.Errorf("recovery codes replaced by a refused confirm")
		}
	})
}

func testConfirmNoCodes(t *testing.T, h Harness) {
	s := h.Open(t)
	u := mustStart(t, s, "alice", 1, t0)
	if err := s.ConfirmEnrollment(ctxOf(t), "alice", u.Ciphertext, 7, nil, t0); err != nil {
		t.Fatalf("ConfirmEnrollment(no codes): %v", err)
	}
	if got := mustGet(t, s, "alice"); got.State != store.StateActive || got.RecoveryRemaining != 0 {
		t.Errorf("after confirm: %+v, want active with no codes", got)
	}
}

func testConfirmClearsFailures(t *testing.T, h Harness) {
	s := h.Open(t)
	u := mustStart(t, s, "alice", 1, t0)
	for range 4 {
		mustFail(t, s, "alice", t0)
	}
	if err := s.ConfirmEnrollment(ctxOf(t), "alice", u.Ciphertext, 7, nil, t0); err != nil {
		t.Fatalf("ConfirmEnrollment: %v", err)
	}
	if got := mustGet(t, s, "alice"); got.Failures != 0 {
		t.Errorf("Failures after confirm = %d, want 0", got.Failures)
	}
}

func testConfirmConcurrent(t *testing.T, h Harness) {
	s := h.Open(t)
	u := mustStart(t, s, "alice", 1, t0)
	codes := hashes("alice", 10)
	errs := make([]error, Concurrency)
	race(Concurrency, func(i int) {
		errs[i] = s.ConfirmEnrollment(ctxOf(t), "alice", u.Ciphertext, 100+int64(i), codes, t0)
	})
	wins := 0
	for i, err := range errs {
		switch {
		case err == nil:
			wins++
		case errors.Is(err, store.ErrConflict):
		default:
			t.Errorf("ConfirmEnrollment #%d: unexpected error %v", i, err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d concurrent ConfirmEnrollment calls succeeded, want exactly 1", wins)
	}
	got := mustGet(t, s, "alice")
	if got.State != store.StateActive || got.RecoveryRemaining != len(codes) {
		t.Errorf("after concurrent confirm: State %s RecoveryRemaining %d, want active and %d", got.State, got.RecoveryRemaining, len(codes))
	}
	if n := len(mustCodes(t, s, "alice")); n != len(codes) {
		t.Errorf("%d recovery codes stored, want %d", n, len(codes))
	}
}

func testDeleteUser(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", hashes("alice", 3))
	mustActive(t, s, "bob", hashes("bob", 3))
	aliceCodes := mustCodes(t, s, "alice")

	if err := s.DeleteUser(ctxOf(t), "alice"); err != nil {
		t.Fatalf("DeleteUser: %v", err)
	}
	if _, err := s.GetUser(ctxOf(t), "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetUser after delete: err = %v, want ErrNotFound", err)
	}
	if cs := mustCodes(t, s, "alice"); len(cs) != 0 {
		t.Errorf("RecoveryCodes after delete = %d codes, want none", len(cs))
	}
	if err := s.DeleteUser(ctxOf(t), "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second DeleteUser: err = %v, want ErrNotFound", err)
	}
	if err := s.DeleteUser(ctxOf(t), "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteUser(unknown): err = %v, want ErrNotFound", err)
	}
	// Bob is untouched.
	if got := mustGet(t, s, "bob"); got.State != store.StateActive || got.RecoveryRemaining != 3 {
		t.Errorf("bob after deleting alice: %+v", got)
	}

	// Alice can enroll afresh; her old codes stay dead.
	u := mustStart(t, s, "alice", 2, t0)
	if err := s.ConfirmEnrollment(ctxOf(t), "alice", u.Ciphertext, 5, hashes("new", 2), t0); err != nil {
		t.Fatalf("ConfirmEnrollment after delete: %v", err)
	}
	for _, c := range aliceCodes {
		if ok, err := spend(ctxOf(t), s, "alice", c.ID, t0); err != nil || ok {
			t.Errorf("SpendRecoveryCode(pre-delete code %d) = %v, %v; want false", c.ID, ok, err)
		}
	}
	if got := mustGet(t, s, "alice"); got.LastStep != 5 || got.RecoveryRemaining != 2 {
		t.Errorf("re-enrolled alice: LastStep %d RecoveryRemaining %d, want 5 and 2", got.LastStep, got.RecoveryRemaining)
	}
	if err := s.DeleteUser(ctxOf(t), "alice"); err != nil {
		t.Errorf("DeleteUser(pending or active): %v", err)
	}
	mustStart(t, s, "carol", 1, t0)
	if err := s.DeleteUser(ctxOf(t), "carol"); err != nil {
		t.Errorf("DeleteUser(pending): %v", err)
	}
}

func testIndependentUsersConcurrent(t *testing.T, h Harness) {
	s := h.Open(t)
	errs := make([]error, Concurrency)
	race(Concurrency, func(i int) {
		ctx := ctxOf(t)
		id := fmt.Sprintf("user-%02d", i)
		u := pendingUser(id, 1, t0)
		if err := s.StartEnrollment(ctx, u); err != nil {
			errs[i] = fmt.Errorf("start: %w", err)
			return
		}
		if err := s.ConfirmEnrollment(ctx, id, u.Ciphertext, 100, hashes(id, 2), t0); err != nil {
			errs[i] = fmt.Errorf("confirm: %w", err)
			return
		}
		if a, err := s.SettleAttempt(ctx, id, store.Match{}, t0, limits); err != nil || !a.Allowed || a.Accepted {
			errs[i] = fmt.Errorf("fail: %+v, %v", a, err)
			return
		}
		if ok, err := accept(ctx, s, id, 101, t0); err != nil || !ok {
			errs[i] = fmt.Errorf("accept: %v, %v", ok, err)
			return
		}
		if _, err := s.GetUser(ctx, id); err != nil {
			errs[i] = fmt.Errorf("get: %w", err)
		}
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("user %d: %v", i, err)
		}
	}
	counts, err := s.CountByState(ctxOf(t))
	if err != nil {
		t.Fatalf("CountByState: %v", err)
	}
	if counts[store.StateActive] != Concurrency {
		t.Errorf("CountByState[active] = %d, want %d", counts[store.StateActive], Concurrency)
	}
}

// ---- settling attempts: TOTP steps ----

func testStepOnlyNewer(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", nil) // LastStep 100
	now := t0.Add(time.Minute)
	for _, tc := range []struct {
		step int64
		want bool
	}{
		{100, false}, {99, false}, {101, true}, {101, false}, {105, true}, {103, false}, {106, true},
	} {
		r := mustSettle(t, s, "alice", store.Match{Step: tc.step}, now, limits)
		if !r.Allowed || r.Accepted != tc.want || r.Replay == tc.want {
			t.Errorf("SettleAttempt(step %d) = %+v; want accepted %v, a replay otherwise", tc.step, r, tc.want)
		}
	}
	got := mustGet(t, s, "alice")
	if got.LastStep != 106 {
		t.Errorf("LastStep = %d, want 106", got.LastStep)
	}
	if !sameTime(got.LastUsedAt, now) {
		t.Errorf("LastUsedAt = %v, want %v", got.LastUsedAt, now)
	}
	// The replay of 103 was counted, then cleared by 106.
	if got.Failures != 0 {
		t.Errorf("Failures = %d, want 0 (cleared by the acceptance of 106)", got.Failures)
	}
	if r := mustSettle(t, s, "alice", store.Match{Step: 106}, now, limits); r.Accepted || !r.Replay || r.Remaining != limits.MaxFailures-1 {
		t.Errorf("replay of 106 = %+v, want a replay counted as a failure", r)
	}
}

func testStepOnlyActive(t *testing.T, h Harness) {
	s := h.Open(t)
	mustStart(t, s, "alice", 1, t0)
	if r := mustSettle(t, s, "alice", store.Match{Step: 1000}, t0, limits); r.Accepted || !r.Allowed {
		t.Errorf("SettleAttempt(pending user) = %+v; want not accepted, counted", r)
	}
	if got := mustGet(t, s, "alice"); got.LastStep != 0 || got.State != store.StatePending || got.Failures != 1 {
		t.Errorf("pending row after an attempt: %+v, want LastStep 0, still pending, one failure", got)
	}
	for _, m := range []store.Match{{Step: 1000}, {}, {RecoveryCodeID: 1}} {
		if r, err := s.SettleAttempt(ctxOf(t), "nobody", m, t0, limits); !errors.Is(err, store.ErrNotFound) || r.Accepted {
			t.Errorf("SettleAttempt(unknown, %+v) = %+v, %v; want ErrNotFound", m, r, err)
		}
	}
	if _, err := s.GetUser(ctxOf(t), "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SettleAttempt created a row for an unknown user")
	}
}

// Concurrent logins with the same code: the first settled takes the step,
// every later one is a replay and counts, so after MaxFailures replays the
// user is locked and the rest are refused.
func testStepConcurrentSame(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", nil)
	var (
		mu                          sync.Mutex
		wins, replays, refused, set int
	)
	race(Concurrency, func(i int) {
		r, err := s.SettleAttempt(ctxOf(t), "alice", store.Match{Step: 101}, t0, limits)
		if err != nil {
			t.Errorf("SettleAttempt #%d: %v", i, err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.Accepted:
			wins++
		case !r.Allowed:
			refused++
		case r.Replay:
			replays++
		}
		if r.LockStarted {
			set++
		}
	})
	if wins != 1 || replays != limits.MaxFailures || set != 1 || refused != Concurrency-1-limits.MaxFailures {
		t.Fatalf("%d concurrent logins with one code: %d accepted, %d replays counted (%d set the lock), %d refused; want 1, %d (1), %d",
			Concurrency, wins, replays, set, refused, limits.MaxFailures, Concurrency-1-limits.MaxFailures)
	}
	if got := mustGet(t, s, "alice"); got.LastStep != 101 || got.Failures != limits.MaxFailures || !sameTime(got.LockedUntil, t0.Add(limits.LockFor)) {
		t.Errorf("after the race: LastStep %d Failures %d LockedUntil %v", got.LastStep, got.Failures, got.LockedUntil)
	}
}

func testStepConcurrentSteps(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", nil) // LastStep 100
	accepted := make([]bool, Concurrency)
	race(Concurrency, func(i int) {
		ok, err := accept(ctxOf(t), s, "alice", 101+int64(i), t0)
		if err != nil {
			t.Errorf("SettleAttempt(step %d): %v", 101+i, err)
		}
		accepted[i] = ok
	})
	last := int64(100 + Concurrency)
	if !accepted[Concurrency-1] {
		t.Errorf("the newest step %d was not accepted", last)
	}
	if got := mustGet(t, s, "alice"); got.LastStep != last {
		t.Errorf("LastStep = %d, want %d (never moves back)", got.LastStep, last)
	}
}

func testStepClearsFailures(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", nil)
	for range limits.MaxFailures - 1 {
		mustFail(t, s, "alice", t0)
	}
	if got := mustGet(t, s, "alice"); got.Failures != limits.MaxFailures-1 {
		t.Fatalf("Failures = %d, want %d", got.Failures, limits.MaxFailures-1)
	}
	if r := mustSettle(t, s, "alice", store.Match{Step: 101}, t0, limits); !r.Accepted {
		t.Fatalf("the last attempt of the window, with a valid step = %+v, want accepted", r)
	}
	if got := mustGet(t, s, "alice"); got.Failures != 0 || !got.LockedUntil.IsZero() {
		t.Errorf("after an accepted step: Failures %d LockedUntil %v, want 0 and none", got.Failures, got.LockedUntil)
	}
	if a := mustFail(t, s, "alice", t0); !a.Allowed || a.Remaining != limits.MaxFailures-1 {
		t.Errorf("failure after an accepted step = %+v, want allowed with %d remaining", a, limits.MaxFailures-1)
	}
}

// ---- settling attempts: lockout ----

func testAttemptsUnknownUser(t *testing.T, h Harness) {
	s := h.Open(t)
	if _, err := s.SettleAttempt(ctxOf(t), "nobody", store.Match{}, t0, limits); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SettleAttempt(unknown): err = %v, want ErrNotFound", err)
	}
	if err := s.Unlock(ctxOf(t), "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Unlock(unknown): err = %v, want ErrNotFound", err)
	}
}

func testAttemptsLockout(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", nil)
	now := t0
	for i := range limits.MaxFailures {
		r := mustFail(t, s, "alice", now)
		if !r.Allowed || r.Accepted || r.Remaining != limits.MaxFailures-1-i {
			t.Fatalf("failure %d = %+v, want counted with %d remaining", i+1, r, limits.MaxFailures-1-i)
		}
		if i < limits.MaxFailures-1 && (r.LockStarted || !r.LockedUntil.IsZero()) {
			t.Fatalf("failure %d = %+v, want no lock yet", i+1, r)
		}
		if i == limits.MaxFailures-1 && (!r.LockStarted || !sameTime(r.LockedUntil, now.Add(limits.LockFor))) {
			t.Fatalf("failure %d = %+v, want it to set the lock until %v", i+1, r, now.Add(limits.LockFor))
		}
		if i < limits.MaxFailures-1 {
			now = now.Add(10 * time.Second)
		}
	}
	lockEnd := now.Add(limits.LockFor)
	if got := mustGet(t, s, "alice"); !sameTime(got.LockedUntil, lockEnd) {
		t.Errorf("LockedUntil = %v, want %v", got.LockedUntil, lockEnd)
	}
	// Locked: refused, even with a valid step, even long after the window;
	// nothing is counted or spent and the lock is not extended.
	for _, at := range []time.Time{now, now.Add(time.Minute), now.Add(limits.Window + time.Minute), lockEnd.Add(-time.Second)} {
		for _, m := range []store.Match{{}, {Step: 200}} {
			r := mustSettle(t, s, "alice", m, at, limits)
			if r.Allowed || r.Accepted || r.LockStarted || !sameTime(r.LockedUntil, lockEnd) {
				t.Errorf("SettleAttempt(%+v) at %v while locked = %+v, want refused until %v", m, at, r, lockEnd)
			}
		}
	}
	if got := mustGet(t, s, "alice"); !sameTime(got.LockedUntil, lockEnd) || got.Failures != limits.MaxFailures || got.LastStep != 100 {
		t.Errorf("after refused attempts: LockedUntil %v Failures %d LastStep %d, want %v, %d and 100", got.LockedUntil, got.Failures, got.LastStep, lockEnd, limits.MaxFailures)
	}
	// At the lock's end the user starts afresh.
	r := mustFail(t, s, "alice", lockEnd)
	if !r.Allowed || r.Remaining != limits.MaxFailures-1 || !r.LockedUntil.IsZero() {
		t.Fatalf("failure at lock end = %+v, want counted with %d remaining and no lock", r, limits.MaxFailures-1)
	}
	if got := mustGet(t, s, "alice"); got.Failures != 1 || !got.LockedUntil.IsZero() {
		t.Errorf("after the lock: Failures %d LockedUntil %v, want 1 and none", got.Failures, got.LockedUntil)
	}
	if r := mustSettle(t, s, "alice", store.Match{Step: 200}, lockEnd, limits); !r.Accepted {
		t.Errorf("valid step after the lock = %+v, want accepted", r)
	}
}

func testAttemptsWindowForgets(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", nil)
	for range limits.MaxFailures - 1 {
		mustFail(t, s, "alice", t0)
	}
	later := t0.Add(limits.Window)
	r := mustFail(t, s, "alice", later)
	if !r.Allowed || r.Remaining != limits.MaxFailures-1 || !r.LockedUntil.IsZero() {
		t.Fatalf("failure after the window = %+v, want counted with %d remaining, no lock (old failures forgotten)", r, limits.MaxFailures-1)
	}
	if got := mustGet(t, s, "alice"); got.Failures != 1 || !sameTime(got.FailureWindowStart, later) {
		t.Errorf("Failures = %d, window from %v; want 1 from %v", got.Failures, got.FailureWindowStart, later)
	}
}

func testAttemptsWindowCountsRecent(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", nil)
	for range limits.MaxFailures - 1 {
		mustFail(t, s, "alice", t0)
	}
	inside := t0.Add(limits.Window - time.Second)
	r := mustFail(t, s, "alice", inside)
	if !r.Allowed || r.Remaining != 0 || !r.LockStarted || !sameTime(r.LockedUntil, inside.Add(limits.LockFor)) {
		t.Errorf("last failure in the window = %+v, want it to lock until %v", r, inside.Add(limits.LockFor))
	}
}

// Lowering MaxFailures below what a window already counted refuses
// without a lock until the window ends.
func testAttemptsLimitLowered(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", nil)
	for range 3 {
		mustFail(t, s, "alice", t0)
	}
	lower := limits
	lower.MaxFailures = 2
	for _, m := range []store.Match{{}, {Step: 200}} {
		if r := mustSettle(t, s, "alice", m, t0.Add(time.Second), lower); r.Allowed || !sameTime(r.LockedUntil, t0.Add(limits.Window)) {
			t.Errorf("SettleAttempt(%+v) over the lowered limit = %+v, want refused until the window ends (%v)", m, r, t0.Add(limits.Window))
		}
	}
	if r := mustSettle(t, s, "alice", store.Match{Step: 200}, t0.Add(limits.Window), lower); !r.Accepted {
		t.Errorf("valid step once the window ended = %+v, want accepted", r)
	}
}

// Concurrent wrong codes: exactly MaxFailures are counted, the last of
// them sets the lock, and the rest are refused without being counted.
func testAttemptsConcurrent(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", nil)
	var (
		mu           sync.Mutex
		counted, set int
		rem          []int
	)
	race(Concurrency, func(i int) {
		r, err := s.SettleAttempt(ctxOf(t), "alice", store.Match{}, t0, limits)
		if err != nil {
			t.Errorf("SettleAttempt #%d: %v", i, err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if r.Allowed {
			counted++
			rem = append(rem, r.Remaining)
		}
		if r.LockStarted {
			set++
		}
	})
	if counted != limits.MaxFailures || set != 1 {
		t.Fatalf("%d concurrent wrong codes: %d counted, %d set the lock; want exactly %d and 1", Concurrency, counted, set, limits.MaxFailures)
	}
	sort.Ints(rem)
	if want := []int{0, 1, 2, 3, 4}; !slices.Equal(rem, want) {
		t.Errorf("Remaining values = %v, want %v", rem, want)
	}
	got := mustGet(t, s, "alice")
	if got.Failures != limits.MaxFailures || !sameTime(got.LockedUntil, t0.Add(limits.LockFor)) {
		t.Errorf("Failures %d LockedUntil %v, want %d and %v", got.Failures, got.LockedUntil, limits.MaxFailures, t0.Add(limits.LockFor))
	}
	if r := mustSettle(t, s, "alice", store.Match{Step: 200}, t0.Add(time.Minute), limits); r.Allowed {
		t.Errorf("valid step while locked = %+v, want refused", r)
	}
}

// Concurrent wrong codes for several users, settled together (a store may
// batch them into one commit): each user gets exactly MaxFailures, and a
// valid code of a user who is not locked still passes among them.
func testAttemptsConcurrentUsers(t *testing.T, h Harness) {
	s := h.Open(t)
	const users, each = 5, 2 * 5
	for u := range users {
		mustActive(t, s, fmt.Sprintf("user-%d", u), nil)
	}
	mustActive(t, s, "lucky", nil)
	counted := make([]atomic.Int32, users)
	var luckyOK atomic.Bool
	race(users*each+1, func(i int) {
		if i == users*each {
			ok, err := accept(ctxOf(t), s, "lucky", 101, t0)
			if err != nil {
				t.Errorf("lucky: %v", err)
			}
			luckyOK.Store(ok)
			return
		}
		u := i % users
		r, err := s.SettleAttempt(ctxOf(t), fmt.Sprintf("user-%d", u), store.Match{}, t0, limits)
		if err != nil {
			t.Errorf("SettleAttempt #%d: %v", i, err)
			return
		}
		if r.Allowed {
			counted[u].Add(1)
		}
	})
	for u := range users {
		if n := counted[u].Load(); int(n) != limits.MaxFailures {
			t.Errorf("user-%d: %d of %d wrong codes counted, want %d", u, n, each, limits.MaxFailures)
		}
		if got := mustGet(t, s, fmt.Sprintf("user-%d", u)); got.Failures != limits.MaxFailures || got.LockedUntil.IsZero() {
			t.Errorf("user-%d: Failures %d LockedUntil %v, want %d and a lock", u, got.Failures, got.LockedUntil, limits.MaxFailures)
		}
	}
	if !luckyOK.Load() {
		t.Errorf("a valid code of another user was not accepted among the failures")
	}
	if got := mustGet(t, s, "lucky"); got.LastStep != 101 || got.Failures != 0 {
		t.Errorf("lucky: LastStep %d Failures %d, want 101 and 0", got.LastStep, got.Failures)
	}
}

func testUnlock(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", nil)
	for range limits.MaxFailures {
		mustFail(t, s, "alice", t0)
	}
	if a := mustFail(t, s, "alice", t0); a.Allowed {
		t.Fatalf("not locked after %d failures", limits.MaxFailures)
	}
	if err := s.Unlock(ctxOf(t), "alice"); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	got := mustGet(t, s, "alice")
	if got.Failures != 0 || !got.LockedUntil.IsZero() {
		t.Errorf("after Unlock: Failures %d LockedUntil %v, want 0 and zero", got.Failures, got.LockedUntil)
	}
	if a := mustFail(t, s, "alice", t0); !a.Allowed || a.Remaining != limits.MaxFailures-1 {
		t.Errorf("failure after Unlock = %+v, want counted with %d remaining", a, limits.MaxFailures-1)
	}
	// Unlocking a user who is not locked is fine.
	if err := s.Unlock(ctxOf(t), "alice"); err != nil {
		t.Errorf("second Unlock: %v", err)
	}
}

func testAttemptsPerUser(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", nil)
	mustActive(t, s, "bob", nil)
	for range limits.MaxFailures {
		mustFail(t, s, "alice", t0)
	}
	if a := mustFail(t, s, "bob", t0); !a.Allowed || a.Remaining != limits.MaxFailures-1 {
		t.Errorf("bob's failure = %+v: alice's failures leaked to bob", a)
	}
	if got := mustGet(t, s, "bob"); !got.LockedUntil.IsZero() {
		t.Errorf("bob locked by alice's failures")
	}
}

// ---- recovery codes ----

func testRecoveryListsUnused(t *testing.T, h Harness) {
	s := h.Open(t)
	codes := hashes("alice", 3)
	mustActive(t, s, "alice", codes)
	cs := mustCodes(t, s, "alice")
	if len(cs) != 3 {
		t.Fatalf("RecoveryCodes = %d codes, want 3", len(cs))
	}
	if ok, err := spend(ctxOf(t), s, "alice", cs[1].ID, t0); err != nil || !ok {
		t.Fatalf("SpendRecoveryCode = %v, %v", ok, err)
	}
	left := mustCodes(t, s, "alice")
	if len(left) != 2 {
		t.Fatalf("RecoveryCodes after spending one = %d codes, want 2", len(left))
	}
	for _, c := range left {
		if c.ID == cs[1].ID {
			t.Errorf("spent code %d still listed", c.ID)
		}
	}
	var want [][]byte
	for _, c := range cs {
		if c.ID != cs[1].ID {
			want = append(want, c.Hash)
		}
	}
	slices.SortFunc(want, bytes.Compare)
	if !equalHashes(sortedHashes(left), want) {
		t.Errorf("remaining hashes = %q, want %q", sortedHashes(left), want)
	}
	if got := mustGet(t, s, "alice"); got.RecoveryRemaining != 2 {
		t.Errorf("RecoveryRemaining = %d, want 2", got.RecoveryRemaining)
	}
	if cs := mustCodes(t, s, "nobody"); len(cs) != 0 {
		t.Errorf("RecoveryCodes(unknown) = %d codes, want none", len(cs))
	}
}

func testRecoverySpendOnce(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", hashes("alice", 2))
	id := mustCodes(t, s, "alice")[0].ID
	now := t0.Add(time.Hour)
	if ok, err := spend(ctxOf(t), s, "alice", id, now); err != nil || !ok {
		t.Fatalf("first SpendRecoveryCode = %v, %v; want true", ok, err)
	}
	if ok, err := spend(ctxOf(t), s, "alice", id, now); err != nil || ok {
		t.Errorf("second SpendRecoveryCode = %v, %v; want false", ok, err)
	}
	if ok, err := spend(ctxOf(t), s, "alice", id+1_000_000, now); err != nil || ok {
		t.Errorf("SpendRecoveryCode(unknown id) = %v, %v; want false", ok, err)
	}
	if ok, err := spend(ctxOf(t), s, "nobody", id, now); !errors.Is(err, store.ErrNotFound) || ok {
		t.Errorf("SpendRecoveryCode(unknown user) = %v, %v; want ErrNotFound", ok, err)
	}
	if got := mustGet(t, s, "alice"); got.RecoveryRemaining != 1 || !sameTime(got.LastUsedAt, now) {
		t.Errorf("after spending: RecoveryRemaining %d LastUsedAt %v, want 1 and %v", got.RecoveryRemaining, got.LastUsedAt, now)
	}
}

func testRecoverySpendConcurrent(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", hashes("alice", 3))
	id := mustCodes(t, s, "alice")[0].ID
	var (
		mu   sync.Mutex
		wins int
	)
	race(Concurrency, func(i int) {
		ok, err := spend(ctxOf(t), s, "alice", id, t0)
		if err != nil {
			t.Errorf("SpendRecoveryCode #%d: %v", i, err)
		}
		if ok {
			mu.Lock()
			wins++
			mu.Unlock()
		}
	})
	if wins != 1 {
		t.Fatalf("%d of %d concurrent SpendRecoveryCode calls succeeded, want exactly 1", wins, Concurrency)
	}
	if got := mustGet(t, s, "alice"); got.RecoveryRemaining != 2 {
		t.Errorf("RecoveryRemaining = %d, want 2", got.RecoveryRemaining)
	}
}

func testRecoveryCrossUser(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", hashes("alice", 2))
	mustActive(t, s, "bob", hashes("bob", 2))
	aliceCode := mustCodes(t, s, "alice")[0]
	if ok, err := spend(ctxOf(t), s, "bob", aliceCode.ID, t0); err != nil || ok {
		t.Fatalf("SpendRecoveryCode(bob, alice's code) = %v, %v; want false", ok, err)
	}
	if got := mustGet(t, s, "alice"); got.RecoveryRemaining != 2 {
		t.Errorf("alice's RecoveryRemaining = %d after bob's attempt, want 2", got.RecoveryRemaining)
	}
	if got := mustGet(t, s, "bob"); got.RecoveryRemaining != 2 {
		t.Errorf("bob's RecoveryRemaining = %d, want 2", got.RecoveryRemaining)
	}
	for _, c := range mustCodes(t, s, "bob") {
		if c.ID == aliceCode.ID || bytes.Equal(c.Hash, aliceCode.Hash) {
			t.Errorf("bob's codes include alice's code")
		}
	}
	if ok, err := spend(ctxOf(t), s, "alice", aliceCode.ID, t0); err != nil || !ok {
		t.Errorf("SpendRecoveryCode(alice, own code) = %v, %v; want true", ok, err)
	}
}

func testRecoverySpendClearsFailures(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", hashes("alice", 2))
	for range limits.MaxFailures - 1 {
		mustFail(t, s, "alice", t0)
	}
	id := mustCodes(t, s, "alice")[0].ID
	if r := mustSettle(t, s, "alice", store.Match{RecoveryCodeID: id}, t0, limits); !r.Accepted {
		t.Fatalf("SpendRecoveryCode = %+v", r)
	}
	if got := mustGet(t, s, "alice"); got.Failures != 0 {
		t.Errorf("Failures after SpendRecoveryCode = %d, want 0", got.Failures)
	}
	// A spent code is a failure, and does not clear the count.
	mustFail(t, s, "alice", t0)
	if r := mustSettle(t, s, "alice", store.Match{RecoveryCodeID: id}, t0, limits); r.Accepted || !r.Allowed || r.Remaining != limits.MaxFailures-2 {
		t.Fatalf("spent code again = %+v, want a counted failure", r)
	}
	if got := mustGet(t, s, "alice"); got.Failures != 2 {
		t.Errorf("Failures after a refused SpendRecoveryCode = %d, want 2", got.Failures)
	}
}

func testRecoveryReplace(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", hashes("old", 3))
	old := mustCodes(t, s, "alice")
	if ok, err := spend(ctxOf(t), s, "alice", old[0].ID, t0); err != nil || !ok {
		t.Fatalf("SpendRecoveryCode = %v, %v", ok, err)
	}
	fresh := hashes("new", 4)
	if err := s.ReplaceRecoveryCodes(ctxOf(t), "alice", fresh, t0.Add(time.Minute)); err != nil {
		t.Fatalf("ReplaceRecoveryCodes: %v", err)
	}
	cs := mustCodes(t, s, "alice")
	if !equalHashes(sortedHashes(cs), fresh) {
		t.Errorf("codes after replace = %q, want %q", sortedHashes(cs), fresh)
	}
	if got := mustGet(t, s, "alice"); got.RecoveryRemaining != 4 || got.State != store.StateActive || got.LastStep != 100 {
		t.Errorf("after replace: %+v, want active, LastStep 100, 4 codes", got)
	}
	for _, c := range old {
		if ok, err := spend(ctxOf(t), s, "alice", c.ID, t0); err != nil || ok {
			t.Errorf("SpendRecoveryCode(replaced code %d) = %v, %v; want false", c.ID, ok, err)
		}
	}
	if ok, err := spend(ctxOf(t), s, "alice", cs[0].ID, t0); err != nil || !ok {
		t.Errorf("SpendRecoveryCode(new code) = %v, %v; want true", ok, err)
	}
	// Replacing with nothing leaves no codes.
	if err := s.ReplaceRecoveryCodes(ctxOf(t), "alice", nil, t0); err != nil {
		t.Fatalf("ReplaceRecoveryCodes(nil): %v", err)
	}
	if got := mustGet(t, s, "alice"); got.RecoveryRemaining != 0 {
		t.Errorf("RecoveryRemaining after replacing with none = %d", got.RecoveryRemaining)
	}
}

func testRecoveryReplaceConflict(t *testing.T, h Harness) {
	s := h.Open(t)
	mustStart(t, s, "alice", 1, t0)
	if err := s.ReplaceRecoveryCodes(ctxOf(t), "alice", hashes("x", 2), t0); !errors.Is(err, store.ErrConflict) {
		t.Errorf("ReplaceRecoveryCodes(pending): err = %v, want ErrConflict", err)
	}
	if cs := mustCodes(t, s, "alice"); len(cs) != 0 {
		t.Errorf("pending user got %d codes", len(cs))
	}
	if err := s.ReplaceRecoveryCodes(ctxOf(t), "nobody", hashes("x", 2), t0); !errors.Is(err, store.ErrConflict) {
		t.Errorf("ReplaceRecoveryCodes(unknown): err = %v, want ErrConflict", err)
	}
	if cs := mustCodes(t, s, "nobody"); len(cs) != 0 {
		t.Errorf("unknown user got %d codes", len(cs))
	}
}

func testRecoveryReplaceConcurrent(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", hashes("old", 5))
	const n = 20
	race(n, func(i int) {
		if err := s.ReplaceRecoveryCodes(ctxOf(t), "alice", hashes(fmt.Sprintf("set%02d", i), 5), t0); err != nil {
			t.Errorf("ReplaceRecoveryCodes #%d: %v", i, err)
		}
	})
	cs := mustCodes(t, s, "alice")
	if len(cs) != 5 {
		t.Fatalf("%d codes after concurrent replaces, want 5 (one whole set)", len(cs))
	}
	got := sortedHashes(cs)
	prefix := string(got[0][:len("set00")])
	if !equalHashes(got, hashes(prefix, 5)) {
		t.Errorf("codes after concurrent replaces mix sets: %q", got)
	}
}

// ---- challenges ----

func challenge(id string, now time.Time) store.Challenge {
	return store.Challenge{
		IDHash:    []byte("hash-of-" + id + "\x00\xff"),
		UserID:    "alice",
		Sealed:    []byte("sealed\x00answer-" + id),
		CreatedAt: now,
		ExpiresAt: now.Add(5 * time.Minute),
	}
}

func mustCreate(t *testing.T, s store.Store, c store.Challenge) {
	t.Helper()
	if err := s.CreateChallenge(ctxOf(t), c); err != nil {
		t.Fatalf("CreateChallenge: %v", err)
	}
}

func sameChallenge(a, b store.Challenge) bool {
	return bytes.Equal(a.IDHash, b.IDHash) && a.UserID == b.UserID && bytes.Equal(a.Sealed, b.Sealed) &&
		a.Enroll == b.Enroll && a.Satisfied == b.Satisfied && a.Attempts == b.Attempts &&
		a.CreatedAt.Equal(b.CreatedAt) && a.ExpiresAt.Equal(b.ExpiresAt)
}

func testChallengeCreateGet(t *testing.T, h Harness) {
	s := h.Open(t)
	c := challenge("one", t0)
	mustCreate(t, s, c)
	e := challenge("two", t0)
	e.UserID = "bob"
	e.Enroll = true
	mustCreate(t, s, e)
	for _, want := range []store.Challenge{c, e} {
		got, err := s.GetChallenge(ctxOf(t), want.IDHash, t0.Add(time.Minute))
		if err != nil {
			t.Fatalf("GetChallenge: %v", err)
		}
		if !sameChallenge(got, want) {
			t.Errorf("GetChallenge = %+v, want %+v", got, want)
		}
	}
	if _, err := s.GetChallenge(ctxOf(t), []byte("unknown"), t0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetChallenge(unknown): err = %v, want ErrNotFound", err)
	}
}

func testChallengeExpired(t *testing.T, h Harness) {
	s := h.Open(t)
	c := challenge("one", t0)
	mustCreate(t, s, c)
	if _, err := s.GetChallenge(ctxOf(t), c.IDHash, c.ExpiresAt.Add(-time.Second)); err != nil {
		t.Errorf("GetChallenge before expiry: %v", err)
	}
	for _, at := range []time.Time{c.ExpiresAt, c.ExpiresAt.Add(time.Hour)} {
		if _, err := s.GetChallenge(ctxOf(t), c.IDHash, at); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetChallenge at %v (expires %v): err = %v, want ErrNotFound", at, c.ExpiresAt, err)
		}
		if err := s.SatisfyChallenge(ctxOf(t), c.IDHash, at); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("SatisfyChallenge at %v (expired): err = %v, want ErrNotFound", at, err)
		}
	}
}

func testChallengeDuplicate(t *testing.T, h Harness) {
	s := h.Open(t)
	c := challenge("one", t0)
	mustCreate(t, s, c)
	d := c
	d.UserID = "mallory"
	d.Sealed = []byte("other")
	if err := s.CreateChallenge(ctxOf(t), d); err == nil {
		t.Errorf("CreateChallenge(duplicate id) succeeded, want an error")
	}
	got, err := s.GetChallenge(ctxOf(t), c.IDHash, t0)
	if err != nil {
		t.Fatalf("GetChallenge: %v", err)
	}
	if !sameChallenge(got, c) {
		t.Errorf("duplicate CreateChallenge overwrote the challenge: %+v", got)
	}
}

func testChallengeFail(t *testing.T, h Harness) {
	s := h.Open(t)
	c := challenge("one", t0)
	mustCreate(t, s, c)
	for i, want := range []int{2, 1} {
		left, err := s.FailChallenge(ctxOf(t), c.IDHash, 3)
		if err != nil || left != want {
			t.Fatalf("FailChallenge #%d = %d, %v; want %d", i+1, left, err, want)
		}
		got, err := s.GetChallenge(ctxOf(t), c.IDHash, t0)
		if err != nil || got.Attempts != i+1 {
			t.Fatalf("GetChallenge after %d failures: Attempts %d, err %v", i+1, got.Attempts, err)
		}
	}
	if left, err := s.FailChallenge(ctxOf(t), c.IDHash, 3); err != nil || left != 0 {
		t.Fatalf("FailChallenge #3 = %d, %v; want 0 (gone)", left, err)
	}
	if _, err := s.GetChallenge(ctxOf(t), c.IDHash, t0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetChallenge after max attempts: err = %v, want ErrNotFound", err)
	}
	if _, err := s.SpendChallenge(ctxOf(t), c.IDHash, t0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SpendChallenge after max attempts: err = %v, want ErrNotFound", err)
	}
	if left, err := s.FailChallenge(ctxOf(t), c.IDHash, 3); err != nil || left != 0 {
		t.Errorf("FailChallenge(gone) = %d, %v; want 0, nil", left, err)
	}
	if left, err := s.FailChallenge(ctxOf(t), []byte("unknown"), 3); err != nil || left != 0 {
		t.Errorf("FailChallenge(unknown) = %d, %v; want 0, nil", left, err)
	}
}

func testChallengeFailConcurrent(t *testing.T, h Harness) {
	s := h.Open(t)
	c := challenge("one", t0)
	mustCreate(t, s, c)
	const maxAttempts = 5
	lefts := make([]int, Concurrency)
	race(Concurrency, func(i int) {
		left, err := s.FailChallenge(ctxOf(t), c.IDHash, maxAttempts)
		if err != nil {
			t.Errorf("FailChallenge #%d: %v", i, err)
		}
		lefts[i] = left
	})
	var positive []int
	for _, l := range lefts {
		if l > 0 {
			positive = append(positive, l)
		}
	}
	sort.Ints(positive)
	if want := []int{1, 2, 3, 4}; !slices.Equal(positive, want) {
		t.Errorf("non-zero FailChallenge answers = %v, want %v", positive, want)
	}
	if _, err := s.GetChallenge(ctxOf(t), c.IDHash, t0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetChallenge after concurrent failures: err = %v, want ErrNotFound", err)
	}
}

func testChallengeSatisfy(t *testing.T, h Harness) {
	s := h.Open(t)
	c := challenge("one", t0)
	c.Enroll = true
	mustCreate(t, s, c)
	if err := s.SatisfyChallenge(ctxOf(t), c.IDHash, t0.Add(time.Minute)); err != nil {
		t.Fatalf("SatisfyChallenge: %v", err)
	}
	got, err := s.GetChallenge(ctxOf(t), c.IDHash, t0)
	if err != nil || !got.Satisfied || !got.Enroll {
		t.Fatalf("GetChallenge after satisfy = %+v, %v; want Satisfied", got, err)
	}
	if err := s.SatisfyChallenge(ctxOf(t), c.IDHash, t0); err != nil {
		t.Errorf("second SatisfyChallenge: %v", err)
	}
	spent, err := s.SpendChallenge(ctxOf(t), c.IDHash, t0)
	if err != nil || !spent.Satisfied {
		t.Fatalf("SpendChallenge = %+v, %v; want the satisfied challenge", spent, err)
	}
	if err := s.SatisfyChallenge(ctxOf(t), c.IDHash, t0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SatisfyChallenge(spent): err = %v, want ErrNotFound", err)
	}
	if err := s.SatisfyChallenge(ctxOf(t), []byte("unknown"), t0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SatisfyChallenge(unknown): err = %v, want ErrNotFound", err)
	}
}

func testChallengeSpend(t *testing.T, h Harness) {
	s := h.Open(t)
	c := challenge("one", t0)
	other := challenge("two", t0)
	mustCreate(t, s, c)
	mustCreate(t, s, other)
	if _, err := s.FailChallenge(ctxOf(t), c.IDHash, 5); err != nil {
		t.Fatalf("FailChallenge: %v", err)
	}
	got, err := s.SpendChallenge(ctxOf(t), c.IDHash, t0.Add(time.Minute))
	if err != nil {
		t.Fatalf("SpendChallenge: %v", err)
	}
	want := c
	want.Attempts = 1
	if !sameChallenge(got, want) {
		t.Errorf("SpendChallenge = %+v, want %+v", got, want)
	}
	if _, err := s.SpendChallenge(ctxOf(t), c.IDHash, t0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second SpendChallenge: err = %v, want ErrNotFound", err)
	}
	if _, err := s.GetChallenge(ctxOf(t), c.IDHash, t0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetChallenge(spent): err = %v, want ErrNotFound", err)
	}
	if _, err := s.GetChallenge(ctxOf(t), other.IDHash, t0); err != nil {
		t.Errorf("spending one challenge touched another: %v", err)
	}
}

func testChallengeSpendConcurrent(t *testing.T, h Harness) {
	s := h.Open(t)
	c := challenge("one", t0)
	mustCreate(t, s, c)
	var (
		mu   sync.Mutex
		wins int
	)
	race(Concurrency, func(i int) {
		got, err := s.SpendChallenge(ctxOf(t), c.IDHash, t0)
		switch {
		case err == nil:
			if !sameChallenge(got, c) {
				t.Errorf("SpendChallenge #%d = %+v, want %+v", i, got, c)
			}
			mu.Lock()
			wins++
			mu.Unlock()
		case errors.Is(err, store.ErrNotFound):
		default:
			t.Errorf("SpendChallenge #%d: %v", i, err)
		}
	})
	if wins != 1 {
		t.Fatalf("%d of %d concurrent SpendChallenge calls got the challenge, want exactly 1", wins, Concurrency)
	}
}

func testChallengeSpendExpired(t *testing.T, h Harness) {
	s := h.Open(t)
	c := challenge("one", t0)
	mustCreate(t, s, c)
	for _, at := range []time.Time{c.ExpiresAt, c.ExpiresAt.Add(time.Minute)} {
		if _, err := s.SpendChallenge(ctxOf(t), c.IDHash, at); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("SpendChallenge at %v (expired): err = %v, want ErrNotFound", at, err)
		}
	}
}

func testChallengeDeleteExpired(t *testing.T, h Harness) {
	s := h.Open(t)
	now := t0.Add(time.Hour)
	var expired, live []store.Challenge
	for i, exp := range []time.Time{now.Add(-time.Hour), now.Add(-time.Second), now} {
		c := challenge(fmt.Sprintf("expired-%d", i), t0)
		c.ExpiresAt = exp
		expired = append(expired, c)
	}
	for i, exp := range []time.Time{now.Add(time.Second), now.Add(time.Hour)} {
		c := challenge(fmt.Sprintf("live-%d", i), t0)
		c.ExpiresAt = exp
		live = append(live, c)
	}
	for _, c := range append(slices.Clone(expired), live...) {
		mustCreate(t, s, c)
	}
	n, err := s.DeleteExpiredChallenges(ctxOf(t), now)
	if err != nil || n != len(expired) {
		t.Fatalf("DeleteExpiredChallenges = %d, %v; want %d", n, err, len(expired))
	}
	for _, c := range expired {
		// Looked up at a time it was live: gone for good, not just hidden.
		if _, err := s.GetChallenge(ctxOf(t), c.IDHash, t0); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("expired challenge survived DeleteExpiredChallenges: err = %v", err)
		}
	}
	for _, c := range live {
		if _, err := s.GetChallenge(ctxOf(t), c.IDHash, now); err != nil {
			t.Errorf("live challenge deleted: %v", err)
		}
	}
	if n, err := s.DeleteExpiredChallenges(ctxOf(t), now); err != nil || n != 0 {
		t.Errorf("second DeleteExpiredChallenges = %d, %v; want 0", n, err)
	}
}

// The revocation material of a held login is handed over exactly once:
// for expired challenges to the sweeper, for all of one user's to an admin
// reset; a spent challenge's never.
func testChallengeTakeRevocations(t *testing.T, h Harness) {
	s := h.Open(t)
	now := t0.Add(time.Hour)
	mk := func(id, user string, expires time.Time, revoke string) store.Challenge {
		c := challenge(id, t0)
		c.UserID, c.ExpiresAt = user, expires
		if revoke != "" {
			c.Revoke = []byte(revoke + "\x00\xff")
		}
		mustCreate(t, s, c)
		return c
	}
	mk("a-expired", "alice", now.Add(-time.Second), "rev-a1")
	mk("a-live", "alice", now.Add(time.Minute), "rev-a2")
	spent := mk("a-spent", "alice", now.Add(time.Minute), "rev-a3")
	mk("b-expired", "bob", now, "rev-b1")
	mk("b-none", "bob", now.Add(-time.Minute), "")
	mk("c-live", "carol", now.Add(time.Minute), "rev-c1")
	if _, err := s.SpendChallenge(ctxOf(t), spent.IDHash, now); err != nil {
		t.Fatal(err)
	}
	material := func(cs []store.Challenge) map[string]string {
		m := map[string]string{}
		for _, c := range cs {
			m[string(c.Revoke)] = c.UserID
		}
		return m
	}
	got, err := s.TakeRevocations(ctxOf(t), "", now)
	if want := map[string]string{"rev-a1\x00\xff": "alice", "rev-b1\x00\xff": "bob"}; err != nil || !maps.Equal(material(got), want) {
		t.Fatalf("TakeRevocations(expired) = %v, %v; want %v", material(got), err, want)
	}
	if again, err := s.TakeRevocations(ctxOf(t), "", now); err != nil || len(again) != 0 {
		t.Fatalf("second TakeRevocations(expired) = %v, %v; want none", material(again), err)
	}
	got, err = s.TakeRevocations(ctxOf(t), "alice", now)
	if want := map[string]string{"rev-a2\x00\xff": "alice"}; err != nil || !maps.Equal(material(got), want) {
		t.Fatalf("TakeRevocations(alice) = %v, %v; want %v", material(got), err, want)
	}
	if c, err := s.GetChallenge(ctxOf(t), challenge("c-live", t0).IDHash, now); err != nil || string(c.UserID) != "carol" {
		t.Fatalf("carol's challenge after other users' revocations: %v", err)
	}
}

// ---- settings ----

func testSettingNotFound(t *testing.T, h Harness) {
	s := h.Open(t)
	if _, err := s.Setting(ctxOf(t), "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Setting(unknown): err = %v, want ErrNotFound", err)
	}
}

func testSettingFirstWriterWins(t *testing.T, h Harness) {
	s := h.Open(t)
	first := []byte("first\x00value")
	got, err := s.PutSettingIfAbsent(ctxOf(t), "k", first)
	if err != nil || !bytes.Equal(got, first) {
		t.Fatalf("PutSettingIfAbsent(new) = %q, %v; want %q", got, err, first)
	}
	got, err = s.PutSettingIfAbsent(ctxOf(t), "k", []byte("second"))
	if err != nil || !bytes.Equal(got, first) {
		t.Fatalf("PutSettingIfAbsent(existing) = %q, %v; want the first value %q", got, err, first)
	}
	got, err = s.Setting(ctxOf(t), "k")
	if err != nil || !bytes.Equal(got, first) {
		t.Errorf("Setting = %q, %v; want %q", got, err, first)
	}
	if _, err := s.Setting(ctxOf(t), "K"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Setting(other key): err = %v, want ErrNotFound", err)
	}
}

func testSettingConcurrent(t *testing.T, h Harness) {
	s := h.Open(t)
	got := make([][]byte, Concurrency)
	race(Concurrency, func(i int) {
		v, err := s.PutSettingIfAbsent(ctxOf(t), "salt", fmt.Appendf(nil, "value-%02d", i))
		if err != nil {
			t.Errorf("PutSettingIfAbsent #%d: %v", i, err)
		}
		got[i] = v
	})
	stored, err := s.Setting(ctxOf(t), "salt")
	if err != nil {
		t.Fatalf("Setting: %v", err)
	}
	for i, v := range got {
		if !bytes.Equal(v, stored) {
			t.Errorf("PutSettingIfAbsent #%d returned %q, but %q is stored", i, v, stored)
		}
	}
}

// ---- rewrap and status ----

func testSecretsPage(t *testing.T, h Harness) {
	s := h.Open(t)
	// Ids chosen so byte order differs from case-insensitive collations.
	users := []struct {
		id      string
		backend string
		version int
		active  bool
		binding store.Binding
	}{
		{"b", "vault", 1, true, store.BindingUser}, {"B", "vault", 2, false, store.BindingUser},
		{"a", "vault", 3, true, store.BindingUser}, {"A-1", "local", 1, false, store.BindingBare},
		{"user-10", "vault", 2, true, store.BindingUser}, {"user-9", "local", 3, true, store.BindingBare},
		{"Zed", "vault", 1, true, store.BindingUser}, {"_x", "local", 2, false, store.BindingUser},
		{"v", "vault", 4, true, store.BindingBare},
	}
	want := map[string]store.SecretRef{}
	for _, u := range users {
		p := pendingUser(u.id, u.version, t0)
		p.Binding = u.binding
		p.Ciphertext = fmt.Sprintf("%s:v%d:%s-secret", u.backend, u.version, u.id)
		if err := s.StartEnrollment(ctxOf(t), p); err != nil {
			t.Fatalf("StartEnrollment(%s): %v", u.id, err)
		}
		if u.active {
			if err := s.ConfirmEnrollment(ctxOf(t), u.id, p.Ciphertext, 1, nil, t0); err != nil {
				t.Fatalf("ConfirmEnrollment(%s): %v", u.id, err)
			}
		}
		want[u.id] = store.SecretRef{UserID: u.id, Ciphertext: p.Ciphertext, KeyVersion: u.version, Binding: u.binding}
	}
	// A secret at the target key but under the bare binding still needs
	// the rewrap (which rebinds it).
	expect := func(target store.KeyRef, after string) []store.SecretRef {
		var ids []string
		for id, r := range want {
			atTarget := strings.HasPrefix(r.Ciphertext, target.Backend+":") && r.KeyVersion >= target.Version && r.Binding == store.BindingUser
			if id > after && !atTarget {
				ids = append(ids, id)
			}
		}
		sort.Strings(ids)
		out := []store.SecretRef{}
		for _, id := range ids {
			out = append(out, want[id])
		}
		return out
	}
	for _, backend := range []string{"vault", "local"} {
		for _, version := range []int{1, 2, 3, 4} {
			for _, limit := range []int{1, 3, 100} {
				target := store.KeyRef{Backend: backend, Version: version}
				t.Run(fmt.Sprintf("%s%d/limit%d", backend, version, limit), func(t *testing.T) {
					got := []store.SecretRef{}
					after := ""
					for pages := 0; ; pages++ {
						if pages > len(users)+1 {
							t.Fatalf("pagination does not end")
						}
						page, err := s.SecretsPage(ctxOf(t), after, target, limit)
						if err != nil {
							t.Fatalf("SecretsPage(%q, %v, %d): %v", after, target, limit, err)
						}
						if len(page) > limit {
							t.Fatalf("SecretsPage returned %d refs, limit %d", len(page), limit)
						}
						if len(page) == 0 {
							break
						}
						got = append(got, page...)
						after = page[len(page)-1].UserID
					}
					if w := expect(target, ""); !slices.Equal(got, w) {
						t.Errorf("pages = %v, want %v", got, w)
					}
				})
			}
		}
	}
	target := store.KeyRef{Backend: "vault", Version: 9}
	got, err := s.SecretsPage(ctxOf(t), "b", target, 100)
	if err != nil {
		t.Fatalf("SecretsPage: %v", err)
	}
	if w := expect(target, "b"); !slices.Equal(append([]store.SecretRef{}, got...), w) {
		t.Errorf("SecretsPage(after \"b\") = %v, want %v", got, w)
	}
}

func swapOne(t *testing.T, s store.Store, sw store.Swap) bool {
	t.Helper()
	n, err := s.SwapSecrets(ctxOf(t), []store.Swap{sw})
	if err != nil {
		t.Fatalf("SwapSecrets(%+v): %v", sw, err)
	}
	return n == 1
}

func testSwapSecrets(t *testing.T, h Harness) {
	s := h.Open(t)
	active := mustActive(t, s, "alice", hashes("a", 2))
	pending := mustStart(t, s, "bob", 1, t0)

	if n, err := s.SwapSecrets(ctxOf(t), nil); err != nil || n != 0 {
		t.Fatalf("SwapSecrets(nil) = %d, %v", n, err)
	}
	// One batch: two good swaps, a stale one, an unknown user and a
	// ciphertext that belongs to somebody else.
	n, err := s.SwapSecrets(ctxOf(t), []store.Swap{
		{UserID: "alice", Old: active.Ciphertext, New: "vault:v2:alice-rewrapped", Version: 2},
		{UserID: "nobody", Old: "x", New: "y", Version: 2},
		{UserID: "bob", Old: active.Ciphertext, New: "vault:v2:x", Version: 2},
		{UserID: "bob", Old: pending.Ciphertext, New: "vault:v2:bob-rewrapped", Version: 2},
		{UserID: "alice", Old: active.Ciphertext, New: "vault:v3:stale", Version: 3},
	})
	if err != nil || n != 2 {
		t.Fatalf("SwapSecrets = %d, %v; want 2", n, err)
	}
	got := mustGet(t, s, "alice")
	if got.Ciphertext != "vault:v2:alice-rewrapped" || got.KeyVersion != 2 || got.State != store.StateActive ||
		got.LastStep != active.LastStep || got.RecoveryRemaining != 2 {
		t.Errorf("after swap: %+v", got)
	}
	// Pending secrets are rewrapped too; the enrollment then confirms
	// against the new ciphertext.
	if got := mustGet(t, s, "bob"); got.State != store.StatePending || got.KeyVersion != 2 || got.Ciphertext != "vault:v2:bob-rewrapped" {
		t.Errorf("pending after swap: %+v", got)
	}
	if err := s.ConfirmEnrollment(ctxOf(t), "bob", "vault:v2:bob-rewrapped", 1, nil, t0); err != nil {
		t.Errorf("ConfirmEnrollment(rewrapped ciphertext): %v", err)
	}
}

func testSwapSecretsConcurrent(t *testing.T, h Harness) {
	s := h.Open(t)
	u := mustActive(t, s, "alice", nil)
	var swapped atomic.Int64
	concurrently(t, func(i int) error {
		n, err := s.SwapSecrets(ctxOf(t), []store.Swap{{UserID: "alice", Old: u.Ciphertext, New: fmt.Sprintf("vault:v2:writer-%d", i), Version: 2}})
		swapped.Add(int64(n))
		return err
	})
	if n := swapped.Load(); n != 1 {
		t.Fatalf("%d concurrent swaps of one row succeeded, want 1", n)
	}
}

func testSwapSecretAfterReenroll(t *testing.T, h Harness) {
	s := h.Open(t)
	first := mustStart(t, s, "alice", 1, t0)
	page, err := s.SecretsPage(ctxOf(t), "", store.KeyRef{Backend: "vault", Version: 2}, 10)
	if err != nil || len(page) != 1 || page[0].Ciphertext != first.Ciphertext {
		t.Fatalf("SecretsPage = %v, %v", page, err)
	}
	// The user starts again while the rewrap holds the old ciphertext.
	second := pendingUser("alice", 2, t0)
	second.Ciphertext = "vault:v2:newer-enrollment"
	if err := s.StartEnrollment(ctxOf(t), second); err != nil {
		t.Fatal(err)
	}
	if swapOne(t, s, store.Swap{UserID: "alice", Old: page[0].Ciphertext, New: "vault:v2:rewrapped-old", Version: 2}) {
		t.Fatal("SwapSecrets overwrote a newer enrollment")
	}
	if got := mustGet(t, s, "alice"); got.Ciphertext != second.Ciphertext {
		t.Errorf("rewrap overwrote a newer enrollment: %q", got.Ciphertext)
	}
}

// testBareBindings: rows written before namespaces (store.BindingBare)
// are told apart, counted, listed for the rewrap even at the current key,
// and leave the bare binding only through a swap or a new enrollment.
func testBareBindings(t *testing.T, h Harness) {
	s := h.Open(t)
	old := pendingUser("old", 2, t0)
	old.Binding = store.BindingBare
	if err := s.StartEnrollment(ctxOf(t), old); err != nil {
		t.Fatal(err)
	}
	if err := s.ConfirmEnrollment(ctxOf(t), "old", old.Ciphertext, 1, hashes("o", 1), t0); err != nil {
		t.Fatal(err)
	}
	mustStart(t, s, "new", 2, t0)
	if got := mustGet(t, s, "old"); got.Binding != store.BindingBare || got.BindTo() != "old" {
		t.Errorf("old row: binding %v, bound to %q", got.Binding, got.BindTo())
	}
	if got := mustGet(t, s, "new"); got.Binding != store.BindingUser || got.BindTo() != "user:new" {
		t.Errorf("new row: binding %v, bound to %q", got.Binding, got.BindTo())
	}
	bare := func() map[store.KeyRef]int {
		t.Helper()
		c, err := s.CountBareBindings(ctxOf(t))
		if err != nil {
			t.Fatalf("CountBareBindings: %v", err)
		}
		return c
	}
	if c := bare(); c[store.KeyRef{Backend: "vault", Version: 2}] != 1 || len(c) != 1 {
		t.Errorf("CountBareBindings = %v, want one at vault v2", c)
	}
	target := store.KeyRef{Backend: "vault", Version: 2}
	page, err := s.SecretsPage(ctxOf(t), "", target, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 1 || page[0].UserID != "old" || page[0].Binding != store.BindingBare || page[0].BindTo() != "old" {
		t.Fatalf("SecretsPage at the current key = %+v, want only the bare row", page)
	}
	if !swapOne(t, s, store.Swap{UserID: "old", Old: old.Ciphertext, New: "vault:v2:rebound", Version: 2, Binding: store.BindingUser}) {
		t.Fatal("swap of the bare row did not apply")
	}
	got := mustGet(t, s, "old")
	if got.Binding != store.BindingUser || got.Ciphertext != "vault:v2:rebound" || got.State != store.StateActive || got.RecoveryRemaining != 1 {
		t.Errorf("after the rebinding swap: %+v", got)
	}
	if c := bare(); len(c) != 0 {
		t.Errorf("CountBareBindings after the swap = %v, want none", c)
	}
	if page, err := s.SecretsPage(ctxOf(t), "", target, 10); err != nil || len(page) != 0 {
		t.Errorf("SecretsPage after the swap = %+v, %v; want empty", page, err)
	}
	// A new pending enrollment over a bare pending row takes the
	// binding it is written with.
	p := pendingUser("pend", 1, t0)
	p.Binding = store.BindingBare
	if err := s.StartEnrollment(ctxOf(t), p); err != nil {
		t.Fatal(err)
	}
	mustStart(t, s, "pend", 1, t0)
	if got := mustGet(t, s, "pend"); got.Binding != store.BindingUser {
		t.Errorf("re-enrolled pending row keeps binding %v", got.Binding)
	}
}

func testCountByKey(t *testing.T, h Harness) {
	s := h.Open(t)
	counts, err := s.CountByKey(ctxOf(t))
	if err != nil {
		t.Fatalf("CountByKey(empty): %v", err)
	}
	for k, n := range counts {
		if n != 0 {
			t.Errorf("empty store: CountByKey[%v] = %d", k, n)
		}
	}
	mustActive(t, s, "a", nil)  // vault v1 active
	mustStart(t, s, "b", 1, t0) // vault v1 pending
	mustStart(t, s, "c", 2, t0) // vault v2 pending
	u := mustActive(t, s, "d", nil)
	if !swapOne(t, s, store.Swap{UserID: "d", Old: u.Ciphertext, New: "vault:v3:d", Version: 3}) {
		t.Fatal("swap d")
	}
	e := mustActive(t, s, "e", nil)
	if !swapOne(t, s, store.Swap{UserID: "e", Old: e.Ciphertext, New: "local:v3:e", Version: 3}) {
		t.Fatal("swap e")
	}
	counts, err = s.CountByKey(ctxOf(t))
	if err != nil {
		t.Fatalf("CountByKey: %v", err)
	}
	want := map[store.KeyRef]int{{Backend: "vault", Version: 1}: 2, {Backend: "vault", Version: 2}: 1, {Backend: "vault", Version: 3}: 1, {Backend: "local", Version: 3}: 1}
	for k, n := range want {
		if counts[k] != n {
			t.Errorf("CountByKey[%v] = %d, want %d (all: %v)", k, counts[k], n, counts)
		}
	}
	for k, n := range counts {
		if _, ok := want[k]; !ok && n != 0 {
			t.Errorf("CountByKey[%v] = %d, want 0", k, n)
		}
	}
}

func testSwapSetting(t *testing.T, h Harness) {
	s := h.Open(t)
	if ok, err := s.SwapSetting(ctxOf(t), "k", []byte("a"), []byte("b")); err != nil || ok {
		t.Fatalf("SwapSetting(unknown) = %v, %v", ok, err)
	}
	if _, err := s.PutSettingIfAbsent(ctxOf(t), "k", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.SwapSetting(ctxOf(t), "k", []byte("stale"), []byte("x")); err != nil || ok {
		t.Fatalf("SwapSetting(stale) = %v, %v", ok, err)
	}
	var won atomic.Int64
	concurrently(t, func(i int) error {
		ok, err := s.SwapSetting(ctxOf(t), "k", []byte("v1"), []byte(fmt.Sprintf("v2-%d", i)))
		if ok {
			won.Add(1)
		}
		return err
	})
	if won.Load() != 1 {
		t.Fatalf("%d concurrent swaps won, want 1", won.Load())
	}
	if v, err := s.Setting(ctxOf(t), "k"); err != nil || !strings.HasPrefix(string(v), "v2-") {
		t.Fatalf("Setting after swap = %q, %v", v, err)
	}
}

func testJobLease(t *testing.T, h Harness) {
	s := h.Open(t)
	ctx := ctxOf(t)
	if _, err := s.GetJob(ctx, "rewrap"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetJob(unknown) = %v, want ErrNotFound", err)
	}
	j, ok, err := s.AcquireJob(ctx, "rewrap", "a", t0, t0.Add(time.Minute))
	if err != nil || !ok || j.Owner != "a" || len(j.State) != 0 {
		t.Fatalf("AcquireJob(a) = %+v, %v, %v", j, ok, err)
	}
	if err := s.UpdateJob(ctx, "rewrap", "a", []byte(`{"cursor":"m"}`), t0.Add(2*time.Minute)); err != nil {
		t.Fatalf("UpdateJob(a): %v", err)
	}
	j, ok, err = s.AcquireJob(ctx, "rewrap", "b", t0.Add(90*time.Second), t0.Add(3*time.Minute))
	if err != nil || ok || j.Owner != "a" {
		t.Fatalf("AcquireJob(b) while a holds it = %+v, %v, %v; want a to keep it", j, ok, err)
	}
	if err := s.UpdateJob(ctx, "rewrap", "b", []byte("x"), t0.Add(time.Hour)); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("UpdateJob by a non-holder = %v, want ErrConflict", err)
	}
	// a's lease runs out: b takes over and sees where a stopped.
	j, ok, err = s.AcquireJob(ctx, "rewrap", "b", t0.Add(3*time.Minute), t0.Add(4*time.Minute))
	if err != nil || !ok || j.Owner != "b" || string(j.State) != `{"cursor":"m"}` {
		t.Fatalf("AcquireJob(b) after expiry = %+v, %v, %v", j, ok, err)
	}
	if err := s.UpdateJob(ctx, "rewrap", "a", []byte("late"), t0.Add(time.Hour)); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("UpdateJob by the old holder = %v, want ErrConflict", err)
	}
	// Releasing (a lease end in the past) lets the next caller in at once.
	if err := s.UpdateJob(ctx, "rewrap", "b", []byte("done"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if j, err := s.GetJob(ctx, "rewrap"); err != nil || string(j.State) != "done" || j.Owner != "b" {
		t.Fatalf("GetJob = %+v, %v", j, err)
	}
	if _, ok, err := s.AcquireJob(ctx, "rewrap", "c", t0.Add(3*time.Minute), t0.Add(4*time.Minute)); err != nil || !ok {
		t.Fatalf("AcquireJob after release = %v, %v", ok, err)
	}
}

func testJobLeaseConcurrent(t *testing.T, h Harness) {
	s := h.Open(t)
	var won atomic.Int64
	concurrently(t, func(i int) error {
		_, ok, err := s.AcquireJob(ctxOf(t), "rewrap", fmt.Sprintf("owner-%d", i), t0, t0.Add(time.Minute))
		if ok {
			won.Add(1)
		}
		return err
	})
	if won.Load() != 1 {
		t.Fatalf("%d concurrent AcquireJob calls won, want 1", won.Load())
	}
}

func testCountByState(t *testing.T, h Harness) {
	s := h.Open(t)
	counts, err := s.CountByState(ctxOf(t))
	if err != nil {
		t.Fatalf("CountByState(empty): %v", err)
	}
	if counts[store.StatePending] != 0 || counts[store.StateActive] != 0 {
		t.Errorf("empty store: CountByState = %v", counts)
	}
	mustActive(t, s, "a", nil)
	mustActive(t, s, "b", nil)
	mustActive(t, s, "c", nil)
	mustStart(t, s, "d", 1, t0)
	mustStart(t, s, "e", 1, t0)
	if err := s.DeleteUser(ctxOf(t), "c"); err != nil {
		t.Fatal(err)
	}
	counts, err = s.CountByState(ctxOf(t))
	if err != nil {
		t.Fatalf("CountByState: %v", err)
	}
	if counts[store.StateActive] != 2 || counts[store.StatePending] != 2 {
		t.Errorf("CountByState = %v, want 2 active and 2 pending", counts)
	}
	for st, n := range counts {
		if st != store.StateActive && st != store.StatePending && n != 0 {
			t.Errorf("CountByState[%q] = %d", st, n)
		}
	}
}

// ---- durability ----

func testReopen(t *testing.T, h Harness) {
	if h.Reopen == nil {
		t.Skip("storetest: Harness.Reopen not set")
	}
	s := h.Open(t)
	ctx := ctxOf(t)
	mustActive(t, s, "alice", hashes("alice", 3))
	code := mustCodes(t, s, "alice")[0]
	if ok, err := spend(ctx, s, "alice", code.ID, t0); err != nil || !ok {
		t.Fatalf("SpendRecoveryCode = %v, %v", ok, err)
	}
	if ok, err := accept(ctx, s, "alice", 200, t0); err != nil || !ok {
		t.Fatalf("AcceptStep = %v, %v", ok, err)
	}
	mustActive(t, s, "bob", nil)
	for range limits.MaxFailures {
		mustFail(t, s, "bob", t0)
	}
	mustStart(t, s, "carol", 2, t0)
	c := challenge("one", t0)
	c.Enroll = true
	mustCreate(t, s, c)
	if err := s.SatisfyChallenge(ctx, c.IDHash, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutSettingIfAbsent(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}

	s = h.Reopen(t, s)
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping after reopen: %v", err)
	}
	a := mustGet(t, s, "alice")
	if a.State != store.StateActive || a.LastStep != 200 || a.RecoveryRemaining != 2 {
		t.Errorf("alice after reopen: %+v", a)
	}
	if ok, err := accept(ctx, s, "alice", 200, t0); err != nil || ok {
		t.Errorf("AcceptStep(used step) after reopen = %v, %v; want false", ok, err)
	}
	if ok, err := spend(ctx, s, "alice", code.ID, t0); err != nil || ok {
		t.Errorf("SpendRecoveryCode(spent) after reopen = %v, %v; want false", ok, err)
	}
	if at := mustSettle(t, s, "bob", store.Match{Step: 200}, t0.Add(time.Minute), limits); at.Allowed || !sameTime(at.LockedUntil, t0.Add(limits.LockFor)) {
		t.Errorf("bob's lock after reopen: %+v", at)
	}
	if u := mustGet(t, s, "carol"); u.State != store.StatePending || u.KeyVersion != 2 {
		t.Errorf("carol after reopen: %+v", u)
	}
	got, err := s.GetChallenge(ctx, c.IDHash, t0)
	want := c
	want.Satisfied = true
	if err != nil || !sameChallenge(got, want) {
		t.Errorf("challenge after reopen = %+v, %v; want %+v", got, err, want)
	}
	if v, err := s.Setting(ctx, "k"); err != nil || string(v) != "v" {
		t.Errorf("setting after reopen = %q, %v", v, err)
	}
}

// RunCrash runs only the crash subtest, for a harness whose Crash takes
// down more than the one store (a private database server).
func RunCrash(t *testing.T, h Harness) {
	t.Helper()
	testCrash(t, h)
}

// testCrash: whatever SettleAttempt answered survives a crash right after
// it: a counted failure or a lock is never forgotten, a spent step or
// recovery code never comes back. Concurrent attempts are included, since
// a store may settle them in one shared commit.
func testCrash(t *testing.T, h Harness) {
	if h.Crash == nil {
		t.Skip("storetest: Harness.Crash not set")
	}
	s := h.Open(t)
	ctx := ctxOf(t)
	mustActive(t, s, "alice", hashes("alice", 3))
	mustActive(t, s, "bob", nil)
	mustActive(t, s, "carol", hashes("carol", 2))
	mustActive(t, s, "dave", nil)
	code := mustCodes(t, s, "alice")[0]
	if r := mustSettle(t, s, "alice", store.Match{Step: 200}, t0, limits); !r.Accepted {
		t.Fatalf("accept step 200 = %+v", r)
	}
	if r := mustSettle(t, s, "alice", store.Match{RecoveryCodeID: code.ID}, t0, limits); !r.Accepted {
		t.Fatalf("spend recovery code = %+v", r)
	}
	for range limits.MaxFailures - 2 {
		mustFail(t, s, "bob", t0)
	}
	// Concurrently: carol's one code raced, dave's wrong codes raced, and
	// a step of alice's raced.
	carolCode := mustCodes(t, s, "carol")[0]
	var carolWins, daveCounted, aliceWins atomic.Int32
	race(3*Concurrency, func(i int) {
		var (
			r   store.Settled
			err error
		)
		switch i % 3 {
		case 0:
			r, err = s.SettleAttempt(ctx, "carol", store.Match{RecoveryCodeID: carolCode.ID}, t0, loose)
			if r.Accepted {
				carolWins.Add(1)
			}
		case 1:
			r, err = s.SettleAttempt(ctx, "dave", store.Match{}, t0, limits)
			if r.Allowed {
				daveCounted.Add(1)
			}
		default:
			r, err = s.SettleAttempt(ctx, "alice", store.Match{Step: 300}, t0, loose)
			if r.Accepted {
				aliceWins.Add(1)
			}
		}
		if err != nil {
			t.Errorf("SettleAttempt #%d: %v", i, err)
		}
	})
	if carolWins.Load() != 1 || aliceWins.Load() != 1 || int(daveCounted.Load()) != limits.MaxFailures {
		t.Fatalf("before the crash: carol's code spent %d times, alice's step %d times, %d of dave's failures counted; want 1, 1, %d",
			carolWins.Load(), aliceWins.Load(), daveCounted.Load(), limits.MaxFailures)
	}

	s = h.Crash(t, s)
	a := mustGet(t, s, "alice")
	if a.LastStep != 300 || a.RecoveryRemaining != 2 {
		t.Errorf("alice after the crash: LastStep %d RecoveryRemaining %d, want 300 and 2", a.LastStep, a.RecoveryRemaining)
	}
	for _, m := range []store.Match{{Step: 200}, {Step: 300}, {RecoveryCodeID: code.ID}} {
		if r := mustSettle(t, s, "alice", m, t0, loose); r.Accepted {
			t.Errorf("alice's spent %+v accepted again after the crash", m)
		}
	}
	if r := mustSettle(t, s, "carol", store.Match{RecoveryCodeID: carolCode.ID}, t0, loose); r.Accepted {
		t.Errorf("carol's spent recovery code accepted again after the crash")
	}
	if got := mustGet(t, s, "bob"); got.Failures != limits.MaxFailures-2 {
		t.Errorf("bob after the crash: Failures %d, want %d", got.Failures, limits.MaxFailures-2)
	}
	d := mustGet(t, s, "dave")
	if d.Failures != limits.MaxFailures || !sameTime(d.LockedUntil, t0.Add(limits.LockFor)) {
		t.Errorf("dave after the crash: Failures %d LockedUntil %v, want %d and %v", d.Failures, d.LockedUntil, limits.MaxFailures, t0.Add(limits.LockFor))
	}
	if r := mustSettle(t, s, "dave", store.Match{Step: 400}, t0.Add(time.Minute), limits); r.Allowed {
		t.Errorf("dave's valid step after the crash = %+v, want refused (locked)", r)
	}
	// Bob's count goes on where it was: two more failures lock him.
	mustFail(t, s, "bob", t0)
	if r := mustFail(t, s, "bob", t0); !r.LockStarted {
		t.Errorf("bob's %d-th failure, across the crash = %+v, want it to lock", limits.MaxFailures, r)
	}

	// And once more, right after the lock was set.
	s = h.Crash(t, s)
	if r := mustSettle(t, s, "bob", store.Match{Step: 400}, t0.Add(time.Minute), limits); r.Allowed || !sameTime(r.LockedUntil, t0.Add(limits.LockFor)) {
		t.Errorf("bob after the second crash = %+v, want locked until %v", r, t0.Add(limits.LockFor))
	}
}
