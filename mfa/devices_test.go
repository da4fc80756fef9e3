package mfa_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/totpgate/totpgate/keyring"
	"github.com/totpgate/totpgate/mfa"
	"github.com/totpgate/totpgate/store"
)

const firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"

func (e *env) trust(t *testing.T, user string) (string, mfa.Device) {
	t.Helper()
	token, d, err := e.svc.TrustDevice(context.Background(), user, firefox, "")
	if err != nil {
		t.Fatalf("TrustDevice(%s): %v", user, err)
	}
	return token, d
}

func (e *env) use(t *testing.T, user, token string) string {
	t.Helper()
	next, _, err := e.svc.UseTrustedDevice(context.Background(), user, token)
	if err != nil {
		t.Fatalf("UseTrustedDevice(%s): %v", user, err)
	}
	return next
}

func (e *env) notTrusted(t *testing.T, user, token, why string) {
	t.Helper()
	if _, _, err := e.svc.UseTrustedDevice(context.Background(), user, token); !errors.Is(err, mfa.ErrDeviceNotTrusted) {
		t.Errorf("UseTrustedDevice (%s): err = %v, want ErrDeviceNotTrusted", why, err)
	}
}

func TestTrustedDeviceRotates(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.enroll(t, "alice")
	token, d := e.trust(t, "alice")
	if len(token) != 43 || d.Label != firefox || d.ID == "" || !d.ExpiresAt.Equal(e.clock.Now().Add(30*24*time.Hour)) {
		t.Fatalf("TrustDevice = %q, %+v; want a 43-character token, the User-Agent as label and 30 days", token, d)
	}
	if d.MaxAge() != 30*24*time.Hour {
		t.Errorf("MaxAge of a new device = %v, want 30 days", d.MaxAge())
	}
	e.clock.Add(time.Hour)
	next, used, err := e.svc.UseTrustedDevice(ctx, "alice", token)
	if err != nil || next == token || len(next) != 43 || used.ID != d.ID || !used.LastUsedAt.Equal(e.clock.Now()) {
		t.Fatalf("UseTrustedDevice = %q, %+v, %v; want a new token for device %s used now", next, used, err, d.ID)
	}
	if used.MaxAge() != 30*24*time.Hour-time.Hour || !used.ExpiresAt.Equal(d.ExpiresAt) {
		t.Errorf("after a use: MaxAge %v ExpiresAt %v; want the expiry unchanged (a use does not extend it)", used.MaxAge(), used.ExpiresAt)
	}
	next = e.use(t, "alice", next)
	ds, err := e.svc.ListDevices(ctx, "alice", next)
	if err != nil || len(ds) != 1 || !ds[0].Current || ds[0].ID != d.ID {
		t.Fatalf("ListDevices = %+v, %v; want the one device, current", ds, err)
	}
	if ds, _ := e.svc.ListDevices(ctx, "alice", token); ds[0].Current {
		t.Errorf("a rotated-away token marks the device current")
	}
	// Only keyed hashes are stored: not the token, not a plain hash of it.
	rows, err := e.st.Devices(ctx, "alice", e.clock.Now())
	if err != nil || len(rows) != 1 {
		t.Fatal(rows, err)
	}
	for _, h := range [][]byte{rows[0].TokenHash, rows[0].PrevHash} {
		if bytes.Contains(h, []byte(next)) || bytes.Contains(h, []byte(token)) || len(h) != 32 {
			t.Errorf("stored hash %x holds a token or is no HMAC-SHA256", h)
		}
	}
}

// A token is bound to its user: another user presenting it is not
// trusted, and trying does not spend or revoke the owner's device.
func TestTrustedDeviceBoundToUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.enroll(t, "alice")
	e.enroll(t, "bob")
	token, _ := e.trust(t, "alice")
	e.notTrusted(t, "bob", token, "bob with alice's token")
	e.notTrusted(t, "carol", token, "a user without MFA with alice's token")
	next := e.use(t, "alice", token)
	e.notTrusted(t, "bob", token, "bob with alice's rotated-away token")
	e.use(t, "alice", next)
}

// A rotated-away token used again proves a copy: the device is revoked,
// so neither the copy nor the owner's current token passes any more.
func TestTrustedDeviceReuseRevokes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.enroll(t, "alice")
	stolen, _ := e.trust(t, "alice")
	other, _ := e.trust(t, "alice")
	current := e.use(t, "alice", stolen)
	if _, _, err := e.svc.UseTrustedDevice(ctx, "alice", stolen); !errors.Is(err, mfa.ErrDeviceReused) {
		t.Fatalf("reuse of a rotated-away token: err = %v, want ErrDeviceReused", err)
	}
	e.notTrusted(t, "alice", current, "the current token of the revoked device")
	e.notTrusted(t, "alice", stolen, "the stolen token again")
	e.use(t, "alice", other) // the user's other device is not touched
}

func TestTrustedDeviceExpires(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.enroll(t, "alice")
	token, d := e.trust(t, "alice")
	e.clock.Add(d.MaxAge() - time.Second)
	token = e.use(t, "alice", token)
	e.clock.Add(time.Second)
	e.notTrusted(t, "alice", token, "at the expiry")
	if n, err := e.svc.CountDevices(context.Background(), "alice"); err != nil || n != 0 {
		t.Errorf("CountDevices after the expiry = %d, %v; want 0", n, err)
	}
}

func TestTrustedDevicesOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.enroll(t, "alice")
	token, _ := e.trust(t, "alice")
	cfg := mfa.DefaultConfig()
	cfg.TrustedDeviceTTL = 0
	off, err := mfa.New(context.Background(), e.st, e.keys, cfg, e.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	if off.DevicesOn() {
		t.Error("DevicesOn with TTL 0")
	}
	if _, _, err := off.TrustDevice(context.Background(), "alice", firefox, ""); !errors.Is(err, mfa.ErrDevicesOff) {
		t.Errorf("TrustDevice with the feature off: err = %v, want ErrDevicesOff", err)
	}
	if _, _, err := off.UseTrustedDevice(context.Background(), "alice", token); !errors.Is(err, mfa.ErrDeviceNotTrusted) {
		t.Errorf("UseTrustedDevice with the feature off: err = %v, want ErrDeviceNotTrusted (a device stored before does not pass)", err)
	}
	cfg.TrustedDeviceTTL = -time.Second
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "trusted_device_ttl") {
		t.Errorf("Validate(negative TTL) = %v, want an error naming mfa.trusted_device_ttl", err)
	}
}

// Disabling MFA, an admin reset, regenerating recovery codes and the
// failure that starts a lockout each revoke every device, and say how many.
func TestTrustedDevicesRevokedWithTheSecondFactor(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		revoke func(e *env, secret []byte, codes []string) (int, error)
	}{
		{"disable", func(e *env, secret []byte, codes []string) (int, error) {
			return e.svc.Disable(ctx, "alice", codes[0])
		}},
		{"reset", func(e *env, secret []byte, codes []string) (int, error) { return e.svc.Reset(ctx, "alice") }},
		{"recovery codes regenerated", func(e *env, secret []byte, codes []string) (int, error) {
			_, n, err := e.svc.RegenerateRecoveryCodes(ctx, "alice", e.code(secret, 0))
			return n, err
		}},
		{"lockout", func(e *env, secret []byte, codes []string) (int, error) {
			for {
				_, err := e.svc.Verify(ctx, "alice", "000000")
				var ce *mfa.CodeError
				if !errors.As(err, &ce) {
					return 0, fmt.Errorf("wrong code: %w", err)
				}
				if ce.LockStarted {
					return ce.DevicesRevoked, e.svc.Unlock(ctx, "alice")
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			secret, codes := e.enroll(t, "alice")
			e.enroll(t, "bob")
			t1, _ := e.trust(t, "alice")
			t2, _ := e.trust(t, "alice")
			t2 = e.use(t, "alice", t2)
			bobs, _ := e.trust(t, "bob")
			n, err := tc.revoke(e, secret, codes)
			if err != nil || n != 2 {
				t.Fatalf("%s = %d, %v; want 2 devices revoked", tc.name, n, err)
			}
			if tc.name == "disable" || tc.name == "reset" {
				e.enroll(t, "alice") // a re-enrolled user finds no old device alive
			}
			e.notTrusted(t, "alice", t1, "first device after "+tc.name)
			e.notTrusted(t, "alice", t2, "second device after "+tc.name)
			e.use(t, "bob", bobs)
		})
	}
}

func TestRevokeDevices(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.enroll(t, "alice")
	e.enroll(t, "bob")
	t1, d1 := e.trust(t, "alice")
	t2, d2 := e.trust(t, "alice")
	t3, _ := e.trust(t, "alice")
	bobs, _ := e.trust(t, "bob")
	if _, err := e.svc.RevokeDevice(ctx, "bob", d1.ID, bobs); !errors.Is(err, mfa.ErrDeviceNotFound) {
		t.Errorf("bob revoking alice's device: err = %v, want ErrDeviceNotFound", err)
	}
	if cur, err := e.svc.RevokeDevice(ctx, "alice", d1.ID, t2); err != nil || cur {
		t.Errorf("RevokeDevice(another device) = %v, %v; want not current", cur, err)
	}
	e.notTrusted(t, "alice", t1, "revoked device")
	if cur, err := e.svc.RevokeDevice(ctx, "alice", d2.ID, t2); err != nil || !cur {
		t.Errorf("RevokeDevice(this device) = %v, %v; want current", cur, err)
	}
	if _, err := e.svc.RevokeDevice(ctx, "alice", d2.ID, t2); !errors.Is(err, mfa.ErrDeviceNotFound) {
		t.Errorf("RevokeDevice twice: err = %v, want ErrDeviceNotFound", err)
	}
	// Sign out every other device: the current one stays.
	t4, _ := e.trust(t, "alice")
	t5, _ := e.trust(t, "alice")
	if n, err := e.svc.RevokeOtherDevices(ctx, "alice", t4); err != nil || n != 2 {
		t.Fatalf("RevokeOtherDevices = %d, %v; want 2 (t3 and t5)", n, err)
	}
	e.notTrusted(t, "alice", t3, "other device")
	e.notTrusted(t, "alice", t5, "other device")
	t4 = e.use(t, "alice", t4)
	// Presenting no live token (or bob's) spares nothing.
	if n, err := e.svc.RevokeOtherDevices(ctx, "alice", bobs); err != nil || n != 1 {
		t.Errorf("RevokeOtherDevices with another user's token = %d, %v; want 1", n, err)
	}
	e.notTrusted(t, "alice", t4, "after revoking all")
	e.use(t, "bob", bobs)
}

// Two requests presenting one token at once: one passes, never both.
func TestTrustedDeviceConcurrentUse(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.enroll(t, "alice")
	token, _ := e.trust(t, "alice")
	var wins, errs atomic.Int64
	done := make(chan struct{})
	start := make(chan struct{})
	for range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			<-start
			_, _, err := e.svc.UseTrustedDevice(context.Background(), "alice", token)
			switch {
			case err == nil:
				wins.Add(1)
			case errors.Is(err, mfa.ErrDeviceNotTrusted), errors.Is(err, mfa.ErrDeviceReused):
			default:
				errs.Add(1)
			}
		}()
	}
	close(start)
	for range 8 {
		<-done
	}
	if wins.Load() != 1 || errs.Load() != 0 {
		t.Fatalf("8 concurrent uses of one token: %d passed, %d errors; want exactly 1 and 0", wins.Load(), errs.Load())
	}
}

func TestTrustedDeviceRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.enroll(t, "alice")
	token, _ := e.trust(t, "alice")
	for _, bad := range []string{"", "short", strings.Repeat("A", 42), strings.Repeat("=", 43), token + "x", strings.ToUpper(token[:5]) + token[5:] + "\x00"} {
		e.notTrusted(t, "alice", bad, fmt.Sprintf("malformed token %q", bad))
	}
	if _, _, err := e.svc.TrustDevice(ctx, "nobody", firefox, ""); !errors.Is(err, mfa.ErrNotEnrolled) {
		t.Errorf("TrustDevice(user without MFA): err = %v, want ErrNotEnrolled", err)
	}
	e.use(t, "alice", token)
}

// The device-token key comes from the keyring: while the keyring cannot
// open it, a device is refused (fail closed), never trusted.
func TestTrustedDeviceKeyringDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.enroll(t, "alice")
	token, _ := e.trust(t, "alice")
	down, err := mfa.New(context.Background(), e.st, downKeyring{}, mfa.DefaultConfig(), e.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := down.UseTrustedDevice(context.Background(), "alice", token); !errors.Is(err, mfa.ErrUnavailable) {
		t.Errorf("UseTrustedDevice with the keyring down: err = %v, want ErrUnavailable", err)
	}
	if _, _, err := down.TrustDevice(context.Background(), "alice", firefox, ""); !errors.Is(err, mfa.ErrUnavailable) {
		t.Errorf("TrustDevice with the keyring down: err = %v, want ErrUnavailable", err)
	}
	e.use(t, "alice", token) // nothing was spent
}

type downKeyring struct{}

func (downKeyring) Encrypt(context.Context, string, []byte) (string, error) {
	return "", keyring.ErrUnavailable
}
func (downKeyring) Decrypt(context.Context, string, string) ([]byte, error) {
	return nil, keyring.ErrUnavailable
}

// A store fault while spending a token fails closed.
func TestTrustedDeviceStoreDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.enroll(t, "alice")
	token, _ := e.trust(t, "alice")
	svc, err := mfa.New(context.Background(), &failingStore{Store: e.st, failRotate: true}, e.keys, mfa.DefaultConfig(), e.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.UseTrustedDevice(context.Background(), "alice", token); !errors.Is(err, mfa.ErrUnavailable) {
		t.Errorf("UseTrustedDevice with a failing store: err = %v, want ErrUnavailable", err)
	}
}

func TestDeviceLabel(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"", mfa.DefaultDeviceLabel},
		{"   \t ", mfa.DefaultDeviceLabel},
		{"\x00\x01\x7f", mfa.DefaultDeviceLabel},
		{firefox, firefox},
		{"  curl/8.5.0  ", "curl/8.5.0"},
		{"a\r\nSet-Cookie: x=1", "a Set-Cookie: x=1"},
		{"evil\u202e\u200btxt.exe", "evil txt.exe"},
		{"bad \xff utf-8", "bad utf-8"},
		{strings.Repeat("é", 200), strings.Repeat("é", 120)},
		{strings.Repeat("a", 119) + " b", strings.Repeat("a", 119)},
	} {
		if got := mfa.DeviceLabel(tc.in); got != tc.want {
			t.Errorf("DeviceLabel(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

var _ store.Store = (*failingStore)(nil)

// Trusting the browser again replaces its earlier device of the same
// user (its cookie is overwritten: nobody could use it again); another
// user's token in the request is left alone.
func TestTrustDeviceReplacesTheBrowsersDevice(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.enroll(t, "alice")
	e.enroll(t, "bob")
	old, _ := e.trust(t, "alice")
	bobs, _ := e.trust(t, "bob")

	fresh, d, err := e.svc.TrustDevice(ctx, "alice", firefox, old)
	if err != nil || !d.Replaced {
		t.Fatalf("trusting again with the old token: replaced %v, %v", d.Replaced, err)
	}
	e.notTrusted(t, "alice", old, "the replaced device")
	if ds, err := e.svc.ListDevices(ctx, "alice", fresh); err != nil || len(ds) != 1 || !ds[0].Current {
		t.Fatalf("alice's devices after the replacement: %+v %v", ds, err)
	}
	if _, d, err := e.svc.TrustDevice(ctx, "alice", firefox, bobs); err != nil || d.Replaced {
		t.Fatalf("trusting with another user's token: replaced %v, %v", d.Replaced, err)
	}
	e.use(t, "bob", bobs)
}
