package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/totpgate/totpgate/gen"
	"github.com/totpgate/totpgate/mfa"
	"github.com/totpgate/totpgate/problem"
)

// A refusal is an expected "no" of the second-factor service (wrong code,
// locked, not enrolled, store or keyring down), classified once here.
// Each operation turns it into the typed response its part of
// openapi.yaml declares (gen.<Operation><Status>...Response), so an answer
// the spec does not declare for an operation does not compile; a kind the
// operation does not declare falls through to the 500 of responseError.
type refusal struct {
	kind       refusalKind
	problem    gen.Problem
	retryAfter int // seconds; set for refusedLocked and refusedUnavailable
}

type refusalKind int

const (
	notARefusal refusalKind = iota // unexpected: answered 500
	refusedInvalidCode
	refusedLocked
	refusedNotEnrolled
	refusedAlreadyEnrolled
	refusedNotPending
	refusedChallengeNotFound
	refusedDeviceNotFound
	refusedUnavailable
)

// unavailableRetry is the Retry-After of a 503: the store and the keyring
// come back by themselves, so a short wait is the right advice.
const unavailableRetry = 5

// refuse classifies err; an unavailable dependency is logged (its cause is
// never answered).
func (a *API) refuse(ctx context.Context, err error) refusal {
	var ce *mfa.CodeError
	switch {
	case errors.As(err, &ce) && ce.Locked:
		return refusal{kind: refusedLocked, retryAfter: problem.RetrySeconds(time.Until(ce.LockedUntil)),
			problem: problemAt(ctx, http.StatusTooManyRequests, gen.ProblemCodeMfaLocked, "Too many failed attempts. Try again later.")}
	case errors.Is(err, mfa.ErrInvalidCode):
		return refusal{kind: refusedInvalidCode,
			problem: problemAt(ctx, http.StatusForbidden, gen.ProblemCodeMfaInvalid, "The code is not valid. Check the time on your device and try again.")}
	case errors.Is(err, mfa.ErrNotEnrolled):
		return refusal{kind: refusedNotEnrolled,
			problem: problemAt(ctx, http.StatusConflict, gen.ProblemCodeNotEnrolled, "Two-factor authentication is not on for this account.")}
	case errors.Is(err, mfa.ErrAlreadyEnrolled):
		return refusal{kind: refusedAlreadyEnrolled,
			problem: problemAt(ctx, http.StatusConflict, gen.ProblemCodeAlreadyEnrolled, "Two-factor authentication is already on. Disable it first to enroll again.")}
	case errors.Is(err, mfa.ErrNotPending):
		return refusal{kind: refusedNotPending,
			problem: problemAt(ctx, http.StatusConflict, gen.ProblemCodeNotPending, "There is no enrollment waiting for confirmation. Start again.")}
	case errors.Is(err, mfa.ErrChallengeNotFound), errors.Is(err, mfa.ErrNotEnrollChallenge):
		return refusal{kind: refusedChallengeNotFound,
			problem: problemAt(ctx, http.StatusNotFound, gen.ProblemCodeChallengeNotFound, "This login challenge is unknown, expired or already used. Log in again.")}
	case errors.Is(err, mfa.ErrDeviceNotFound):
		return refusal{kind: refusedDeviceNotFound,
			problem: problemAt(ctx, http.StatusNotFound, gen.ProblemCodeDeviceNotFound, "You have no trusted device with this id.")}
	case errors.Is(err, mfa.ErrUnavailable):
		return a.unavailable(ctx, err, "Two-factor authentication is temporarily unavailable. Try again shortly.")
	}
	return refusal{}
}

// unavailable is the 503 refusal for a failing dependency, logged with its
// cause.
func (a *API) unavailable(ctx context.Context, cause error, detail string) refusal {
	m := metaOf(ctx)
	a.log.LogAttrs(ctx, slog.LevelError, "api: dependency failed",
		slog.String("request_id", m.requestID), slog.String("path", m.path), slog.String("error", cause.Error()))
	return refusal{kind: refusedUnavailable, retryAfter: unavailableRetry,
		problem: problemAt(ctx, http.StatusServiceUnavailable, gen.ProblemCodeMfaUnavailable, detail)}
}

// problemAt is the problem body for the request in ctx: the shape
// problem.Write gives every other answer of the sidecar.
func problemAt(ctx context.Context, status int, code gen.ProblemCode, detail string) gen.Problem {
	m := metaOf(ctx)
	p := problem.New(status, code, detail)
	p.RequestID, p.Instance = m.requestID, m.path
	return p.Model()
}

// loginProblem is p as the body of a login-challenge answer.
func loginProblem(p gen.Problem) gen.LoginChallengeProblem {
	return gen.LoginChallengeProblem{Type: p.Type, Title: p.Title, Status: p.Status, Code: p.Code, Detail: p.Detail, Instance: p.Instance, RequestId: p.RequestId}
}
