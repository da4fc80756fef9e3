package mfa

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"time"
	"unicode"

	"github.com/totpgate/totpgate/store"
)

// Trusted devices: after a second factor a user may ask the gate to
// remember the device (a browser). The device then holds a random 256-bit
// token in the gate's cookie; the store keeps only its keyed hash, bound to
// the user (HMAC over user and token), so a token works for its own user
// only and the database alone cannot make one. A later login of that user
// presenting a live token passes the second factor; every use replaces the
// token (rotation), and the token a use replaced, presented again, proves
// a copy exists: the device is revoked. Devices expire TTL after they were
// trusted (a use does not extend it), and disabling MFA, an admin reset,
// regenerating recovery codes and a lockout revoke them all.

// Expected outcomes of the device operations; check with errors.Is.
var (
	// ErrDeviceNotTrusted: the token is no live trusted device of this user
	// (unknown, expired, revoked, another user's, malformed), the user is
	// not active or locked, or the feature is off. A second factor is
	// still required.
	ErrDeviceNotTrusted = errors.New("mfa: device not trusted")
	// ErrDeviceReused: the token had been rotated away already and came
	// back; the device is revoked. A second factor is still required.
	ErrDeviceReused = errors.New("mfa: trusted-device token reused; device revoked")
	// ErrDevicesOff: trusted devices are turned off (mfa.trusted_device_ttl 0).
	ErrDevicesOff = errors.New("mfa: trusted devices are off")
	// ErrDeviceNotFound: the user has no device with that id.
	ErrDeviceNotFound = errors.New("mfa: no such device")
)

// Device is a trusted device as its user sees it (never its token).
type Device struct {
	ID, Label                        string
	CreatedAt, LastUsedAt, ExpiresAt time.Time
	// Current: the device whose token the caller presented.
	Current bool
	// Replaced (TrustDevice): the browser's earlier device of this user
	// was revoked for this one.
	Replaced bool
}

// MaxAge is how long the device's cookie should live from its last use
// (the moment its token was issued): until the device expires.
func (d Device) MaxAge() time.Duration { return d.ExpiresAt.Sub(d.LastUsedAt) }

// DefaultDeviceLabel names a device whose User-Agent says nothing.
const DefaultDeviceLabel = "unknown device"

// maxLabelRunes bounds a device label.
const maxLabelRunes = 120

// DeviceLabel makes a device label from a User-Agent header: printable
// characters only (anything else becomes a space), spaces collapsed,
// trimmed, at most 120 characters; DefaultDeviceLabel when nothing is left.
func DeviceLabel(userAgent string) string {
	words := strings.FieldsFunc(strings.ToValidUTF8(userAgent, " "), func(r rune) bool { return !unicode.IsPrint(r) || unicode.IsSpace(r) })
	label := strings.Join(words, " ")
	if r := []rune(label); len(r) > maxLabelRunes {
		label = strings.TrimSpace(string(r[:maxLabelRunes]))
	}
	if label == "" {
		return DefaultDeviceLabel
	}
	return label
}

// DevicesOn reports whether trusted devices are turned on.
func (s *Service) DevicesOn() bool { return s.cfg.TrustedDeviceTTL > 0 }

// TrustedDeviceTTL is how long a device stays trusted after it was
// trusted; 0 when the feature is off.
func (s *Service) TrustedDeviceTTL() time.Duration { return s.cfg.TrustedDeviceTTL }

// TrustDevice remembers a device of user, who has just given a second
// factor: it answers the new device's token (for the client's cookie
// only) and the device, labelled from userAgent. replacing is the device
// token the request carried ("" none): when it is a live device of user,
// that device is revoked (the browser's cookie is overwritten, so nobody
// could use it again; one browser, one device) and Device.Replaced says
// so. ErrDevicesOff when the feature is off; ErrNotEnrolled when the user
// is no longer active or is locked (a reset or lockout came in between).
func (s *Service) TrustDevice(ctx context.Context, user, userAgent, replacing string) (string, Device, error) {
	if !s.DevicesOn() {
		return "", Device{}, ErrDevicesOff
	}
	key, token, err := s.newDeviceToken(ctx)
	if err != nil {
		return "", Device{}, err
	}
	id, err := randomToken(16)
	if err != nil {
		return "", Device{}, unavailable("device id", err)
	}
	now := s.now()
	d := store.TrustedDevice{
		ID: id, UserID: user, TokenHash: deviceHash(key, user, token), Label: DeviceLabel(userAgent),
		CreatedAt: now, LastUsedAt: now, ExpiresAt: now.Add(s.cfg.TrustedDeviceTTL),
	}
	err = s.store.CreateDevice(ctx, d)
	if errors.Is(err, store.ErrConflict) {
		return "", Device{}, ErrNotEnrolled
	}
	if err != nil {
		return "", Device{}, unavailable("create device", err)
	}
	out := deviceOf(d)
	// The new device stands even when the old one cannot be revoked now:
	// its token is no longer in the browser, and it expires.
	out.Replaced, _ = s.revokeByToken(ctx, user, replacing)
	return token, out, nil
}

// revokeByToken revokes user's live device whose token is token, and
// reports whether there was one.
func (s *Service) revokeByToken(ctx context.Context, user, token string) (bool, error) {
	if !wellFormedToken(token) {
		return false, nil // no device token (a first trust): nothing to list
	}
	ds, err := s.ListDevices(ctx, user, token)
	if err != nil {
		return false, err
	}
	for _, d := range ds {
		if d.Current {
			if _, err := s.store.DeleteDevice(ctx, user, d.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
				return false, unavailable("replace device", err)
			}
			return true, nil
		}
	}
	return false, nil
}

// UseTrustedDevice lets a login of user pass on a trusted device: when
// token is the current token of a live device of user, and user is
// active and not locked, the token is spent and replaced, atomically; it
// answers the new token and the device. ErrDeviceNotTrusted otherwise
// (always when the feature is off); ErrDeviceReused when the token had
// been rotated away already (the device is revoked); ErrUnavailable when
// the store or keyring failed. Only a nil error passes the second factor.
func (s *Service) UseTrustedDevice(ctx context.Context, user, token string) (string, Device, error) {
	if !s.DevicesOn() || !wellFormedToken(token) {
		return "", Device{}, ErrDeviceNotTrusted
	}
	u, err := s.Status(ctx, user)
	if err != nil {
		return "", Device{}, err
	}
	now := s.now()
	if u.State != store.StateActive || u.LockedUntil.After(now) {
		return "", Device{}, ErrDeviceNotTrusted
	}
	key, next, err := s.newDeviceToken(ctx)
	if err != nil {
		return "", Device{}, err
	}
	d, err := s.store.RotateDevice(ctx, user, deviceHash(key, user, token), deviceHash(key, user, next), now)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return "", Device{}, ErrDeviceNotTrusted
	case errors.Is(err, store.ErrDeviceReused):
		return "", Device{}, ErrDeviceReused
	case err != nil:
		return "", Device{}, unavailable("rotate device", err)
	}
	return next, deviceOf(d), nil
}

// ListDevices lists the user's live devices, oldest first; the one whose
// token is currentToken ("" or malformed: none) is marked Current.
func (s *Service) ListDevices(ctx context.Context, user, currentToken string) ([]Device, error) {
	ds, err := s.store.Devices(ctx, user, s.now())
	if err != nil {
		return nil, unavailable("list devices", err)
	}
	out := make([]Device, len(ds))
	cur, err := s.currentHash(ctx, user, currentToken)
	if err != nil {
		return nil, err
	}
	for i, d := range ds {
		out[i] = deviceOf(d)
		out[i].Current = cur != nil && hmac.Equal(cur, d.TokenHash)
	}
	return out, nil
}

// CountDevices counts the user's live devices.
func (s *Service) CountDevices(ctx context.Context, user string) (int, error) {
	ds, err := s.ListDevices(ctx, user, "")
	return len(ds), err
}

// RevokeDevice revokes the user's device id and reports whether it was
// the one whose token is currentToken. ErrDeviceNotFound when the user
// has no such device.
func (s *Service) RevokeDevice(ctx context.Context, user, id, currentToken string) (bool, error) {
	d, err := s.store.DeleteDevice(ctx, user, id)
	if errors.Is(err, store.ErrNotFound) {
		return false, ErrDeviceNotFound
	}
	if err != nil {
		return false, unavailable("revoke device", err)
	}
	cur, err := s.currentHash(ctx, user, currentToken)
	if err != nil {
		return false, err
	}
	return cur != nil && hmac.Equal(cur, d.TokenHash), nil
}

// RevokeOtherDevices revokes every device of user but the one whose token
// is currentToken (none spared when it is no live device of theirs): "sign
// out every other device". It returns how many live devices went.
func (s *Service) RevokeOtherDevices(ctx context.Context, user, currentToken string) (int, error) {
	ds, err := s.ListDevices(ctx, user, currentToken)
	if err != nil {
		return 0, err
	}
	except := ""
	for _, d := range ds {
		if d.Current {
			except = d.ID
		}
	}
	n, err := s.store.DeleteDevices(ctx, user, except, s.now())
	if err != nil {
		return 0, unavailable("revoke devices", err)
	}
	return n, nil
}

// newDeviceToken makes a device token and returns it with the key its
// stored hash is made with.
func (s *Service) newDeviceToken(ctx context.Context) ([]byte, string, error) {
	key, err := s.subkey(ctx, purposeDeviceToken)
	if err != nil {
		return nil, "", err
	}
	token, err := randomToken(32)
	if err != nil {
		return nil, "", unavailable("device token", err)
	}
	return key, token, nil
}

// currentHash is the stored hash currentToken would have for user; nil
// when there is no well-formed token.
func (s *Service) currentHash(ctx context.Context, user, currentToken string) ([]byte, error) {
	if !wellFormedToken(currentToken) {
		return nil, nil
	}
	key, err := s.subkey(ctx, purposeDeviceToken)
	if err != nil {
		return nil, err
	}
	return deviceHash(key, user, currentToken), nil
}

// deviceHash is the stored form of a device token: HMAC-SHA256 under the
// device-token key over the user and the token, so a token is bound to
// its user.
func deviceHash(key []byte, user, token string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write([]byte(token))
	return m.Sum(nil)
}

func deviceOf(d store.TrustedDevice) Device {
	return Device{ID: d.ID, Label: d.Label, CreatedAt: d.CreatedAt, LastUsedAt: d.LastUsedAt, ExpiresAt: d.ExpiresAt}
}

// randomToken is n random bytes, base64url without padding.
func randomToken(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// wellFormedToken: 32 bytes of base64url without padding, as randomToken
// makes them; anything else is no device token (and costs no lookup).
func wellFormedToken(token string) bool {
	if len(token) != 43 {
		return false
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(token)
	return err == nil && len(b) == 32
}
