package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/totpgate/totpgate/audit"
	"github.com/totpgate/totpgate/gen"
	"github.com/totpgate/totpgate/identity"
	"github.com/totpgate/totpgate/mfa"
	"github.com/totpgate/totpgate/problem"
	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/totp"
)

// outcome is a refusal made before any operation runs (the caller is not
// logged in, or the app cannot say who it is), the same for every user
// operation; the response error handler renders it as problem+json.
// Refusals of an operation itself are its typed responses (refusal.go).
type outcome struct {
	status int
	code   gen.ProblemCode
	detail string
}

func (o *outcome) Error() string { return string(o.code) }

// identityKey carries the caller's identity from the middleware to the handlers.
type identityKey struct{}

// needsIdentity lists the operations that act for a logged-in user.
var needsIdentity = map[string]bool{
	"GetStatus": true, "StartEnrollment": true, "ConfirmEnrollment": true,
	"DisableMfa": true, "RegenerateRecoveryCodes": true,
	"ListTrustedDevices": true, "TrustThisDevice": true, "RevokeTrustedDevice": true, "RevokeOtherTrustedDevices": true,
}

// identify asks the app who the caller is before an operation that needs it.
func (a *API) identifyCaller(f gen.StrictHandlerFunc, operationID string) gen.StrictHandlerFunc {
	if !needsIdentity[operationID] {
		return f
	}
	return func(ctx context.Context, w http.ResponseWriter, r *http.Request, req any) (any, error) {
		id, err := a.identify(ctx, r)
		switch {
		case errors.Is(err, identity.ErrUnauthenticated):
			w.Header().Set("WWW-Authenticate", `Bearer realm="app"`)
			return nil, &outcome{status: http.StatusUnauthorized, code: gen.ProblemCodeUnauthenticated, detail: "Log in to the application first."}
		case err != nil:
			a.log.WarnContext(ctx, "identity lookup failed", "request_id", problem.RequestID(r), "error", err.Error())
			return nil, &outcome{status: http.StatusBadGateway, code: gen.ProblemCodeUpstreamUnavailable, detail: "The application could not confirm who you are."}
		}
		return f(context.WithValue(ctx, identityKey{}, id), w, r, req)
	}
}

func caller(ctx context.Context) identity.Identity {
	id, _ := ctx.Value(identityKey{}).(identity.Identity)
	return id
}

func (a *API) GetStatus(ctx context.Context, _ gen.GetStatusRequestObject) (gen.GetStatusResponseObject, error) {
	u, err := a.mfa.Status(ctx, caller(ctx).UserID)
	if err != nil {
		if rf := a.refuse(ctx, err); rf.kind == refusedUnavailable {
			return gen.GetStatus503ApplicationProblemPlusJSONResponse{UnavailableApplicationProblemPlusJSONResponse: unavailableResponse(rf)}, nil
		}
		return nil, err
	}
	s := gen.GetStatus200JSONResponse{
		UserId:                 u.ID,
		State:                  gen.MfaState(u.State),
		Required:               a.required,
		RecoveryCodesRemaining: u.RecoveryRemaining,
		ConfirmedAt:            timePtr(u.ConfirmedAt),
	}
	if u.LockedUntil.After(time.Now()) {
		s.LockedUntil = timePtr(u.LockedUntil)
	}
	if u.State != store.StateNone {
		p := totpParams(totp.Params{Algorithm: u.Params.Algorithm, Digits: u.Params.Digits, Period: u.Params.Period})
		s.Totp = &p
	}
	s.TrustedDevicesEnabled, s.TrustedDeviceTtlSeconds = a.devicePolicy()
	if s.TrustedDevices, err = a.deviceCount(ctx, u); err != nil {
		if rf := a.refuse(ctx, err); rf.kind == refusedUnavailable {
			return gen.GetStatus503ApplicationProblemPlusJSONResponse{UnavailableApplicationProblemPlusJSONResponse: unavailableResponse(rf)}, nil
		}
		return nil, err
	}
	return s, nil
}

func (a *API) StartEnrollment(ctx context.Context, _ gen.StartEnrollmentRequestObject) (gen.StartEnrollmentResponseObject, error) {
	who := caller(ctx)
	en, err := a.mfa.StartEnrollment(ctx, who.UserID, who.Account)
	if err != nil {
		switch rf := a.refuse(ctx, err); rf.kind {
		case refusedAlreadyEnrolled:
			return gen.StartEnrollment409ApplicationProblemPlusJSONResponse{AlreadyEnrolledApplicationProblemPlusJSONResponse: gen.AlreadyEnrolledApplicationProblemPlusJSONResponse(rf.problem)}, nil
		case refusedUnavailable:
			return gen.StartEnrollment503ApplicationProblemPlusJSONResponse{UnavailableApplicationProblemPlusJSONResponse: unavailableResponse(rf)}, nil
		}
		return nil, err
	}
	a.record(ctx, audit.EnrollStarted, who.UserID, "ok")
	return gen.StartEnrollment201JSONResponse{EnrollmentStartedJSONResponse: enrollmentStarted(en)}, nil
}

// enrollmentStarted is the one answer that carries a secret; never cached.
func enrollmentStarted(en mfa.Enrollment) gen.EnrollmentStartedJSONResponse {
	return gen.EnrollmentStartedJSONResponse{
		Body: gen.EnrollmentStart{
			Secret: en.Secret, OtpauthUri: en.URI, QrPng: en.QRPNG,
			Totp: totpParams(en.Params), ExpiresAt: en.ExpiresAt,
		},
		Headers: gen.EnrollmentStartedResponseHeaders{CacheControl: "no-store"},
	}
}

func (a *API) ConfirmEnrollment(ctx context.Context, req gen.ConfirmEnrollmentRequestObject) (gen.ConfirmEnrollmentResponseObject, error) {
	user := caller(ctx).UserID
	codes, err := a.mfa.ConfirmEnrollment(ctx, user, req.Body.Code)
	if err != nil {
		a.recordFailure(ctx, audit.EnrollFailed, user, err)
		switch rf := a.refuse(ctx, err); rf.kind {
		case refusedInvalidCode:
			return gen.ConfirmEnrollment403ApplicationProblemPlusJSONResponse{InvalidCodeApplicationProblemPlusJSONResponse: gen.InvalidCodeApplicationProblemPlusJSONResponse(rf.problem)}, nil
		case refusedNotPending:
			return gen.ConfirmEnrollment409ApplicationProblemPlusJSONResponse{NotPendingApplicationProblemPlusJSONResponse: gen.NotPendingApplicationProblemPlusJSONResponse(rf.problem)}, nil
		case refusedLocked:
			return gen.ConfirmEnrollment429ApplicationProblemPlusJSONResponse{RateLimitedApplicationProblemPlusJSONResponse: lockedResponse(rf)}, nil
		case refusedUnavailable:
			return gen.ConfirmEnrollment503ApplicationProblemPlusJSONResponse{UnavailableApplicationProblemPlusJSONResponse: unavailableResponse(rf)}, nil
		}
		return nil, err
	}
	a.record(ctx, audit.EnrollConfirmed, user, "ok")
	return gen.ConfirmEnrollment200JSONResponse{RecoveryCodesIssuedJSONResponse: recoveryCodes(codes)}, nil
}

func (a *API) DisableMfa(ctx context.Context, req gen.DisableMfaRequestObject) (gen.DisableMfaResponseObject, error) {
	user := caller(ctx).UserID
	revoked, err := a.mfa.Disable(ctx, user, req.Body.Code)
	if err != nil {
		a.recordFailure(ctx, audit.Disabled, user, err)
		switch rf := a.refuse(ctx, err); rf.kind {
		case refusedInvalidCode:
			return gen.DisableMfa403ApplicationProblemPlusJSONResponse{InvalidCodeApplicationProblemPlusJSONResponse: gen.InvalidCodeApplicationProblemPlusJSONResponse(rf.problem)}, nil
		case refusedNotEnrolled:
			return gen.DisableMfa409ApplicationProblemPlusJSONResponse{NotEnrolledApplicationProblemPlusJSONResponse: gen.NotEnrolledApplicationProblemPlusJSONResponse(rf.problem)}, nil
		case refusedLocked:
			return gen.DisableMfa429ApplicationProblemPlusJSONResponse{RateLimitedApplicationProblemPlusJSONResponse: lockedResponse(rf)}, nil
		case refusedUnavailable:
			return gen.DisableMfa503ApplicationProblemPlusJSONResponse{UnavailableApplicationProblemPlusJSONResponse: unavailableResponse(rf)}, nil
		}
		return nil, err
	}
	a.record(ctx, audit.Disabled, user, "ok")
	a.recordRevoked(ctx, user, revoked, "disabled")
	return gen.DisableMfa204Response{}, nil
}

func (a *API) RegenerateRecoveryCodes(ctx context.Context, req gen.RegenerateRecoveryCodesRequestObject) (gen.RegenerateRecoveryCodesResponseObject, error) {
	user := caller(ctx).UserID
	codes, revoked, err := a.mfa.RegenerateRecoveryCodes(ctx, user, req.Body.Code)
	if err != nil {
		a.recordFailure(ctx, audit.RecoveryRegenerated, user, err)
		switch rf := a.refuse(ctx, err); rf.kind {
		case refusedInvalidCode:
			return gen.RegenerateRecoveryCodes403ApplicationProblemPlusJSONResponse{InvalidCodeApplicationProblemPlusJSONResponse: gen.InvalidCodeApplicationProblemPlusJSONResponse(rf.problem)}, nil
		case refusedNotEnrolled:
			return gen.RegenerateRecoveryCodes409ApplicationProblemPlusJSONResponse{NotEnrolledApplicationProblemPlusJSONResponse: gen.NotEnrolledApplicationProblemPlusJSONResponse(rf.problem)}, nil
		case refusedLocked:
			return gen.RegenerateRecoveryCodes429ApplicationProblemPlusJSONResponse{RateLimitedApplicationProblemPlusJSONResponse: lockedResponse(rf)}, nil
		case refusedUnavailable:
			return gen.RegenerateRecoveryCodes503ApplicationProblemPlusJSONResponse{UnavailableApplicationProblemPlusJSONResponse: unavailableResponse(rf)}, nil
		}
		return nil, err
	}
	a.record(ctx, audit.RecoveryRegenerated, user, "ok")
	a.recordRevoked(ctx, user, revoked, "recovery_regenerated")
	return gen.RegenerateRecoveryCodes200JSONResponse{RecoveryCodesIssuedJSONResponse: recoveryCodes(codes)}, nil
}

func recoveryCodes(codes []string) gen.RecoveryCodesIssuedJSONResponse {
	return gen.RecoveryCodesIssuedJSONResponse{
		Body:    gen.RecoveryCodes{RecoveryCodes: codes, GeneratedAt: time.Now().UTC()},
		Headers: gen.RecoveryCodesIssuedResponseHeaders{CacheControl: "no-store"},
	}
}

func totpParams(p totp.Params) gen.TotpParams {
	return gen.TotpParams{Algorithm: gen.TotpParamsAlgorithm(p.Algorithm), Digits: gen.TotpParamsDigits(p.Digits), Period: p.Period}
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func (a *API) AdminGetUser(ctx context.Context, req gen.AdminGetUserRequestObject) (gen.AdminGetUserResponseObject, error) {
	u, err := a.mfa.Status(ctx, req.UserId)
	if err != nil {
		if rf := a.refuse(ctx, err); rf.kind == refusedUnavailable {
			return gen.AdminGetUser503ApplicationProblemPlusJSONResponse{UnavailableApplicationProblemPlusJSONResponse: unavailableResponse(rf)}, nil
		}
		return nil, err
	}
	if u.State == store.StateNone {
		return gen.AdminGetUser404ApplicationProblemPlusJSONResponse{UserNotFoundApplicationProblemPlusJSONResponse: userNotFound(ctx)}, nil
	}
	devices, err := a.deviceCount(ctx, u)
	if err != nil {
		if rf := a.refuse(ctx, err); rf.kind == refusedUnavailable {
			return gen.AdminGetUser503ApplicationProblemPlusJSONResponse{UnavailableApplicationProblemPlusJSONResponse: unavailableResponse(rf)}, nil
		}
		return nil, err
	}
	return gen.AdminGetUser200JSONResponse{
		UserId: u.ID, State: gen.MfaState(u.State), KeyVersion: u.KeyVersion, Failures: u.Failures,
		RecoveryCodesRemaining: u.RecoveryRemaining, ConfirmedAt: timePtr(u.ConfirmedAt),
		LockedUntil: timePtr(u.LockedUntil), LastUsedAt: timePtr(u.LastUsedAt), TrustedDevices: devices,
	}, nil
}

func (a *API) AdminResetUser(ctx context.Context, req gen.AdminResetUserRequestObject) (gen.AdminResetUserResponseObject, error) {
	revoked, err := a.mfa.Reset(ctx, req.UserId)
	if err != nil {
		switch rf := a.refuse(ctx, err); rf.kind {
		case refusedNotEnrolled:
			return gen.AdminResetUser404ApplicationProblemPlusJSONResponse{UserNotFoundApplicationProblemPlusJSONResponse: userNotFound(ctx)}, nil
		case refusedUnavailable:
			return gen.AdminResetUser503ApplicationProblemPlusJSONResponse{UnavailableApplicationProblemPlusJSONResponse: unavailableResponse(rf)}, nil
		}
		return nil, err
	}
	a.record(ctx, audit.AdminReset, req.UserId, "ok")
	a.recordRevoked(ctx, req.UserId, revoked, "reset")
	// Logins held for this user can no longer be released (there is no
	// second factor to give): end their app sessions now.
	if _, err := a.mfa.RevokeHeld(ctx, req.UserId, a.challengeCfg); err != nil {
		a.log.WarnContext(ctx, "revoking held logins after a reset failed", "error", err.Error())
	}
	return gen.AdminResetUser204Response{}, nil
}

func (a *API) AdminUnlockUser(ctx context.Context, req gen.AdminUnlockUserRequestObject) (gen.AdminUnlockUserResponseObject, error) {
	if err := a.mfa.Unlock(ctx, req.UserId); err != nil {
		switch rf := a.refuse(ctx, err); rf.kind {
		case refusedNotEnrolled:
			return gen.AdminUnlockUser404ApplicationProblemPlusJSONResponse{UserNotFoundApplicationProblemPlusJSONResponse: userNotFound(ctx)}, nil
		case refusedUnavailable:
			return gen.AdminUnlockUser503ApplicationProblemPlusJSONResponse{UnavailableApplicationProblemPlusJSONResponse: unavailableResponse(rf)}, nil
		}
		return nil, err
	}
	a.record(ctx, audit.AdminUnlock, req.UserId, "ok")
	return gen.AdminUnlockUser204Response{}, nil
}

// recordFailure records a refused operation and, when that refusal locked
// the user, the start of the lockout.
func (a *API) recordFailure(ctx context.Context, name, user string, err error) {
	a.record(ctx, name, user, outcomeName(err))
	var ce *mfa.CodeError
	if errors.As(err, &ce) && ce.LockStarted {
		a.record(ctx, audit.LockoutStarted, user, "api")
		a.recordRevoked(ctx, user, ce.DevicesRevoked, "lockout")
	}
}

// outcomeName names a refusal for the audit log, bounded and code-free.
func outcomeName(err error) string {
	var ce *mfa.CodeError
	switch {
	case errors.As(err, &ce) && ce.Locked:
		return "locked"
	case errors.As(err, &ce) && ce.Replay:
		return "replay_refused"
	case errors.Is(err, mfa.ErrInvalidCode):
		return "invalid_code"
	case errors.Is(err, mfa.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, mfa.ErrChallengeNotFound):
		return "challenge_not_found"
	}
	return "refused"
}

func userNotFound(ctx context.Context) gen.UserNotFoundApplicationProblemPlusJSONResponse {
	return gen.UserNotFoundApplicationProblemPlusJSONResponse(problemAt(ctx, http.StatusNotFound, gen.ProblemCodeUserNotFound, "No MFA record for this user."))
}

func unavailableResponse(rf refusal) gen.UnavailableApplicationProblemPlusJSONResponse {
	return gen.UnavailableApplicationProblemPlusJSONResponse{Body: rf.problem, Headers: gen.UnavailableResponseHeaders{RetryAfter: rf.retryAfter}}
}

func lockedResponse(rf refusal) gen.RateLimitedApplicationProblemPlusJSONResponse {
	return gen.RateLimitedApplicationProblemPlusJSONResponse{Body: rf.problem, Headers: gen.RateLimitedResponseHeaders{RetryAfter: rf.retryAfter}}
}
