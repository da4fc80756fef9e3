package api

import (
	"context"
	"net/http"
	"time"

	"github.com/totpgate/totpgate/audit"
	"github.com/totpgate/totpgate/gen"
	"github.com/totpgate/totpgate/internal/gatecookie"
	"github.com/totpgate/totpgate/mfa"
	"github.com/totpgate/totpgate/store"
)

// Devices is what the trusted-device operations need of the mfa service
// (mfa/devices.go). The device a request comes from is the one its
// __Host-totpgate-device cookie names (meta.deviceToken).
type Devices interface {
	DevicesOn() bool
	TrustedDeviceTTL() time.Duration
	TrustDevice(ctx context.Context, user, userAgent, replacing string) (string, mfa.Device, error)
	ListDevices(ctx context.Context, user, currentToken string) ([]mfa.Device, error)
	CountDevices(ctx context.Context, user string) (int, error)
	RevokeDevice(ctx context.Context, user, id, currentToken string) (bool, error)
	RevokeOtherDevices(ctx context.Context, user, currentToken string) (int, error)
}

// noStoreHeader is the Cache-Control of every device answer.
const noStoreHeader = "no-store"

func (a *API) ListTrustedDevices(ctx context.Context, _ gen.ListTrustedDevicesRequestObject) (gen.ListTrustedDevicesResponseObject, error) {
	if a.devices == nil {
		return nil, ErrNotImplemented
	}
	ds, err := a.devices.ListDevices(ctx, caller(ctx).UserID, metaOf(ctx).deviceToken)
	if err != nil {
		if rf := a.refuse(ctx, err); rf.kind == refusedUnavailable {
			return gen.ListTrustedDevices503ApplicationProblemPlusJSONResponse{UnavailableApplicationProblemPlusJSONResponse: unavailableResponse(rf)}, nil
		}
		return nil, err
	}
	list := gen.TrustedDeviceList{Devices: make([]gen.TrustedDevice, len(ds))}
	for i, d := range ds {
		list.Devices[i] = trustedDevice(d)
	}
	return gen.ListTrustedDevices200JSONResponse{Body: list, Headers: gen.ListTrustedDevices200ResponseHeaders{CacheControl: noStoreHeader}}, nil
}

// TrustThisDevice trusts the device the request comes from, for the
// caller, after a code (TOTP or recovery, as a login that asks to remember
// the device takes): one answer of the self-service page's "Trust this
// browser". The code is checked only when the feature is on; a live
// device whose cookie the request carries is replaced.
func (a *API) TrustThisDevice(ctx context.Context, req gen.TrustThisDeviceRequestObject) (gen.TrustThisDeviceResponseObject, error) {
	if a.devices == nil {
		return nil, ErrNotImplemented
	}
	if !a.devices.DevicesOn() {
		return gen.TrustThisDevice404ApplicationProblemPlusJSONResponse{TrustedDevicesOffApplicationProblemPlusJSONResponse: gen.TrustedDevicesOffApplicationProblemPlusJSONResponse{
			Body:    problemAt(ctx, http.StatusNotFound, gen.ProblemCodeTrustedDevicesOff, "Trusted devices are turned off here."),
			Headers: gen.TrustedDevicesOffResponseHeaders{CacheControl: noStoreHeader}}}, nil
	}
	user := caller(ctx).UserID
	method, err := a.mfa.Verify(ctx, user, req.Body.Code)
	var token string
	var d mfa.Device
	if err == nil {
		if method == mfa.MethodRecovery {
			a.record(ctx, audit.RecoveryCodeUsed, user, "self_service")
		}
		token, d, err = a.devices.TrustDevice(ctx, user, metaOf(ctx).userAgent, metaOf(ctx).deviceToken)
	}
	if err != nil {
		a.recordFailure(ctx, audit.DeviceTrusted, user, err)
		switch rf := a.refuse(ctx, err); rf.kind {
		case refusedInvalidCode:
			return gen.TrustThisDevice403ApplicationProblemPlusJSONResponse{InvalidCodeApplicationProblemPlusJSONResponse: gen.InvalidCodeApplicationProblemPlusJSONResponse(rf.problem)}, nil
		case refusedNotEnrolled:
			return gen.TrustThisDevice409ApplicationProblemPlusJSONResponse{NotEnrolledApplicationProblemPlusJSONResponse: gen.NotEnrolledApplicationProblemPlusJSONResponse(rf.problem)}, nil
		case refusedLocked:
			return gen.TrustThisDevice429ApplicationProblemPlusJSONResponse{RateLimitedApplicationProblemPlusJSONResponse: lockedResponse(rf)}, nil
		case refusedUnavailable:
			return gen.TrustThisDevice503ApplicationProblemPlusJSONResponse{UnavailableApplicationProblemPlusJSONResponse: unavailableResponse(rf)}, nil
		}
		return nil, err
	}
	a.record(ctx, audit.DeviceTrusted, user, "self_service")
	a.recordReplaced(ctx, user, d)
	d.Current = true
	return gen.TrustThisDevice201JSONResponse{Body: trustedDevice(d),
		Headers: gen.TrustThisDevice201ResponseHeaders{CacheControl: noStoreHeader, SetCookie: gatecookie.Setting(gatecookie.Device, token, d.MaxAge())}}, nil
}

// recordReplaced audits the revocation of the browser's earlier device
// that trusting d replaced.
func (a *API) recordReplaced(ctx context.Context, user string, d mfa.Device) {
	if d.Replaced {
		a.recordRevoked(ctx, user, 1, "replaced")
	}
}

func trustedDevice(d mfa.Device) gen.TrustedDevice {
	return gen.TrustedDevice{Id: gen.DeviceId(d.ID), Label: d.Label, CreatedAt: d.CreatedAt.UTC(),
		LastUsedAt: d.LastUsedAt.UTC(), ExpiresAt: d.ExpiresAt.UTC(), Current: d.Current}
}

// devicePolicy is what a status answer says of the feature: on or off,
// and how long a device stays trusted (nil when off).
func (a *API) devicePolicy() (bool, *int) {
	if a.devices == nil || !a.devices.DevicesOn() {
		return false, nil
	}
	secs := int(a.devices.TrustedDeviceTTL() / time.Second)
	return true, &secs
}

func (a *API) RevokeTrustedDevice(ctx context.Context, req gen.RevokeTrustedDeviceRequestObject) (gen.RevokeTrustedDeviceResponseObject, error) {
	if a.devices == nil {
		return nil, ErrNotImplemented
	}
	user := caller(ctx).UserID
	current, err := a.devices.RevokeDevice(ctx, user, string(req.DeviceId), metaOf(ctx).deviceToken)
	if err != nil {
		switch rf := a.refuse(ctx, err); rf.kind {
		case refusedDeviceNotFound:
			return gen.RevokeTrustedDevice404ApplicationProblemPlusJSONResponse{DeviceNotFoundApplicationProblemPlusJSONResponse: gen.DeviceNotFoundApplicationProblemPlusJSONResponse{
				Body: rf.problem, Headers: gen.DeviceNotFoundResponseHeaders{CacheControl: noStoreHeader}}}, nil
		case refusedUnavailable:
			return gen.RevokeTrustedDevice503ApplicationProblemPlusJSONResponse{UnavailableApplicationProblemPlusJSONResponse: unavailableResponse(rf)}, nil
		}
		return nil, err
	}
	a.recordRevoked(ctx, user, 1, "user")
	out := gen.RevokeTrustedDevice204Response{Headers: gen.RevokeTrustedDevice204ResponseHeaders{CacheControl: noStoreHeader}}
	if current {
		clear := gatecookie.Cleared(gatecookie.Device)
		out.Headers.SetCookie = &clear
	}
	return out, nil
}

func (a *API) RevokeOtherTrustedDevices(ctx context.Context, _ gen.RevokeOtherTrustedDevicesRequestObject) (gen.RevokeOtherTrustedDevicesResponseObject, error) {
	if a.devices == nil {
		return nil, ErrNotImplemented
	}
	user := caller(ctx).UserID
	n, err := a.devices.RevokeOtherDevices(ctx, user, metaOf(ctx).deviceToken)
	if err != nil {
		if rf := a.refuse(ctx, err); rf.kind == refusedUnavailable {
			return gen.RevokeOtherTrustedDevices503ApplicationProblemPlusJSONResponse{UnavailableApplicationProblemPlusJSONResponse: unavailableResponse(rf)}, nil
		}
		return nil, err
	}
	a.recordRevoked(ctx, user, n, "others")
	return gen.RevokeOtherTrustedDevices200JSONResponse{Body: gen.DevicesRevoked{Revoked: n},
		Headers: gen.RevokeOtherTrustedDevices200ResponseHeaders{CacheControl: noStoreHeader}}, nil
}

// deviceCount is the user's live trusted devices for a status answer (nil
// without the feature; no store call for a user without MFA, who has none).
func (a *API) deviceCount(ctx context.Context, u store.User) (*int, error) {
	if a.devices == nil {
		return nil, nil
	}
	n := 0
	if u.State == store.StateActive {
		var err error
		if n, err = a.devices.CountDevices(ctx, u.ID); err != nil {
			return nil, err
		}
	}
	return &n, nil
}

// recordRevoked records that n devices of user were revoked, and why.
func (a *API) recordRevoked(ctx context.Context, user string, n int, why string) {
	if n > 0 {
		a.record(ctx, audit.DeviceRevoked, user, why)
	}
}

// trustOnChallenge trusts the device of a challenge whose code passed and
// asked for it, and returns answer with the device's cookie added. The
// login is released either way (the code was valid).
func (a *API) trustOnChallenge(ctx context.Context, user string, answer mfa.HeldAnswer) mfa.HeldAnswer {
	if a.devices == nil || !a.devices.DevicesOn() {
		return answer
	}
	token, d, err := a.devices.TrustDevice(ctx, user, metaOf(ctx).userAgent, metaOf(ctx).deviceToken)
	if err != nil {
		a.log.WarnContext(ctx, "device not trusted: it could not be stored", "request_id", metaOf(ctx).requestID, "error", err.Error())
		return answer
	}
	a.record(ctx, audit.DeviceTrusted, user, "challenge")
	a.recordReplaced(ctx, user, d)
	answer.Header = gatecookie.Added(answer.Header, gatecookie.Device, token, d.MaxAge())
	return answer
}
