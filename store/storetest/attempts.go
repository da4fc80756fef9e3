package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/totpgate/totpgate/store"
)

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
