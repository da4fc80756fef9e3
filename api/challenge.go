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

// heldAnswer replays the app's login answer as the app gave it; the spec
// documents it as the 200 of completeChallenge (the real status is the app's).
type heldAnswer struct {
	answer  mfa.HeldAnswer
	release func(http.ResponseWriter, mfa.HeldAnswer)
}

func (h heldAnswer) VisitCompleteChallengeResponse(w http.ResponseWriter) error {
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
		return nil, &outcome{status: http.StatusBadRequest, code: gen.ProblemCodeValidationFailed, detail: "code is required for this challenge."}
	}
	if err != nil {
		a.recordFailure(ctx, audit.LoginFailed, user, err)
	} else {
		a.record(ctx, audit.LoginPassed, user, string(method))
		if method == mfa.MethodRecovery {
			a.record(ctx, audit.RecoveryCodeUsed, user, "challenge")
		}
	}
	if errors.Is(err, mfa.ErrChallengeNotFound) {
		return nil, &outcome{status: http.StatusNotFound, code: gen.ProblemCodeChallengeNotFound, detail: "This login challenge is unknown, expired or already used. Log in again."}
	}
	var ce *mfa.CodeError
	if errors.As(err, &ce) && !ce.Locked {
		return nil, challengeCodeInvalid(req.Body.ChallengeId, ce.Remaining)
	}
	if err != nil {
		return nil, mfaOutcome(err)
	}
	return heldAnswer{answer: answer, release: a.release}, nil
}

// StartChallengeEnrollment lets a user who must have MFA set it up inside
// the login (required policy).
func (a *API) StartChallengeEnrollment(ctx context.Context, req gen.StartChallengeEnrollmentRequestObject) (gen.StartChallengeEnrollmentResponseObject, error) {
	en, user, err := a.challenges.StartChallengeEnrollment(ctx, req.Body.ChallengeId)
	if err != nil {
		return nil, challengeOutcome(err)
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
			return nil, challengeCodeInvalid(req.Body.ChallengeId, -1)
		}
		return nil, challengeOutcome(err)
	}
	a.record(ctx, audit.EnrollConfirmed, user, "in_login")
	return gen.ConfirmChallengeEnrollment200JSONResponse{RecoveryCodesIssuedJSONResponse: recoveryCodes(codes)}, nil
}

func challengeOutcome(err error) error {
	switch {
	case errors.Is(err, mfa.ErrChallengeNotFound), errors.Is(err, mfa.ErrNotEnrollChallenge):
		return &outcome{status: http.StatusNotFound, code: gen.ProblemCodeChallengeNotFound, detail: "This login challenge is unknown, expired or already used. Log in again."}
	}
	return mfaOutcome(err)
}

// challengeCodeInvalid is the 401 for a wrong code on a live challenge; the
// challenge stays usable, so WWW-Authenticate names it again.
// challengeCodeInvalid is the wrong-code answer of a challenge, with what
// the spec's MfaInvalid declares: the challenge id and the attempts left
// (0: the challenge is gone, log in again; -1: not known, left out).
func challengeCodeInvalid(token string, remaining int) error {
	ext := map[string]any{"challenge_id": token}
	if remaining >= 0 {
		ext["attempts_remaining"] = remaining
	}
	return &outcome{status: http.StatusUnauthorized, code: gen.ProblemCodeMfaInvalid,
		detail:  "The code is not valid. Check the time on your device and try again.",
		wwwAuth: `TOTP realm="totpgate", challenge="` + token + `"`, ext: ext}
}
