package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/totpgate/totpgate/store"
)

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
