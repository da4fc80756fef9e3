package api

import (
	"context"

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
	TrustDevice(ctx context.Context, user, userAgent string) (string, mfa.Device, error)
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
		list.Devices[i] = gen.TrustedDevice{Id: gen.DeviceId(d.ID), Label: d.Label, CreatedAt: d.CreatedAt.UTC(),
			LastUsedAt: d.LastUsedAt.UTC(), ExpiresAt: d.ExpiresAt.UTC(), Current: d.Current}
	}
	return gen.ListTrustedDevices200JSONResponse{Body: list, Headers: gen.ListTrustedDevices200ResponseHeaders{CacheControl: noStoreHeader}}, nil
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
	token, d, err := a.devices.TrustDevice(ctx, user, metaOf(ctx).userAgent)
	if err != nil {
		a.log.WarnContext(ctx, "device not trusted: it could not be stored", "request_id", metaOf(ctx).requestID, "error", err.Error())
		return answer
	}
	a.record(ctx, audit.DeviceTrusted, user, "challenge")
	answer.Header = gatecookie.Added(answer.Header, gatecookie.Device, token, d.MaxAge())
	return answer
}
