package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/totpgate/totpgate/audit"
	"github.com/totpgate/totpgate/gen"
	"github.com/totpgate/totpgate/mfa"
)

// Challenges is what the challenge endpoint needs of the mfa service.
type Challenges interface {
	CompleteChallenge(ctx context.Context, token, code string, cc mfa.ChallengeConfig) (mfa.HeldAnswer, mfa.Method, string, error)
	StartChallengeEnrollment(ctx context.Context, token string) (mfa.Enrollment, string, error)
	ConfirmChallengeEnrollment(ctx context.Context, token, code string, cc mfa.ChallengeConfig) ([]string, string, error)
}

// heldAnswer replays the app's answer (to a held login, or to a released
// step-up request) as the app gave it; the spec documents it as the 200 of
// completeChallenge and completeStepUp (the real status is the app's).
type heldAnswer struct {
	answer  mfa.HeldAnswer
	release func(http.ResponseWriter, mfa.HeldAnswer)
}

func (h heldAnswer) VisitCompleteChallengeResponse(w http.ResponseWriter) error {
	h.release(w, h.answer)
	return nil
}

// VisitCompleteStepUpResponse replays the app's answer to a released
// step-up request, documented as the 200 of completeStepUp.
func (h heldAnswer) VisitCompleteStepUpResponse(w http.ResponseWriter) error {
	h.release(w, h.answer)
	return nil
}

// CompleteChallenge is the second call of a two-call login.
func (a *API) CompleteChallenge(ctx context.Context, req gen.CompleteChallengeRequestObject) (gen.CompleteChallengeResponseObject, error) {
	if a.challenges == nil {
		return nil, ErrNotImplemented
	}
	code := ""
	if req.Body.Code != nil {
		code = *req.Body.Code
	}
	answer, method, user, err := a.challenges.CompleteChallenge(ctx, req.Body.ChallengeId, code, a.challengeCfg)
	if errors.Is(err, mfa.ErrCodeRequired) {
		return gen.CompleteChallenge400ApplicationProblemPlusJSONResponse{BadRequestApplicationProblemPlusJSONResponse: gen.BadRequestApplicationProblemPlusJSONResponse(
			problemAt(ctx, http.StatusBadRequest, gen.ProblemCodeValidationFailed, "code is required for this challenge."))}, nil
	}
	if err != nil {
		a.recordFailure(ctx, audit.LoginFailed, user, err)
	} else {
		a.record(ctx, audit.LoginPassed, user, string(method))
		if method == mfa.MethodRecovery {
			a.record(ctx, audit.RecoveryCodeUsed, user, "challenge")
		}
	}
	if err == nil {
		if req.Body.RememberDevice != nil && *req.Body.RememberDevice {
			answer = a.trustOnChallenge(ctx, user, answer)
		}
		return heldAnswer{answer: answer, release: a.release}, nil
	}
	var ce *mfa.CodeError
	if errors.As(err, &ce) && !ce.Locked {
		return gen.CompleteChallenge401ApplicationProblemPlusJSONResponse{MfaInvalidApplicationProblemPlusJSONResponse: challengeCodeInvalid(ctx, req.Body.ChallengeId, ce.Remaining)}, nil
	}
	switch rf := a.refuse(ctx, err); rf.kind {
	case refusedChallengeNotFound:
		return gen.CompleteChallenge404ApplicationProblemPlusJSONResponse{ChallengeNotFoundApplicationProblemPlusJSONResponse: gen.ChallengeNotFoundApplicationProblemPlusJSONResponse(rf.problem)}, nil
	case refusedLocked:
		return gen.CompleteChallenge429ApplicationProblemPlusJSONResponse{MfaLockedApplicationProblemPlusJSONResponse: challengeLocked(rf)}, nil
	case refusedUnavailable:
		return gen.CompleteChallenge503ApplicationProblemPlusJSONResponse{MfaUnavailableApplicationProblemPlusJSONResponse: challengeUnavailable(rf)}, nil
	}
	return nil, err
}

// StartChallengeEnrollment lets a user who must have MFA set it up inside
// the login (required policy).
func (a *API) StartChallengeEnrollment(ctx context.Context, req gen.StartChallengeEnrollmentRequestObject) (gen.StartChallengeEnrollmentResponseObject, error) {
	en, user, err := a.challenges.StartChallengeEnrollment(ctx, req.Body.ChallengeId)
	if err != nil {
		switch rf := a.refuse(ctx, err); rf.kind {
		case refusedChallengeNotFound:
			return gen.StartChallengeEnrollment404ApplicationProblemPlusJSONResponse{ChallengeNotFoundApplicationProblemPlusJSONResponse: gen.ChallengeNotFoundApplicationProblemPlusJSONResponse(rf.problem)}, nil
		case refusedAlreadyEnrolled:
			return gen.StartChallengeEnrollment409ApplicationProblemPlusJSONResponse{AlreadyEnrolledApplicationProblemPlusJSONResponse: gen.AlreadyEnrolledApplicationProblemPlusJSONResponse(rf.problem)}, nil
		case refusedLocked:
			return gen.StartChallengeEnrollment429ApplicationProblemPlusJSONResponse{MfaLockedApplicationProblemPlusJSONResponse: challengeLocked(rf)}, nil
		case refusedUnavailable:
			return gen.StartChallengeEnrollment503ApplicationProblemPlusJSONResponse{MfaUnavailableApplicationProblemPlusJSONResponse: challengeUnavailable(rf)}, nil
		}
		return nil, err
	}
	a.record(ctx, audit.EnrollStarted, user, "in_login")
	return gen.StartChallengeEnrollment201JSONResponse{EnrollmentStartedJSONResponse: enrollmentStarted(en)}, nil
}

// ConfirmChallengeEnrollment turns MFA on inside the login and answers the
// recovery codes; the client then releases the login with the challenge id alone.
func (a *API) ConfirmChallengeEnrollment(ctx context.Context, req gen.ConfirmChallengeEnrollmentRequestObject) (gen.ConfirmChallengeEnrollmentResponseObject, error) {
	codes, user, err := a.challenges.ConfirmChallengeEnrollment(ctx, req.Body.ChallengeId, req.Body.Code, a.challengeCfg)
	if err != nil {
		a.recordFailure(ctx, audit.EnrollFailed, user, err)
		var ce *mfa.CodeError
		if errors.As(err, &ce) && !ce.Locked {
			return gen.ConfirmChallengeEnrollment401ApplicationProblemPlusJSONResponse{MfaInvalidApplicationProblemPlusJSONResponse: challengeCodeInvalid(ctx, req.Body.ChallengeId, -1)}, nil
		}
		switch rf := a.refuse(ctx, err); rf.kind {
		case refusedChallengeNotFound:
			return gen.ConfirmChallengeEnrollment404ApplicationProblemPlusJSONResponse{ChallengeNotFoundApplicationProblemPlusJSONResponse: gen.ChallengeNotFoundApplicationProblemPlusJSONResponse(rf.problem)}, nil
		case refusedNotPending:
			return gen.ConfirmChallengeEnrollment409ApplicationProblemPlusJSONResponse{NotPendingApplicationProblemPlusJSONResponse: gen.NotPendingApplicationProblemPlusJSONResponse(rf.problem)}, nil
		case refusedLocked:
			return gen.ConfirmChallengeEnrollment429ApplicationProblemPlusJSONResponse{MfaLockedApplicationProblemPlusJSONResponse: challengeLocked(rf)}, nil
		case refusedUnavailable:
			return gen.ConfirmChallengeEnrollment503ApplicationProblemPlusJSONResponse{MfaUnavailableApplicationProblemPlusJSONResponse: challengeUnavailable(rf)}, nil
		}
		return nil, err
	}
	a.record(ctx, audit.EnrollConfirmed, user, "in_login")
	return gen.ConfirmChallengeEnrollment200JSONResponse{RecoveryCodesIssuedJSONResponse: recoveryCodes(codes)}, nil
}

// challengeCodeInvalid is the wrong-code answer of a challenge, with what
// the spec's MfaInvalid declares: the challenge id and the attempts left
// (0: the challenge is gone, log in again; -1: not known, left out). The
// challenge stays usable, so WWW-Authenticate names it again.
func challengeCodeInvalid(ctx context.Context, token string, remaining int) gen.MfaInvalidApplicationProblemPlusJSONResponse {
	body := loginProblem(problemAt(ctx, http.StatusUnauthorized, gen.ProblemCodeMfaInvalid, "The code is not valid. Check the time on your device and try again."))
	id := gen.ChallengeId(token)
	body.ChallengeId = &id
	if remaining >= 0 {
		body.AttemptsRemaining = &remaining
	}
	return gen.MfaInvalidApplicationProblemPlusJSONResponse{Body: body, Headers: gen.MfaInvalidResponseHeaders{
		CacheControl: "no-store", WWWAuthenticate: `TOTP realm="totpgate", challenge="` + token + `"`,
	}}
}

func challengeLocked(rf refusal) gen.MfaLockedApplicationProblemPlusJSONResponse {
	return gen.MfaLockedApplicationProblemPlusJSONResponse{Body: loginProblem(rf.problem), Headers: gen.MfaLockedResponseHeaders{CacheControl: "no-store", RetryAfter: rf.retryAfter}}
}

func challengeUnavailable(rf refusal) gen.MfaUnavailableApplicationProblemPlusJSONResponse {
	return gen.MfaUnavailableApplicationProblemPlusJSONResponse{Body: loginProblem(rf.problem), Headers: gen.MfaUnavailableResponseHeaders{CacheControl: "no-store", RetryAfter: &rf.retryAfter}}
}
