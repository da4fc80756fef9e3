package proxy

import (
	"errors"
	"net/http"

	"github.com/totpgate/totpgate/audit"
	"github.com/totpgate/totpgate/internal/gatecookie"
	"github.com/totpgate/totpgate/mfa"
)

// Trusted devices at the login gate. A held answer of an enrolled user
// whose request carries no code but the gate's device cookie is released
// when that cookie holds the user's live device token: the token rotates
// and the new one goes out with the app's answer. Anything else (no
// device, another user's, expired, revoked, reused, the store or keyring
// down) leaves the login to the challenge: the second factor is still
// asked for, so the gate fails closed. Enrollment under the required
// policy is never skipped (a user with no second factor has no devices).

// passOnDevice releases held on a trusted device of the user and reports
// whether it did. r is the client's request (or, on any route, the request
// as the app got it, which leads back to the client's).
func (g *loginGate) passOnDevice(w http.ResponseWriter, r *http.Request, ev events, held mfa.HeldAnswer) bool {
	if g.opts.Devices == nil {
		return false
	}
	token := gatecookie.Value(inbound(r), gatecookie.Device)
	if token == "" {
		return false
	}
	next, d, err := g.opts.Devices.UseTrustedDevice(r.Context(), ev.user, token)
	switch {
	case err == nil:
		ev.record(audit.DeviceUsed, "", "login")
		ev.record(audit.LoginPassed, "", "trusted_device")
		held.Header = gatecookie.Added(held.Header, gatecookie.Device, next, d.MaxAge())
		ReleaseHeld(w, held)
		return true
	case errors.Is(err, mfa.ErrDeviceReused):
		// A copy of the token exists: the device is revoked; the cookie
		// the client holds is dead, so the challenge answer clears it.
		ev.record(audit.DeviceReuseDetected, "", "revoked")
		gatecookie.Clear(w.Header(), gatecookie.Device)
	case errors.Is(err, mfa.ErrDeviceNotTrusted):
		// Not this user's (a shared browser keeps another user's cookie:
		// it is left alone), or no longer trusted.
	default:
		g.log.WarnContext(r.Context(), "trusted device could not be checked; a second factor is asked for",
			"request_id", ev.requestID, "error", err.Error())
	}
	return false
}

// trustDevice remembers the device of a login whose code just passed and
// asked for it, and returns held with the device's cookie added. The
// login passes either way (the code was valid): when the device cannot be
// trusted (the feature is off, the store is down), it is just not
// remembered.
func (g *loginGate) trustDevice(r *http.Request, ev events, held mfa.HeldAnswer) mfa.HeldAnswer {
	if g.opts.Devices == nil || !g.opts.Devices.DevicesOn() {
		return held
	}
	token, d, err := g.opts.Devices.TrustDevice(r.Context(), ev.user, r.UserAgent(), gatecookie.Value(inbound(r), gatecookie.Device))
	if err != nil {
		g.log.WarnContext(r.Context(), "device not trusted: it could not be stored", "request_id", ev.requestID, "error", err.Error())
		return held
	}
	ev.record(audit.DeviceTrusted, "", "login")
	if d.Replaced {
		ev.record(audit.DeviceRevoked, "", "replaced")
	}
	held.Header = gatecookie.Added(held.Header, gatecookie.Device, token, d.MaxAge())
	return held
}
