// Package api implements the sidecar's own HTTP API: the strict server
// generated from openapi.yaml (gen.StrictServerInterface). Expected outcomes,
// refusals included, are the typed responses the spec declares for each
// operation (refusal.go classifies the service's errors once), so the
// compiler checks that an operation answers only what its part of the spec
// lists. Only the refusals made before any operation runs (the caller is not
// logged in) go through the error handler; any other returned error means
// something unexpected and becomes a 500 problem+json that says nothing
// internal.
package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/totpgate/totpgate/audit"
	"github.com/totpgate/totpgate/gen"
	"github.com/totpgate/totpgate/identity"
	"github.com/totpgate/totpgate/internal/gatecookie"
	"github.com/totpgate/totpgate/mfa"
	"github.com/totpgate/totpgate/problem"
	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/totp"
)

// ErrNotImplemented marks an operation of the contract this build does not
// serve yet; it is answered 501.
var ErrNotImplemented = errors.New("api: not implemented")

// Check is one readiness check. Its error text is shown on /readyz, so it
// must be short and say nothing secret.
type Check struct {
	Name string
	Run  func(context.Context) error
}

// MFA is what the API needs of the second-factor service.
type MFA interface {
	Status(ctx context.Context, user string) (store.User, error)
	StartEnrollment(ctx context.Context, user, account string) (mfa.Enrollment, error)
	ConfirmEnrollment(ctx context.Context, user, code string) ([]string, error)
	Disable(ctx context.Context, user, code string) (int, error)
	RegenerateRecoveryCodes(ctx context.Context, user, code string) ([]string, int, error)
	// Verify checks a TOTP or recovery code of an active user (counted
	// toward the lockout, each code accepted once).
	Verify(ctx context.Context, user, code string) (mfa.Method, error)
	Reset(ctx context.Context, user string) (int, error)
	Unlock(ctx context.Context, user string) error
	// RevokeHeld ends at the app the sessions still held for user.
	RevokeHeld(ctx context.Context, user string, cc mfa.ChallengeConfig) (int, error)
	// ParseImport, ImportAll and ExportLines serve the admin import and
	// export, as they serve `totpgate users import|export`.
	ParseImport(r io.Reader, issuer string) (recs []totp.Imported, refused, skipped []totp.ImportError)
	ImportAll(ctx context.Context, recs []totp.Imported, recovery, dryRun bool, each func(mfa.ImportResult) error) error
	ExportLines(ctx context.Context, format totp.ExportFormat, fn func(line string) error) (int, error)
}

// Deps are the API's collaborators, all injected.
type Deps struct {
	Logger   *slog.Logger
	Gatherer prometheus.Gatherer
	Checks   []Check
	Spec     []byte
	MFA      MFA
	// Keys serves the admin key operations.
	Keys Keys
	// Identify asks the app who the caller of a user operation is.
	Identify func(context.Context, *http.Request) (identity.Identity, error)
	// Required reports the policy: every user must have MFA.
	Required bool
	// Challenges and ChallengeConfig serve the second call of a login;
	// Release writes a held answer back out.
	Challenges      Challenges
	ChallengeConfig mfa.ChallengeConfig
	Release         func(http.ResponseWriter, mfa.HeldAnswer)
	// StepUps and StepUpGate serve the completion of a held step-up
	// request (with ChallengeConfig's attempts and Release).
	StepUps    StepUps
	StepUpGate StepUpGate
	// Audit records security events; ClientIP attributes them.
	Audit    audit.Recorder
	ClientIP func(*http.Request) string
	// Devices serves the trusted-device operations (nil: they answer 501).
	Devices Devices
}

// API implements gen.StrictServerInterface.
type API struct {
	log      *slog.Logger
	gatherer prometheus.Gatherer
	checks   []Check
	spec     []byte
	mfa      MFA
	keys     Keys
	identify func(context.Context, *http.Request) (identity.Identity, error)
	required bool

	challenges   Challenges
	challengeCfg mfa.ChallengeConfig
	release      func(http.ResponseWriter, mfa.HeldAnswer)
	stepUps      StepUps
	stepUpGate   StepUpGate
	audit        audit.Recorder
	clientIP     func(*http.Request) string
	devices      Devices
}

// New builds the API.
func New(d Deps) (*API, error) {
	var errs []error
	if d.Logger == nil {
		errs = append(errs, errors.New("api: logger is required"))
	}
	if d.Gatherer == nil {
		errs = append(errs, errors.New("api: metrics gatherer is required"))
	}
	if len(d.Spec) == 0 {
		errs = append(errs, errors.New("api: spec is required"))
	}
	if d.Audit == nil || d.ClientIP == nil {
		errs = append(errs, errors.New("api: audit recorder and client IP function are required"))
	}
	if (d.Challenges != nil || d.StepUps != nil) && d.Release == nil {
		errs = append(errs, errors.New("api: challenges need a release function"))
	}
	if (d.StepUps == nil) != (d.StepUpGate == nil) {
		errs = append(errs, errors.New("api: step-up completion needs both the MFA service and the gate"))
	}
	if d.MFA == nil || d.Identify == nil || d.Keys == nil {
		errs = append(errs, errors.New("api: MFA service, key rotation and identity lookup are required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &API{log: d.Logger, gatherer: d.Gatherer, checks: d.Checks, spec: d.Spec, mfa: d.MFA, keys: d.Keys, identify: d.Identify, required: d.Required,
		challenges: d.Challenges, challengeCfg: d.ChallengeConfig, release: d.Release, stepUps: d.StepUps, stepUpGate: d.StepUpGate,
		audit: d.Audit, clientIP: d.ClientIP, devices: d.Devices}, nil
}

// Handler serves every operation of the spec through the strict wrapper,
// with error handlers that answer problem+json instead of echoing Go errors.
func (a *API) Handler() http.Handler {
	strict := gen.NewStrictHandlerWithOptions(a, []gen.StrictMiddlewareFunc{a.identifyCaller, a.importQuery, a.stepUpSession, a.requestMeta}, gen.StrictHTTPServerOptions{
		RequestErrorHandlerFunc: func(w http.ResponseWriter, r *http.Request, err error) {
			problem.Write(w, r, problem.New(http.StatusBadRequest, gen.ProblemCodeBadRequest, "The request body could not be read as the operation expects."))
		},
		ResponseErrorHandlerFunc: a.responseError,
	})
	return noStore(gen.HandlerWithOptions(strict, gen.StdHTTPServerOptions{
		ErrorHandlerFunc: func(w http.ResponseWriter, r *http.Request, err error) {
			var detail string
			var pe *gen.InvalidParamFormatError
			if errors.As(err, &pe) {
				detail = "Invalid parameter " + pe.ParamName + "."
			}
			p := problem.New(http.StatusBadRequest, gen.ProblemCodeValidationFailed, "The request does not match the API description. "+detail)
			problem.Write(w, r, p)
		},
	}))
}

// noStore marks every answer of the API uncacheable and not to be
// sniffed, as problem.Write does for the sidecar's other answers: the
// generated typed responses set only what the spec declares per answer.
func noStore(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		next.ServeHTTP(w, r)
	})
}

func (a *API) responseError(w http.ResponseWriter, r *http.Request, err error) {
	var o *outcome
	if errors.As(err, &o) {
		problem.Write(w, r, problem.New(o.status, o.code, o.detail))
		return
	}
	if errors.Is(err, ErrNotImplemented) {
		problem.Write(w, r, problem.New(http.StatusNotImplemented, gen.ProblemCodeNotImplemented, "This operation is part of the API description but is not served by this version of totpgate."))
		return
	}
	a.log.LogAttrs(r.Context(), slog.LevelError, "api: unexpected error",
		slog.String("request_id", problem.RequestID(r)),
		slog.String("path", r.URL.Path),
		slog.String("error", err.Error()))
	problem.Write(w, r, problem.New(http.StatusInternalServerError, gen.ProblemCodeInternal, "Something went wrong inside totpgate. The request id identifies it in the logs."))
}

var _ gen.StrictServerInterface = (*API)(nil)

// meta is what an audit event, a problem body and the trusted-device
// operations need to know of the request: the device is labelled from its
// User-Agent and known by its __Host-totpgate-device cookie.
type meta struct{ clientIP, requestID, operation, path, userAgent, deviceToken string }

type metaKey struct{}

func metaOf(ctx context.Context) meta {
	m, _ := ctx.Value(metaKey{}).(meta)
	return m
}

// requestMeta is listed last, so it wraps outermost and identifyCaller
// and the handlers see it.
func (a *API) requestMeta(f gen.StrictHandlerFunc, operationID string) gen.StrictHandlerFunc {
	return func(ctx context.Context, w http.ResponseWriter, r *http.Request, req any) (any, error) {
		m := meta{clientIP: a.clientIP(r), requestID: problem.RequestID(r), operation: operationID, path: r.URL.EscapedPath(),
			userAgent: r.UserAgent(), deviceToken: gatecookie.Value(r, gatecookie.Device)}
		return f(context.WithValue(ctx, metaKey{}, m), w, r, req)
	}
}

// record writes one audit event for the request in ctx.
func (a *API) record(ctx context.Context, name, user, outcome string) {
	m := metaOf(ctx)
	a.audit.Record(ctx, audit.Event{Name: name, UserID: user, ClientIP: m.clientIP, Route: m.operation, Outcome: outcome, RequestID: m.requestID})
}
