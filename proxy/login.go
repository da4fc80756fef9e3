package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"time"

	"github.com/totpgate/totpgate/audit"
	"github.com/totpgate/totpgate/gen"
	"github.com/totpgate/totpgate/identity"
	"github.com/totpgate/totpgate/mfa"
	"github.com/totpgate/totpgate/problem"
)

// SecondFactor is what the login gate needs of the mfa service.
type SecondFactor interface {
	Enrolled(ctx context.Context, user string) (bool, error)
	Verify(ctx context.Context, user, code string) (mfa.Method, error)
	HoldLogin(ctx context.Context, user string, a mfa.HeldAnswer, cc mfa.ChallengeConfig, enroll bool) (mfa.Challenge, error)
}

// TrustedDevices is what the login gate needs of the mfa service for
// trusted devices (mfa/devices.go).
type TrustedDevices interface {
	DevicesOn() bool
	TrustDevice(ctx context.Context, user, userAgent, replacing string) (string, mfa.Device, error)
	UseTrustedDevice(ctx context.Context, user, token string) (string, mfa.Device, error)
}

// LoginOptions configures login interception.
type LoginOptions struct {
	// Paths are the app's login routes; matched on a normalized form, any method.
	Paths []string
	// CodeHeader and CodeField name where a client may put the code in the
	// login call itself; both are removed before the app sees the request.
	CodeHeader, CodeField string
	// RememberHeader and RememberField name where a one-call login may ask
	// to trust the device once its code passed; removed like the code.
	RememberHeader, RememberField string
	// Devices, when set, lets a login without a code pass on a trusted
	// device of the user (the __Host-totpgate-device cookie), and trusts
	// one when a login with a valid code asks to remember it.
	Devices TrustedDevices
	// UserIDPointer (JSON pointer into the app's answer) and UserIDHeader
	// (a header of the answer) say which user the app let in.
	UserIDPointer, UserIDHeader string
	// UserIDRequestField names a JSON/form/multipart/query field of the
	// login request holding the user id: a last resort, used only when the
	// app's answer names nobody. It must be the field the app authenticates,
	// normalized as the app does (UserIDNormalize: trim, nfkc, casefold).
	UserIDRequestField string
	UserIDNormalize    []string
	// SessionCookies are removed from gated requests, so an app that logs
	// in the session the client already holds must issue a new one.
	SessionCookies []string
	// NonSessionCookies are cookies an answer may set without counting as
	// a session (CSRF tokens); every other cookie being set counts.
	NonSessionCookies []string
	// Refused is how the app signals a refused login.
	Refused      RefusalSignal
	Challenge    mfa.ChallengeConfig
	ChallengeURL string
	MFA          SecondFactor
	// MaxRequestBytes bounds the login request body, MaxAnswerBytes the
	// app's answer (decoded); MaxConcurrent the gated requests in flight.
	MaxRequestBytes int64
	MaxAnswerBytes  int64
	MaxConcurrent   int
	Audit           audit.Recorder
	// Required: every user must have MFA; one without must enroll inside
	// the login. RequiredPointer names a boolean in the app's login answer
	// that requires it for that user alone.
	Required        bool
	RequiredPointer string
	// Credentials describe the app's session; with Introspector set, an
	// answer on any route that carries one is attributed by asking the
	// app whose it is, and held for a user who needs a second factor.
	// BodyRoutes are the route prefixes whose JSON answers are scanned for
	// json and pointer credentials (other answers stream untouched).
	Credentials  []Credential
	BodyRoutes   []string
	Introspector Introspector
}

// Introspector asks the app whose session a credential is.
type Introspector interface {
	IdentifyWith(ctx context.Context, present func(http.Header), in *http.Request) (identity.Identity, error)
}

type loginGate struct {
	opts           LoginOptions
	routes         routeSet
	policy         policy
	reader         requestReader
	sessionCookies map[string]bool
	bodyRoutes     []string
	transport      http.RoundTripper
	rewrite        func(*httputil.ProxyRequest)
	upstreamError  func(http.ResponseWriter, *http.Request, error)
	slots          slots
	peers          Peers
	log            *slog.Logger
}

// slotWait is how long a gated request waits for a free slot before 503.
const slotWait = 2 * time.Second

// slots bounds the gated requests in flight, and so the memory they hold.
type slots chan struct{}

// take waits up to slotWait for a free slot and returns its release. When
// none frees up in time it answers 503 (Retry-After 1) and records event
// with outcome busy; when the client goes away first it answers nothing.
func (s slots) take(w http.ResponseWriter, r *http.Request, ev events, event, detail string) (release func(), ok bool) {
	select {
	case s <- struct{}{}:
		return func() { <-s }, true
	case <-time.After(slotWait):
		ev.record(event, "", "busy")
		w.Header().Set("Retry-After", "1")
		problem.Write(w, r, problem.New(http.StatusServiceUnavailable, gen.ProblemCodeMfaUnavailable, detail))
	case <-r.Context().Done():
	}
	return nil, false
}

// Defaults for the zero values of LoginOptions' limits.
const (
	defaultMaxRequestBytes = 64 << 10
	defaultMaxConcurrent   = 64
	defaultRefusedStatus   = 400
)

func newLoginGate(o LoginOptions, transport http.RoundTripper, rewrite func(*httputil.ProxyRequest), peers Peers, log *slog.Logger) (*loginGate, error) {
	if o.MaxRequestBytes == 0 {
		o.MaxRequestBytes = defaultMaxRequestBytes
	}
	if o.MaxConcurrent == 0 {
		o.MaxConcurrent = defaultMaxConcurrent
	}
	if o.Refused.MinStatus == 0 {
		o.Refused.MinStatus = defaultRefusedStatus
	}
	var errs []error
	if o.MFA == nil || o.Audit == nil || o.CodeField == "" || o.CodeHeader == "" || o.Challenge.TTL <= 0 || o.Challenge.MaxAttempts <= 0 {
		errs = append(errs, errors.New("proxy: login interception needs the MFA service, audit, code header and field and challenge settings"))
	}
	if o.MaxRequestBytes <= 0 || o.MaxAnswerBytes <= 0 || o.MaxConcurrent <= 0 {
		errs = append(errs, errors.New("proxy: login interception needs request, answer and concurrency limits"))
	}
	if len(o.Paths) == 0 {
		errs = append(errs, errors.New("proxy: login interception needs at least one login path"))
	}
	if (o.RememberHeader != "" && strings.EqualFold(o.RememberHeader, o.CodeHeader)) ||
		(o.RememberField != "" && (foldField(o.RememberField) == foldField(o.CodeField) || foldField(o.RememberField) == foldField(o.UserIDRequestField))) {
		errs = append(errs, errors.New("proxy: the remember-device header and field must differ from the code's and the user id field"))
	}
	if o.UserIDPointer == "" && o.UserIDHeader == "" && o.UserIDRequestField == "" {
		errs = append(errs, errors.New("proxy: login interception needs a user id pointer, header or request field"))
	}
	for _, op := range o.UserIDNormalize {
		if !normalizeOps[op] {
			errs = append(errs, errors.New("proxy: unknown user id normalization "+strconv.Quote(op)))
		}
	}
	if o.Refused.MinStatus < 400 || o.Refused.MinStatus > 599 {
		errs = append(errs, errors.New("proxy: the refused-login status must be 400..599"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	g := &loginGate{
		opts:   o,
		routes: newRouteSet(o.Paths),
		policy: policy{
			creds:        newCredentials(o.Credentials),
			userIDHeader: o.UserIDHeader, userIDPointer: o.UserIDPointer, requestField: o.UserIDRequestField != "",
			required: o.Required, requiredPointer: o.RequiredPointer, refused: o.Refused, nonSessionCookies: set(o.NonSessionCookies),
		},
		reader: requestReader{codeHeader: o.CodeHeader, codeField: foldField(o.CodeField), rememberHeader: o.RememberHeader,
			maxBytes: o.MaxRequestBytes, normalize: o.UserIDNormalize},
		sessionCookies: set(append(cookieNames(o.Credentials), o.SessionCookies...)),
		bodyRoutes:     bodyRoutes(o.BodyRoutes),
		transport:      transport,
		rewrite:        rewrite,
		upstreamError:  upstreamErrorHandler(log),
		slots:          make(slots, o.MaxConcurrent),
		peers:          peers,
		log:            log,
	}
	if o.UserIDRequestField != "" {
		g.reader.userField = foldField(o.UserIDRequestField)
	}
	if o.RememberField != "" {
		g.reader.rememberField = foldField(o.RememberField)
	}
	return g, nil
}

func set(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// ServeHTTP reads the login request, sends it to the app, judges the app's
// answer and applies the verdict. Nothing of the answer reaches the client
// before the verdict.
func (g *loginGate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ev := g.events(r)
	release, ok := g.slots.take(w, r, ev, audit.LoginRefused, "Too many logins in progress. Try again shortly.")
	if !ok {
		return
	}
	defer release()
	// The verdict asks whether the user is enrolled, then the code or the
	// device is checked: one read of the user's row serves both.
	r = r.WithContext(mfa.WithUserMemo(r.Context()))
	req, err := g.reader.read(r)
	if err != nil {
		var re *requestError
		if !errors.As(err, &re) {
			re = badRequest("The login request could not be read.")
		}
		ev.record(audit.LoginRefused, "", "bad_request")
		problem.Write(w, r, problem.New(re.Status, re.Code, re.Detail))
		return
	}
	out := g.outbound(r)
	a, err := g.fetch(out)
	switch {
	case errors.Is(err, errAnswerTooLarge):
		g.refuseOversized(w, r, ev, req.User)
		return
	case err != nil:
		ev.record(audit.LoginError, "", "upstream_unavailable")
		g.upstreamError(w, r, err)
		return
	}
	v := g.policy.Judge(req, a, g.lookups(out, false)) // introspection sees what the app saw
	g.apply(w, r, ev, req, a, v)
}

// lookups are the verdict's questions to the store and the app, for the
// request r (on any route, holder: whose session r itself presents).
func (g *loginGate) lookups(r *http.Request, holder bool) Lookups {
	ctx := r.Context()
	l := Lookups{Enrolled: func(user string) (bool, error) { return g.opts.MFA.Enrolled(ctx, user) }}
	if g.opts.Introspector == nil {
		return l
	}
	l.Whose = func(f Found) (string, error) {
		id, err := g.opts.Introspector.IdentifyWith(ctx, func(h http.Header) { f.Credential.Present(h, f.Value) }, r)
		return identityUser(id, err)
	}
	if holder {
		l.Holder = func() (string, error) { return g.holder(ctx, r) }
	}
	return l
}

// holder is whose session r itself presents (holderOf).
func (g *loginGate) holder(ctx context.Context, r *http.Request) (string, error) {
	return holderOf(ctx, g.policy.creds, g.opts.Introspector, r)
}

// holderOf is whose session r presents, read from the configured session
// credentials only: a password sent along (HTTP Basic, which some apps
// accept) must not pass for a session that went through the gate. Each
// credential r presents is shown to the app in turn; the first the app
// knows answers, "" when it knows none. r is the request as the app gets
// it (its Host and X-Forwarded-* go to the identity endpoint).
func holderOf(ctx context.Context, cs *credentials, in Introspector, r *http.Request) (string, error) {
	var user string
	err := askHolders(ctx, cs, in, r, func(u string) bool { user = u; return u == "" })
	if err != nil {
		return "", err
	}
	return user, nil
}

// askHolders shows the app each session credential r presents (never a
// password) and hands each answer's user ("" for none) to each, until it
// returns false or the app cannot answer.
func askHolders(ctx context.Context, cs *credentials, in Introspector, r *http.Request, each func(user string) bool) error {
	for _, c := range cs.list {
		value, ok := c.PresentedIn(r)
		if !ok || value == "" || passwordScheme(value) {
			continue
		}
		id, err := in.IdentifyWith(ctx, func(h http.Header) { c.Present(h, value) }, r)
		user, err := identityUser(id, err)
		if err != nil {
			return err
		}
		if !each(user) {
			return nil
		}
	}
	return nil
}

// passwordScheme: an Authorization value that carries a password (Basic,
// Digest), never a session that went through the gate.
func passwordScheme(v string) bool {
	scheme, _, _ := strings.Cut(strings.TrimSpace(v), " ")
	return strings.EqualFold(scheme, "Basic") || strings.EqualFold(scheme, "Digest")
}

func identityUser(id identity.Identity, err error) (string, error) {
	switch {
	case errors.Is(err, identity.ErrUnauthenticated):
		return "", nil
	case err != nil:
		return "", err
	}
	return id.UserID, nil
}

func cookieNames(cs []Credential) []string {
	var out []string
	for _, c := range cs {
		if c.As == "cookie" {
			out = append(out, c.AsName)
		}
	}
	return out
}

// apply carries out a verdict and records it.
func (g *loginGate) apply(w http.ResponseWriter, r *http.Request, ev events, req loginRequest, a *answer, v Verdict) {
	ev.user = v.User
	if v.Action == Release {
		switch v.Reason {
		case ReasonAppRefused:
			ev.record(audit.LoginRejectedByApp, req.User, "app_refused")
		default: // no_session, no_mfa
			ev.record(audit.LoginPassed, "", v.Reason)
		}
		ReleaseHeld(w, mfa.HeldAnswer{Status: a.Status, Header: a.Header, Body: a.Body})
		return
	}
	// The gate answers instead of the app: with the app's CORS headers, so
	// a page on another origin can read the challenge.
	copyCORS(w, a)
	g.answerInstead(w, r, ev, req, a, v)
}

// answerInstead is the gate's own answer for a verdict that does not
// release (on a login route or any other): the challenge of a hold, 503
// otherwise, recorded. Its last branch refuses.
func (g *loginGate) answerInstead(w http.ResponseWriter, r *http.Request, ev events, req loginRequest, a *answer, v Verdict) {
	ev.user = v.User
	if v.Action == Hold {
		g.secondFactor(w, r, ev, req, mfa.HeldAnswer{Status: a.Status, Header: a.Header, Body: a.Body}, v.Reason == ReasonEnrollmentRequired)
		return
	}
	if v.Reason == ReasonUnavailable {
		ev.record(audit.LoginError, "", "unavailable")
		g.unavailable(w, r, v.Err)
		return
	}
	ev.record(audit.LoginRefused, "", v.Reason)
	g.log.ErrorContext(r.Context(), "answer refused: the gate cannot tell it needs no second factor",
		"request_id", problem.RequestID(r), "path", r.URL.Path, "reason", v.Reason, "marker", v.Marker, "status", a.Status)
	problem.Write(w, r, problem.New(http.StatusServiceUnavailable, gen.ProblemCodeMfaUnavailable, "The second factor could not be checked."))
}

// refuseOversized answers an app answer larger than login.max_answer_bytes:
// 502, recorded and logged.
func (g *loginGate) refuseOversized(w http.ResponseWriter, r *http.Request, ev events, user string) {
	ev.record(audit.LoginRefused, user, "oversized_answer")
	g.log.ErrorContext(r.Context(), "answer larger than login.max_answer_bytes; refused", "request_id", problem.RequestID(r), "path", r.URL.Path, "limit", g.opts.MaxAnswerBytes)
	problem.Write(w, r, problem.New(http.StatusBadGateway, gen.ProblemCodeUpstreamUnavailable, "The application's answer is too large to be checked."))
}

// secondFactor checks the code sent with the login, or holds the answer
// behind a challenge.
func (g *loginGate) secondFactor(w http.ResponseWriter, r *http.Request, ev events, req loginRequest, held mfa.HeldAnswer, enroll bool) {
	ctx := r.Context()
	if enroll {
		ch, err := g.opts.MFA.HoldLogin(ctx, ev.user, held, g.opts.Challenge, true)
		if err != nil {
			ev.record(audit.LoginError, "", "unavailable")
			g.unavailable(w, r, err)
			return
		}
		ev.record(audit.LoginMFARequired, "", "enrollment_required")
		writeChallenge(w, r, ch, problem.New(http.StatusUnauthorized, gen.ProblemCodeMfaEnrollmentRequired,
			"Two-factor authentication is required. Set it up to finish logging in."), g.opts.ChallengeURL+"/enroll")
		return
	}
	if req.Code == "" && g.passOnDevice(w, r, ev, held) {
		return
	}
	if req.Code != "" {
		method, err := g.opts.MFA.Verify(ctx, ev.user, req.Code)
		if err == nil {
			ev.record(audit.LoginPassed, "", string(method))
			if method == mfa.MethodRecovery {
				ev.record(audit.RecoveryCodeUsed, "", "login")
			}
			if req.Remember {
				held = g.trustDevice(r, ev, held)
			}
			ReleaseHeld(w, held)
			return
		}
		var ce *mfa.CodeError
		if !errors.As(err, &ce) {
			ev.record(audit.LoginError, "", "unavailable")
			g.unavailable(w, r, err)
			return
		}
		if ce.LockStarted {
			ev.record(audit.LockoutStarted, "", "login")
			if ce.DevicesRevoked > 0 {
				ev.record(audit.DeviceRevoked, "", "lockout")
			}
		}
		switch {
		case ce.Locked:
			ev.record(audit.LoginLocked, "", "refused")
		case ce.Replay:
			ev.record(audit.LoginReplayRefused, "", "refused")
		default:
			ev.record(audit.LoginFailed, "", "invalid_code")
		}
		if ce.Locked {
			// The answer is dropped for good: let the app end its session.
			g.opts.Challenge.RevokeAnswer(ctx, ev.user, held, "locked")
			w.Header().Set("Retry-After", problem.RetryAfter(time.Until(ce.LockedUntil)))
			problem.Write(w, r, problem.New(http.StatusTooManyRequests, gen.ProblemCodeMfaLocked, "Too many failed attempts. Try again later."))
			return
		}
	}
	ch, err := g.opts.MFA.HoldLogin(ctx, ev.user, held, g.opts.Challenge, false)
	if err != nil {
		ev.record(audit.LoginError, "", "unavailable")
		g.unavailable(w, r, err)
		return
	}
	p := problem.New(http.StatusUnauthorized, gen.ProblemCodeMfaRequired, "Enter the code from your authenticator app to finish logging in.")
	if req.Code != "" {
		p = problem.New(http.StatusUnauthorized, gen.ProblemCodeMfaInvalid, "The code is not valid. Check the time on your device and try again.")
	} else {
		ev.record(audit.LoginMFARequired, "", "challenge_issued")
	}
	writeChallenge(w, r, ch, p, g.opts.ChallengeURL)
}

// events records the audit events of one gated request.
type events struct {
	rec                  audit.Recorder
	ctx                  context.Context
	ip, route, requestID string
	user                 string
}

func (g *loginGate) events(r *http.Request) events {
	return events{rec: g.opts.Audit, ctx: r.Context(), ip: g.peers.ClientIP(r).String(), route: NormalizePath(r.URL.Path), requestID: problem.RequestID(r)}
}

// record sends one event; user overrides the attributed user (a refused
// login names the requested one, if any).
func (e events) record(name, user, outcome string) {
	if user == "" {
		user = e.user
	}
	e.rec.Record(e.ctx, audit.Event{Name: name, UserID: user, ClientIP: e.ip, Route: e.route, Outcome: outcome, RequestID: e.requestID})
}

// writeChallenge is the 401 that holds a login or a step-up request: the
// challenge id in WWW-Authenticate and in the problem body.
func writeChallenge(w http.ResponseWriter, r *http.Request, ch mfa.Challenge, p problem.Details, next string) {
	w.Header().Set("WWW-Authenticate", `TOTP realm="totpgate", challenge="`+ch.Token+`"`)
	problem.WriteExtended(w, r, p, map[string]any{
		"challenge_id":       ch.Token,
		"challenge_url":      next,
		"expires_at":         ch.ExpiresAt.UTC().Format(time.RFC3339),
		"attempts_remaining": ch.Attempts,
		"methods":            []string{"totp", "recovery_code"},
	})
}

func (g *loginGate) unavailable(w http.ResponseWriter, r *http.Request, err error) {
	writeUnavailable(w, r, g.log, "second factor unavailable; login refused", err)
}

// writeUnavailable answers 503 mfa_unavailable (Retry-After 5) for a
// second factor that could not be checked, and logs why with what.
func writeUnavailable(w http.ResponseWriter, r *http.Request, log *slog.Logger, what string, err error) {
	msg := "unknown"
	if err != nil {
		msg = err.Error()
	}
	log.ErrorContext(r.Context(), what, "request_id", problem.RequestID(r), "error", msg)
	w.Header().Set("Retry-After", "5")
	problem.Write(w, r, problem.New(http.StatusServiceUnavailable, gen.ProblemCodeMfaUnavailable, "Two-factor authentication is temporarily unavailable. Try again shortly."))
}

// ReleaseHeld sends a judged answer exactly as judged (also used by the
// challenge endpoint).
func ReleaseHeld(w http.ResponseWriter, a mfa.HeldAnswer) {
	for k, vs := range a.Header {
		w.Header()[k] = vs
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(a.Body)))
	w.WriteHeader(a.Status)
	_, _ = w.Write(a.Body)
}

var _ http.Handler = (*loginGate)(nil)
