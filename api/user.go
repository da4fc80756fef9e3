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

// outcome is an expected refusal (wrong code, locked, not enrolled...) with
// the status and code openapi.yaml declares for it; the response error
// handler renders it as problem+json.
type outcome struct {
	status     int
	code       gen.ProblemCode
	detail     string
	retryAfter time.Duration
	cause      error // logged, never answered
	wwwAuth    string
	ext        map[string]any // problem extension members the spec declares
}

func (o *outcome) Error() string { return string(o.code) }

// identityKey carries the caller's identity from the middleware to the handlers.
type identityKey struct{}

// needsIdentity lists the operations that act for a logged-in user.
var needsIdentity = map[string]bool{
	"GetStatus": true, "StartEnrollment": true, "ConfirmEnrollment": true,
	"DisableMfa": true, "RegenerateRecoveryCodes": true,
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

// mfaOutcome maps the service's errors to the spec's answers.
func mfaOutcome(err error) error {
	var ce *mfa.CodeError
	switch {
	case errors.As(err, &ce) && ce.Locked:
		return &outcome{status: http.StatusTooManyRequests, code: gen.ProblemCodeMfaLocked, detail: "Too many failed attempts. Try again later.", retryAfter: time.Until(ce.LockedUntil)}
	case errors.Is(err, mfa.ErrInvalidCode):
		return &outcome{status: http.StatusForbidden, code: gen.ProblemCodeMfaInvalid, detail: "The code is not valid. Check the time on your device and try again."}
	case errors.Is(err, mfa.ErrNotEnrolled):
		return &outcome{status: http.StatusConflict, code: gen.ProblemCodeNotEnrolled, detail: "Two-factor authentication is not on for this account."}
	case errors.Is(err, mfa.ErrAlreadyEnrolled):
		return &outcome{status: http.StatusConflict, code: gen.ProblemCodeAlreadyEnrolled, detail: "Two-factor authentication is already on. Disable it first to enroll again."}
	case errors.Is(err, mfa.ErrNotPending):
		return &outcome{status: http.StatusConflict, code: gen.ProblemCodeNotPending, detail: "There is no enrollment waiting for confirmation. Start again."}
	case errors.Is(err, mfa.ErrUnavailable):
		return &outcome{status: http.StatusServiceUnavailable, code: gen.ProblemCodeMfaUnavailable, detail: "Two-factor authentication is temporarily unavailable. Try again shortly.", retryAfter: 5 * time.Second, cause: err}
	}
	return err
}

func (a *API) GetStatus(ctx context.Context, _ gen.GetStatusRequestObject) (gen.GetStatusResponseObject, error) {
	u, err := a.mfa.Status(ctx, caller(ctx).UserID)
	if err != nil {
		return nil, mfaOutcome(err)
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
	return s, nil
}

func (a *API) StartEnrollment(ctx context.Context, _ gen.StartEnrollmentRequestObject) (gen.StartEnrollmentResponseObject, error) {
	who := caller(ctx)
	en, err := a.mfa.StartEnrollment(ctx, who.UserID, who.Account)
	if err != nil {
		return nil, mfaOutcome(err)
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
		return nil, mfaOutcome(err)
	}
	a.record(ctx, audit.EnrollConfirmed, user, "ok")
	return gen.ConfirmEnrollment200JSONResponse{RecoveryCodesIssuedJSONResponse: recoveryCodes(codes)}, nil
}

func (a *API) DisableMfa(ctx context.Context, req gen.DisableMfaRequestObject) (gen.DisableMfaResponseObject, error) {
	user := caller(ctx).UserID
	if err := a.mfa.Disable(ctx, user, req.Body.Code); err != nil {
		a.recordFailure(ctx, audit.Disabled, user, err)
		return nil, mfaOutcome(err)
	}
	a.record(ctx, audit.Disabled, user, "ok")
	return gen.DisableMfa204Response{}, nil
}

func (a *API) RegenerateRecoveryCodes(ctx context.Context, req gen.RegenerateRecoveryCodesRequestObject) (gen.RegenerateRecoveryCodesResponseObject, error) {
	user := caller(ctx).UserID
	codes, err := a.mfa.RegenerateRecoveryCodes(ctx, user, req.Body.Code)
	if err != nil {
		a.recordFailure(ctx, audit.RecoveryRegenerated, user, err)
		return nil, mfaOutcome(err)
	}
	a.record(ctx, audit.RecoveryRegenerated, user, "ok")
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
		return nil, mfaOutcome(err)
	}
	if u.State == store.StateNone {
		return nil, userNotFound()
	}
	return gen.AdminGetUser200JSONResponse{
		UserId: u.ID, State: gen.MfaState(u.State), KeyVersion: u.KeyVersion, Failures: u.Failures,
		RecoveryCodesRemaining: u.RecoveryRemaining, ConfirmedAt: timePtr(u.ConfirmedAt),
		LockedUntil: timePtr(u.LockedUntil), LastUsedAt: timePtr(u.LastUsedAt),
	}, nil
}

func (a *API) AdminResetUser(ctx context.Context, req gen.AdminResetUserRequestObject) (gen.AdminResetUserResponseObject, error) {
	if err := a.mfa.Reset(ctx, req.UserId); errors.Is(err, mfa.ErrNotEnrolled) {
		return nil, userNotFound()
	} else if err != nil {
		return nil, mfaOutcome(err)
	}
	a.record(ctx, audit.AdminReset, req.UserId, "ok")
	// Logins held for this user can no longer be released (there is no
	// second factor to give): end their app sessions now.
	if _, err := a.mfa.RevokeHeld(ctx, req.UserId, a.challengeCfg); err != nil {
		a.log.WarnContext(ctx, "revoking held logins after a reset failed", "error", err.Error())
	}
	return gen.AdminResetUser204Response{}, nil
}

func (a *API) AdminUnlockUser(ctx context.Context, req gen.AdminUnlockUserRequestObject) (gen.AdminUnlockUserResponseObject, error) {
	if err := a.mfa.Unlock(ctx, req.UserId); errors.Is(err, mfa.ErrNotEnrolled) {
		return nil, userNotFound()
	} else if err != nil {
		return nil, mfaOutcome(err)
	}
	a.record(ctx, audit.AdminUnlock, req.UserId, "ok")
	return gen.AdminUnlockUser204Response{}, nil
}

// outcomeName names a refusal for the audit log, bounded and code-free.
// recordFailure records a refused operation and, when that refusal locked
// the user, the start of the lockout.
func (a *API) recordFailure(ctx context.Context, name, user string, err error) {
	a.record(ctx, name, user, outcomeName(err))
	var ce *mfa.CodeError
	if errors.As(err, &ce) && ce.LockStarted {
		a.record(ctx, audit.LockoutStarted, user, "api")
	}
}

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

func userNotFound() error {
	return &outcome{status: http.StatusNotFound, code: gen.ProblemCodeUserNotFound, detail: "No MFA record for this user."}
}
