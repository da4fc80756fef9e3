package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/totpgate/totpgate/store"
)

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
	if _, err := s.ReplaceRecoveryCodes(ctxOf(t), "alice", fresh, t0.Add(time.Minute)); err != nil {
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
	if _, err := s.ReplaceRecoveryCodes(ctxOf(t), "alice", nil, t0); err != nil {
		t.Fatalf("ReplaceRecoveryCodes(nil): %v", err)
	}
	if got := mustGet(t, s, "alice"); got.RecoveryRemaining != 0 {
		t.Errorf("RecoveryRemaining after replacing with none = %d", got.RecoveryRemaining)
	}
}

func testRecoveryReplaceConflict(t *testing.T, h Harness) {
	s := h.Open(t)
	mustStart(t, s, "alice", 1, t0)
	if _, err := s.ReplaceRecoveryCodes(ctxOf(t), "alice", hashes("x", 2), t0); !errors.Is(err, store.ErrConflict) {
		t.Errorf("ReplaceRecoveryCodes(pending): err = %v, want ErrConflict", err)
	}
	if cs := mustCodes(t, s, "alice"); len(cs) != 0 {
		t.Errorf("pending user got %d codes", len(cs))
	}
	if _, err := s.ReplaceRecoveryCodes(ctxOf(t), "nobody", hashes("x", 2), t0); !errors.Is(err, store.ErrConflict) {
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
		if _, err := s.ReplaceRecoveryCodes(ctxOf(t), "alice", hashes(fmt.Sprintf("set%02d", i), 5), t0); err != nil {
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
