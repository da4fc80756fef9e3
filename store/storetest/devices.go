package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/totpgate/totpgate/store"
)

// deviceTTL is how long the suite's devices live.
const deviceTTL = 30 * 24 * time.Hour

// device is a trusted device of user named n, created at now.
func device(user, n string, now time.Time) store.TrustedDevice {
	return store.TrustedDevice{
		ID: user + "-dev-" + n, UserID: user, TokenHash: tokenHash(user, n, 0),
		Label: "Firefox on " + n, CreatedAt: now, LastUsedAt: now, ExpiresAt: now.Add(deviceTTL),
	}
}

// tokenHash stands for the keyed hash of the gen-th token of device n.
func tokenHash(user, n string, gen int) []byte {
	return fmt.Appendf(nil, "%s/%s/token-%d", user, n, gen)
}

func mustDevice(t *testing.T, s store.Store, d store.TrustedDevice) store.TrustedDevice {
	t.Helper()
	if err := s.CreateDevice(ctxOf(t), d); err != nil {
		t.Fatalf("CreateDevice(%s): %v", d.ID, err)
	}
	return d
}

func mustDevices(t *testing.T, s store.Store, user string, now time.Time) []store.TrustedDevice {
	t.Helper()
	ds, err := s.Devices(ctxOf(t), user, now)
	if err != nil {
		t.Fatalf("Devices(%s): %v", user, err)
	}
	return ds
}

func deviceIDs(ds []store.TrustedDevice) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}

// wantDevices checks that user's devices live at now are exactly ids, in order.
func wantDevices(t *testing.T, s store.Store, user string, now time.Time, why string, ids ...string) {
	t.Helper()
	if got := deviceIDs(mustDevices(t, s, user, now)); !slices.Equal(got, ids) && (len(got) > 0 || len(ids) > 0) {
		t.Errorf("%s: %s's devices = %v, want %v", why, user, got, ids)
	}
}

// wantNotRotated checks that tokenHash rotates nothing of user's at now.
func wantNotRotated(t *testing.T, s store.Store, user string, tokenHash []byte, now time.Time, why string) {
	t.Helper()
	if _, err := s.RotateDevice(ctxOf(t), user, tokenHash, []byte("never stored"), now); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RotateDevice (%s): err = %v, want ErrNotFound", why, err)
	}
}

func sameDevice(a, b store.TrustedDevice) bool {
	return a.ID == b.ID && a.UserID == b.UserID && string(a.TokenHash) == string(b.TokenHash) &&
		string(a.PrevHash) == string(b.PrevHash) && a.Label == b.Label && sameTime(a.CreatedAt, b.CreatedAt) &&
		sameTime(a.LastUsedAt, b.LastUsedAt) && sameTime(a.ExpiresAt, b.ExpiresAt)
}

func testDeviceCreateList(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", nil)
	mustActive(t, s, "bob", nil)
	a1 := mustDevice(t, s, device("alice", "1", t0))
	a2 := mustDevice(t, s, device("alice", "2", t0.Add(time.Second)))
	mustDevice(t, s, device("bob", "1", t0))
	got := mustDevices(t, s, "alice", t0.Add(time.Minute))
	if len(got) != 2 || !sameDevice(got[0], a1) || !sameDevice(got[1], a2) {
		t.Fatalf("Devices(alice) = %+v, want %+v and %+v, oldest first", got, a1, a2)
	}
	if got[0].PrevHash != nil {
		t.Errorf("new device PrevHash = %q, want nil", got[0].PrevHash)
	}
	wantDevices(t, s, "nobody", t0, "an unknown user")
	// Deadlines are exclusive: at ExpiresAt a device is gone.
	wantDevices(t, s, "alice", a1.ExpiresAt, "at the first one's expiry", a2.ID)
}

func testDeviceCreateConflicts(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", nil)
	mustStart(t, s, "pat", 1, t0)
	mustActive(t, s, "lou", nil)
	for range limits.MaxFailures {
		mustFail(t, s, "lou", t0)
	}
	d := mustDevice(t, s, device("alice", "1", t0))
	for name, c := range map[string]store.TrustedDevice{
		"pending user":    device("pat", "1", t0),
		"unknown user":    device("nobody", "1", t0),
		"locked user":     device("lou", "1", t0.Add(time.Minute)),
		"same id":         {ID: d.ID, UserID: "alice", TokenHash: []byte("other"), Label: "x", CreatedAt: t0, LastUsedAt: t0, ExpiresAt: d.ExpiresAt},
		"same token":      {ID: "alice-other", UserID: "alice", TokenHash: d.TokenHash, Label: "x", CreatedAt: t0, LastUsedAt: t0, ExpiresAt: d.ExpiresAt},
		"other user's id": {ID: d.ID, UserID: "lou", TokenHash: []byte("lou"), Label: "x", CreatedAt: t0.Add(time.Hour), LastUsedAt: t0, ExpiresAt: d.ExpiresAt},
	} {
		if err := s.CreateDevice(ctxOf(t), c); !errors.Is(err, store.ErrConflict) {
			t.Errorf("CreateDevice(%s): err = %v, want ErrConflict", name, err)
		}
	}
	// Once the lock is over, the user may trust a device again.
	mustDevice(t, s, device("lou", "2", t0.Add(limits.LockFor)))
	if ds := mustDevices(t, s, "alice", t0); !slices.Equal(deviceIDs(ds), []string{d.ID}) || !sameDevice(ds[0], d) {
		t.Errorf("Devices(alice) after the conflicts = %+v, want only %+v unchanged", ds, d)
	}
}

func testDeviceRotate(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", nil)
	mustActive(t, s, "bob", nil)
	d := mustDevice(t, s, device("alice", "1", t0))
	now := t0.Add(time.Hour)
	got, err := s.RotateDevice(ctxOf(t), "alice", tokenHash("alice", "1", 0), tokenHash("alice", "1", 1), now)
	if err != nil {
		t.Fatalf("RotateDevice: %v", err)
	}
	want := d
	want.TokenHash, want.PrevHash, want.LastUsedAt = tokenHash("alice", "1", 1), tokenHash("alice", "1", 0), now
	if !sameDevice(got, want) {
		t.Errorf("RotateDevice = %+v, want %+v", got, want)
	}
	if ds := mustDevices(t, s, "alice", now); len(ds) != 1 || !sameDevice(ds[0], want) {
		t.Errorf("Devices after rotation = %+v, want %+v", ds, want)
	}
	// The new token rotates again; another user never matches, and the
	// device is untouched by trying.
	wantNotRotated(t, s, "bob", tokenHash("alice", "1", 1), now, "bob, alice's token")
	wantNotRotated(t, s, "bob", tokenHash("alice", "1", 0), now, "bob, alice's rotated-away token")
	if _, err := s.RotateDevice(ctxOf(t), "alice", tokenHash("alice", "1", 1), tokenHash("alice", "1", 2), now.Add(time.Minute)); err != nil {
		t.Errorf("second RotateDevice: %v", err)
	}
	wantNotRotated(t, s, "alice", []byte("never issued"), now, "unknown token")
	// Expired: the live token no longer rotates (exclusive deadline).
	wantNotRotated(t, s, "alice", tokenHash("alice", "1", 2), d.ExpiresAt, "at expiry")
}

// A token rotated away and presented again (it was copied) revokes the
// device: the thief's copy and the owner's current token both die.
func testDeviceReuse(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", nil)
	mustDevice(t, s, device("alice", "1", t0))
	keep := mustDevice(t, s, device("alice", "2", t0))
	now := t0.Add(time.Hour)
	if _, err := s.RotateDevice(ctxOf(t), "alice", tokenHash("alice", "1", 0), tokenHash("alice", "1", 1), now); err != nil {
		t.Fatalf("RotateDevice: %v", err)
	}
	if _, err := s.RotateDevice(ctxOf(t), "alice", tokenHash("alice", "1", 0), []byte("x"), now); !errors.Is(err, store.ErrDeviceReused) {
		t.Fatalf("RotateDevice(rotated-away token): err = %v, want ErrDeviceReused", err)
	}
	wantNotRotated(t, s, "alice", tokenHash("alice", "1", 1), now, "current token after the reuse")
	wantNotRotated(t, s, "alice", tokenHash("alice", "1", 0), now, "rotated-away token again")
	wantDevices(t, s, "alice", now, "after the reuse", keep.ID)
}

// Two (or fifty) requests presenting the same token at once: exactly one
// rotates it, the others get ErrNotFound or ErrDeviceReused, never a
// second success.
func testDeviceRotateConcurrent(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", nil)
	mustDevice(t, s, device("alice", "1", t0))
	var wins atomic.Int64
	concurrently(t, func(i int) error {
		_, err := s.RotateDevice(ctxOf(t), "alice", tokenHash("alice", "1", 0), tokenHash("alice", "1", 100+i), t0.Add(time.Minute))
		switch {
		case err == nil:
			wins.Add(1)
		case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrDeviceReused):
		default:
			return err
		}
		return nil
	})
	if n := wins.Load(); n != 1 {
		t.Fatalf("%d concurrent uses of one token rotated it %d times, want exactly 1", Concurrency, n)
	}
}

func testDeviceDelete(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", nil)
	mustActive(t, s, "bob", nil)
	a1 := mustDevice(t, s, device("alice", "1", t0))
	a2 := mustDevice(t, s, device("alice", "2", t0))
	if _, err := s.DeleteDevice(ctxOf(t), "bob", a1.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteDevice(bob, alice's device): err = %v, want ErrNotFound", err)
	}
	got, err := s.DeleteDevice(ctxOf(t), "alice", a1.ID)
	if err != nil || !sameDevice(got, a1) {
		t.Fatalf("DeleteDevice = %+v, %v; want %+v", got, err, a1)
	}
	if _, err := s.DeleteDevice(ctxOf(t), "alice", a1.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second DeleteDevice: err = %v, want ErrNotFound", err)
	}
	wantNotRotated(t, s, "alice", a1.TokenHash, t0, "of a deleted device")
	wantDevices(t, s, "alice", t0, "after the delete", a2.ID)
}

func testDeviceDeleteOthers(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", nil)
	mustActive(t, s, "bob", nil)
	for _, n := range []string{"1", "2", "3"} {
		mustDevice(t, s, device("alice", n, t0))
	}
	old := device("alice", "old", t0)
	old.ExpiresAt = t0.Add(time.Minute) // expired at now below
	mustDevice(t, s, old)
	bob := mustDevice(t, s, device("bob", "1", t0))
	now := t0.Add(time.Hour)
	n, err := s.DeleteDevices(ctxOf(t), "alice", "alice-dev-2", now)
	if err != nil || n != 2 {
		t.Fatalf("DeleteDevices(alice, except 2) = %d, %v; want 2 (the expired one is not counted)", n, err)
	}
	wantDevices(t, s, "alice", t0, "after DeleteDevices (expired ones included)", "alice-dev-2")
	if n, err := s.DeleteDevices(ctxOf(t), "alice", "", now); err != nil || n != 1 {
		t.Errorf("DeleteDevices(alice, none spared) = %d, %v; want 1", n, err)
	}
	if n, err := s.DeleteDevices(ctxOf(t), "nobody", "", now); err != nil || n != 0 {
		t.Errorf("DeleteDevices(unknown) = %d, %v; want 0", n, err)
	}
	wantDevices(t, s, "bob", now, "another user's", bob.ID)
}

func testDeviceDeleteExpired(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", nil)
	short := device("alice", "short", t0)
	short.ExpiresAt = t0.Add(time.Minute)
	mustDevice(t, s, short)
	long := mustDevice(t, s, device("alice", "long", t0))
	n, err := s.DeleteExpiredDevices(ctxOf(t), short.ExpiresAt)
	if err != nil || n != 1 {
		t.Fatalf("DeleteExpiredDevices = %d, %v; want 1", n, err)
	}
	wantDevices(t, s, "alice", t0, "after the sweep", long.ID)
}

// Disabling MFA or an admin reset (DeleteUser) ends every device in the
// same transaction: after enrolling again the user has none.
func testDeviceDeleteUserRevokes(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", nil)
	mustActive(t, s, "bob", nil)
	mustDevice(t, s, device("alice", "1", t0))
	mustDevice(t, s, device("alice", "2", t0))
	mustDevice(t, s, device("bob", "1", t0))
	n, err := s.DeleteUser(ctxOf(t), "alice")
	if err != nil || n != 2 {
		t.Fatalf("DeleteUser = %d, %v; want 2 devices revoked", n, err)
	}
	mustActive(t, s, "alice", nil)
	wantDevices(t, s, "alice", t0, "re-enrolled")
	wantNotRotated(t, s, "alice", tokenHash("alice", "1", 0), t0, "old device of a re-enrolled user")
	if n, err := s.DeleteUser(ctxOf(t), "alice"); err != nil || n != 0 {
		t.Errorf("DeleteUser(no devices) = %d, %v; want 0", n, err)
	}
	if ds := mustDevices(t, s, "bob", t0); len(ds) != 1 {
		t.Errorf("bob's devices = %v, want his one", deviceIDs(ds))
	}
}

func testDeviceRecoveryReplaceRevokes(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", hashes("alice", 2))
	mustDevice(t, s, device("alice", "1", t0))
	n, err := s.ReplaceRecoveryCodes(ctxOf(t), "alice", hashes("fresh", 2), t0)
	if err != nil || n != 1 {
		t.Fatalf("ReplaceRecoveryCodes = %d, %v; want 1 device revoked", n, err)
	}
	wantDevices(t, s, "alice", t0, "after regenerating recovery codes")
	if n, err := s.ReplaceRecoveryCodes(ctxOf(t), "alice", hashes("again", 2), t0); err != nil || n != 0 {
		t.Errorf("ReplaceRecoveryCodes(no devices) = %d, %v; want 0", n, err)
	}
}

// The failure that starts a lockout deletes the user's devices in the
// same transaction, and says how many; the failures before it do not.
func testDeviceLockoutRevokes(t *testing.T, h Harness) {
	s := h.Open(t)
	mustActive(t, s, "alice", nil)
	mustActive(t, s, "bob", nil)
	mustDevice(t, s, device("alice", "1", t0))
	mustDevice(t, s, device("alice", "2", t0))
	mustDevice(t, s, device("bob", "1", t0))
	for i := range limits.MaxFailures - 1 {
		if r := mustFail(t, s, "alice", t0); r.DevicesRevoked != 0 || r.LockStarted {
			t.Fatalf("failure %d = %+v, want no lock and no device revoked", i+1, r)
		}
	}
	if ds := mustDevices(t, s, "alice", t0); len(ds) != 2 {
		t.Fatalf("devices before the lock = %v, want both", deviceIDs(ds))
	}
	r := mustFail(t, s, "alice", t0)
	if !r.LockStarted || r.DevicesRevoked != 2 {
		t.Fatalf("locking failure = %+v, want LockStarted and 2 devices revoked", r)
	}
	wantDevices(t, s, "alice", t0, "after the lock")
	if r := mustFail(t, s, "alice", t0); r.Allowed || r.DevicesRevoked != 0 {
		t.Errorf("attempt while locked = %+v, want refused, nothing revoked", r)
	}
	if ds := mustDevices(t, s, "bob", t0); len(ds) != 1 {
		t.Errorf("bob's devices = %v, want his one", deviceIDs(ds))
	}
}

// Devices trusted while the user is being reset or locked out never
// outlive it: whatever order the store puts the calls in, a device created
// before the revoking call is deleted by it, and one tried after it finds
// no active, unlocked user. So after a reset and a new enrollment, or
// after the lock, the user has no device.
func testDeviceCreateRacesRevocation(t *testing.T, h Harness) {
	revokers := map[string]func(s store.Store) error{
		"DeleteUser": func(s store.Store) error {
			_, err := s.DeleteUser(ctxOf(t), "alice")
			return err
		},
		"Lockout": func(s store.Store) error {
			_, err := s.SettleAttempt(ctxOf(t), "alice", store.Match{}, t0, store.Limits{MaxFailures: 1, Window: time.Hour, LockFor: time.Hour})
			return err
		},
	}
	for name, revoke := range revokers {
		t.Run(name, func(t *testing.T) {
			s := h.Open(t)
			mustActive(t, s, "alice", nil)
			concurrently(t, func(i int) error {
				if i == Concurrency/2 {
					return revoke(s)
				}
				if err := s.CreateDevice(ctxOf(t), device("alice", fmt.Sprint(i), t0)); err != nil && !errors.Is(err, store.ErrConflict) {
					return err
				}
				return nil
			})
			if name == "DeleteUser" {
				mustActive(t, s, "alice", nil)
			}
			if ds := mustDevices(t, s, "alice", t0); len(ds) != 0 {
				t.Errorf("after %s raced device creation, devices %v are alive", name, deviceIDs(ds))
			}
		})
	}
}
