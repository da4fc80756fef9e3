package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/totpgate/totpgate/store"
)

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

	// A chain in one batch applies as if one swap after the other: alice's
	// v2 → v3, then v3 → v4, counts two swaps.
	n, err = s.SwapSecrets(ctxOf(t), []store.Swap{
		{UserID: "alice", Old: "vault:v2:alice-rewrapped", New: "vault:v3:alice", Version: 3, Binding: store.BindingUser},
		{UserID: "alice", Old: "vault:v3:alice", New: "vault:v4:alice", Version: 4, Binding: store.BindingUser},
	})
	if err != nil || n != 2 {
		t.Fatalf("SwapSecrets(chain) = %d, %v; want 2", n, err)
	}
	if got := mustGet(t, s, "alice"); got.Ciphertext != "vault:v4:alice" || got.KeyVersion != 4 {
		t.Errorf("after chain: %+v", got)
	}

	// A long batch of swaps that match nothing, with one at its end that
	// does: that one is applied and counted once.
	var long []store.Swap
	for i := range 2500 {
		long = append(long, store.Swap{UserID: fmt.Sprintf("nobody-%04d", i), Old: "x", New: "y", Version: 5})
	}
	long = append(long, store.Swap{UserID: "alice", Old: "vault:v4:alice", New: "vault:v5:alice", Version: 5, Binding: store.BindingUser})
	if n, err := s.SwapSecrets(ctxOf(t), long); err != nil || n != 1 {
		t.Fatalf("SwapSecrets(2501 swaps) = %d, %v; want 1", n, err)
	}
	if got := mustGet(t, s, "alice"); got.Ciphertext != "vault:v5:alice" || got.KeyVersion != 5 {
		t.Errorf("after a long batch: %+v", got)
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
	if _, err := s.DeleteUser(ctxOf(t), "c"); err != nil {
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
