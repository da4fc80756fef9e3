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
	if req.Body.Code == nil {
		// Codeless release belongs to in-login enrollment, not served yet.
		return nil, &outcome{status: http.StatusBadRequest, code: "validation_failed", detail: "code is required."}
	}
	answer, method, user, err := a.challenges.CompleteChallenge(ctx, req.Body.ChallengeId, *req.Body.Code, a.challengeCfg)
	if err != nil {
		a.record(ctx, audit.LoginFailed, user, outcomeName(err))
	} else {
		a.record(ctx, audit.LoginPassed, user, string(method))
		if method == mfa.MethodRecovery {
			a.record(ctx, audit.RecoveryCodeUsed, user, "challenge")
		}
	}
	if errors.Is(err, mfa.ErrChallengeNotFound) {
		return nil, &outcome{status: http.StatusNotFound, code: "challenge_not_found", detail: "This login challenge is unknown, expired or already used. Log in again."}
	}
	var ce *mfa.CodeError
	if errors.As(err, &ce) && !ce.Locked {
		return nil, &outcome{status: http.StatusUnauthorized, code: "mfa_invalid", detail: "The code is not valid. Check the time on your device and try again."}
	}
	if err != nil {
		return nil, mfaOutcome(err)
	}
	return heldAnswer{answer: answer, release: a.release}, nil
}
