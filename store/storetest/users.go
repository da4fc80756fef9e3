package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/totpgate/totpgate/store"
)

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
	mustDevice(t, s, device("alice", "1", t0))
	if err := s.CreateDevice(ctx, device("alice", "2", t0)); err == nil || isSentinel(err) {
		t.Errorf("CreateDevice with cancelled ctx: err = %v, want a non-sentinel error", err)
	}
	if _, err := s.RotateDevice(ctx, "alice", tokenHash("alice", "1", 0), []byte("x"), t0); err == nil || isSentinel(err) || errors.Is(err, store.ErrDeviceReused) {
		t.Errorf("RotateDevice with cancelled ctx: err = %v, want a non-sentinel error", err)
	}
	if ds := mustDevices(t, s, "alice", t0); len(ds) != 1 || string(ds[0].TokenHash) != string(tokenHash("alice", "1", 0)) {
		t.Errorf("devices after cancelled calls = %+v, want device 1 unrotated", ds)
	}
	// Nothing changed.
	if u := mustGet(t, s, "alice"); u.LastStep != 100 || u.Failures != 0 || u.RecoveryRemaining != 2 {
		t.Errorf("after cancelled calls: LastStep %d Failures %d RecoveryRemaining %d, want 100, 0 and 2", u.LastStep, u.Failures, u.RecoveryRemaining)
	}
}

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

	if _, err := s.DeleteUser(ctxOf(t), "alice"); err != nil {
		t.Fatalf("DeleteUser: %v", err)
	}
	if _, err := s.GetUser(ctxOf(t), "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetUser after delete: err = %v, want ErrNotFound", err)
	}
	if cs := mustCodes(t, s, "alice"); len(cs) != 0 {
		t.Errorf("RecoveryCodes after delete = %d codes, want none", len(cs))
	}
	if _, err := s.DeleteUser(ctxOf(t), "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second DeleteUser: err = %v, want ErrNotFound", err)
	}
	if _, err := s.DeleteUser(ctxOf(t), "nobody"); !errors.Is(err, store.ErrNotFound) {
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
	if _, err := s.DeleteUser(ctxOf(t), "alice"); err != nil {
		t.Errorf("DeleteUser(pending or active): %v", err)
	}
	mustStart(t, s, "carol", 1, t0)
	if _, err := s.DeleteUser(ctxOf(t), "carol"); err != nil {
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
