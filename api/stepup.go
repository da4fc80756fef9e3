package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"net"
	"net/http"

	"github.com/totpgate/totpgate/audit"
	"github.com/totpgate/totpgate/gen"
	"github.com/totpgate/totpgate/internal/gatecookie"
	"github.com/totpgate/totpgate/mfa"
)

// StepUps is what the step-up completion needs of the mfa service.
type StepUps interface {
	CompleteStepUp(ctx context.Context, token, code string, session []byte, cc mfa.ChallengeConfig) (mfa.StepUp, error)
}

// StepUpGate is the gate's side of a step-up completion
// (proxy.StepUpForwarder): whose app session a call presents, and the one
// forward of a held request to the app.
type StepUpGate interface {
	// Session is the hash of the app session credentials r presents; ok
	// is false when it presents none, or one ambiguously.
	Session(r *http.Request) (hash []byte, ok bool)
	// Forward sends held to the app once and reads its answer, bounded.
	Forward(ctx context.Context, held mfa.HeldRequest) (mfa.HeldAnswer, error)
}

// sessionKey carries the completion call's session hash from the
// middleware to the operation; pageMarkKey the page's cookie.
type (
	sessionKey  struct{}
	pageMarkKey struct{}
)

// stepUpSession reads, before CompleteStepUp runs, which app session the
// call presents: only the session that made the held request may
// release it.
func (a *API) stepUpSession(f gen.StrictHandlerFunc, operationID string) gen.StrictHandlerFunc {
	if operationID != "CompleteStepUp" || a.stepUpGate == nil {
		return f
	}
	return func(ctx context.Context, w http.ResponseWriter, r *http.Request, req any) (any, error) {
		if h, ok := a.stepUpGate.Session(r); ok {
			ctx = context.WithValue(ctx, sessionKey{}, h)
		}
		ctx = context.WithValue(ctx, pageMarkKey{}, gatecookie.Value(r, gatecookie.StepUpNav))
		return f(ctx, w, r, req)
	}
}

// CompleteStepUp checks the code of a held step-up request and, on
// success, sends the request to the app once and answers what the app
// answered, with a proof cookie for the route's max_age.
func (a *API) CompleteStepUp(ctx context.Context, req gen.CompleteStepUpRequestObject) (gen.CompleteStepUpResponseObject, error) {
	if a.stepUps == nil || a.stepUpGate == nil {
		return nil, ErrNotImplemented
	}
	session, _ := ctx.Value(sessionKey{}).([]byte)
	if req.Params.XTotpgateStepUpPage != nil && !fromItsPage(ctx, req.Body.ChallengeId) {
		// The page, opened by a link rather than by the gate's 303: the
		// challenge may be someone else's request; it stays unspent.
		session = nil
	}
	up, err := a.stepUps.CompleteStepUp(ctx, req.Body.ChallengeId, req.Body.Code, session, a.challengeCfg)
	route := up.Request.Route
	if err != nil {
		a.recordStepUp(ctx, audit.StepUpFailed, up.User, route, outcomeName(err))
		var ce *mfa.CodeError
		if errors.As(err, &ce) && ce.LockStarted {
			a.recordStepUp(ctx, audit.LockoutStarted, up.User, route, "step_up")
		}
		if errors.As(err, &ce) && !ce.Locked {
			return gen.CompleteStepUp401ApplicationProblemPlusJSONResponse{MfaInvalidApplicationProblemPlusJSONResponse: challengeCodeInvalid(ctx, req.Body.ChallengeId, ce.Remaining)}, nil
		}
		switch rf := a.refuse(ctx, err); rf.kind {
		case refusedChallengeNotFound:
			rf.problem.Detail = ptr("This step-up challenge is unknown, expired or already used, or belongs to another session. Send the request again.")
			return gen.CompleteStepUp404ApplicationProblemPlusJSONResponse{ChallengeNotFoundApplicationProblemPlusJSONResponse: gen.ChallengeNotFoundApplicationProblemPlusJSONResponse(rf.problem)}, nil
		case refusedLocked:
			return gen.CompleteStepUp429ApplicationProblemPlusJSONResponse{MfaLockedApplicationProblemPlusJSONResponse: challengeLocked(rf)}, nil
		case refusedUnavailable:
			return gen.CompleteStepUp503ApplicationProblemPlusJSONResponse{MfaUnavailableApplicationProblemPlusJSONResponse: challengeUnavailable(rf)}, nil
		}
		return nil, err
	}
	a.recordStepUp(ctx, audit.StepUpPassed, up.User, route, string(up.Method))
	if up.Method == mfa.MethodRecovery {
		a.recordStepUp(ctx, audit.RecoveryCodeUsed, up.User, route, "step_up")
	}
	// The challenge is spent: the request goes to the app now or never.
	answer, err := a.stepUpGate.Forward(ctx, up.Request)
	if err != nil {
		a.recordStepUp(ctx, audit.StepUpRefused, up.User, route, "upstream_unavailable")
		m := metaOf(ctx)
		a.log.WarnContext(ctx, "step-up: the released request could not be sent to the app; it is not sent again",
			"request_id", m.requestID, "route", route, "error", err.Error())
		if timedOut(err) {
			return gen.CompleteStepUp504ApplicationProblemPlusJSONResponse{GatewayTimeoutApplicationProblemPlusJSONResponse: gen.GatewayTimeoutApplicationProblemPlusJSONResponse(
				problemAt(ctx, http.StatusGatewayTimeout, gen.ProblemCodeUpstreamTimeout, "The application did not answer in time. The request was sent at most once; check before sending it again."))}, nil
		}
		return gen.CompleteStepUp502ApplicationProblemPlusJSONResponse{BadGatewayApplicationProblemPlusJSONResponse: gen.BadGatewayApplicationProblemPlusJSONResponse(
			problemAt(ctx, http.StatusBadGateway, gen.ProblemCodeUpstreamUnavailable, "The application could not be reached. The request was sent at most once; check before sending it again."))}, nil
	}
	if answer.Header == nil {
		answer.Header = http.Header{}
	}
	answer.Header.Add("Set-Cookie", gatecookie.Setting(gatecookie.StepUp, up.Proof, up.Request.MaxAge))
	return heldAnswer{answer: answer, release: a.release}, nil
}

// recordStepUp records a step-up event under the configured step-up route
// it concerns (the operation's name when no route is known: the challenge
// was not found).
func (a *API) recordStepUp(ctx context.Context, name, user, route, outcome string) {
	m := metaOf(ctx)
	if route == "" {
		route = m.operation
	}
	a.audit.Record(ctx, audit.Event{Name: name, UserID: user, ClientIP: m.clientIP, Route: route, Outcome: outcome, RequestID: m.requestID})
}

// timedOut: the app did not answer in time.
func timedOut(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

func ptr[T any](v T) *T { return &v }

// fromItsPage reports whether the page's completion call carries the mark
// the gate's 303 to the page set for this challenge.
func fromItsPage(ctx context.Context, token string) bool {
	got, _ := ctx.Value(pageMarkKey{}).(string)
	want := mfa.PageMark(token)
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}
