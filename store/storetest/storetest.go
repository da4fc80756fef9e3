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
//   - A trusted device is live while now < ExpiresAt; CreateDevice counts a
//     user whose LockedUntil equals CreatedAt as not locked.
//   - A call whose context is cancelled returns an error that is neither
//     ErrNotFound nor ErrConflict (callers fail closed on it).
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
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

		{"Devices/CreateList", testDeviceCreateList},
		{"Devices/CreateConflicts", testDeviceCreateConflicts},
		{"Devices/Rotate", testDeviceRotate},
		{"Devices/Reuse", testDeviceReuse},
		{"Devices/RotateConcurrent", testDeviceRotateConcurrent},
		{"Devices/Delete", testDeviceDelete},
		{"Devices/DeleteOthers", testDeviceDeleteOthers},
		{"Devices/DeleteExpired", testDeviceDeleteExpired},
		{"Devices/DeleteUserRevokes", testDeviceDeleteUserRevokes},
		{"Devices/RecoveryReplaceRevokes", testDeviceRecoveryReplaceRevokes},
		{"Devices/LockoutRevokes", testDeviceLockoutRevokes},
		{"Devices/CreateRacesRevocation", testDeviceCreateRacesRevocation},

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
