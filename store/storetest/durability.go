package storetest

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/totpgate/totpgate/store"
)

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
