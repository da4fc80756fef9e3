package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"time"

	"github.com/totpgate/totpgate/audit"
	"github.com/totpgate/totpgate/gen"
	"github.com/totpgate/totpgate/internal/gatecookie"
	"github.com/totpgate/totpgate/mfa"
	"github.com/totpgate/totpgate/problem"
)

// StepUpFactor is what the step-up gate needs of the mfa service.
type StepUpFactor interface {
	Enrolled(ctx context.Context, user string) (bool, error)
	CheckStepUpProof(ctx context.Context, proof, user string, session []byte, maxAge time.Duration) error
	HoldStepUp(ctx context.Context, user string, req mfa.HeldRequest, cc mfa.ChallengeConfig) (mfa.Challenge, error)
}

// StepUpOptions configures step-up for sensitive routes. The app's session
// credentials and the introspector are the login gate's
// (LoginOptions.Credentials, LoginOptions.Introspector).
type StepUpOptions struct {
	Routes []StepUpRoute
	// MaxRequestBytes bounds a held request's body; MaxConcurrent the
	// requests being read and held at once.
	MaxRequestBytes int64
	MaxConcurrent   int
	// IdentityCacheTTL (0: no cache) and IdentityCacheEntries bound the
	// cache of whose session a credential is.
	IdentityCacheTTL     time.Duration
	IdentityCacheEntries int
	// Required: every user must have MFA; one without is refused (enroll
	// first) rather than let through.
	Required bool
	// Challenge bounds the held requests (TTL, attempts); ChallengeURL is
	// where the code goes ({prefix}/step-up).
	Challenge    mfa.ChallengeConfig
	ChallengeURL string
	MFA          StepUpFactor
	Audit        audit.Recorder
	// RateLimit, when set, bounds the requests each client network may
	// have held (the user API's limiter: a challenge is part of its
	// budget), so no client fills the store with held requests.
	RateLimit *RateLimit
	// Now is the clock of the identity cache.
	Now func() time.Time
	// Page, when set, is the self-service page ({prefix}/): a browser's
	// own form post to a step-up route is sent there to give its code.
	Page string
}

type stepUpGate struct {
	opts       StepUpOptions
	routes     stepUpRoutes
	creds      *credentials
	introspect Introspector
	cache      *identityCache
	rewrite    func(*httputil.ProxyRequest)
	slots      slots
	peers      Peers
	log        *slog.Logger
}

func newStepUpGate(o StepUpOptions, login *LoginOptions, rewrite func(*httputil.ProxyRequest), peers Peers, log *slog.Logger) (*stepUpGate, error) {
	if o.MaxRequestBytes == 0 {
		o.MaxRequestBytes = defaultMaxRequestBytes
	}
	if o.MaxConcurrent == 0 {
		o.MaxConcurrent = defaultMaxConcurrent
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	var errs []error
	if login == nil || len(login.Credentials) == 0 || login.Introspector == nil {
		errs = append(errs, errors.New("proxy: step-up routes need the app's session credentials and an introspector"))
	}
	if o.MFA == nil || o.Audit == nil || o.Challenge.TTL <= 0 || o.Challenge.MaxAttempts <= 0 || o.ChallengeURL == "" {
		errs = append(errs, errors.New("proxy: step-up needs the MFA service, audit and challenge settings"))
	}
	if o.MaxRequestBytes < 0 || o.MaxConcurrent < 0 || o.IdentityCacheTTL < 0 {
		errs = append(errs, errors.New("proxy: step-up limits must not be negative"))
	}
	for _, r := range o.Routes {
		if r.MaxAge <= 0 {
			errs = append(errs, errors.New("proxy: step-up route "+r.Path+" needs a positive max age"))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &stepUpGate{
		opts: o, routes: newStepUpRoutes(o.Routes), creds: newCredentials(login.Credentials), introspect: login.Introspector,
		cache:   newIdentityCache(o.IdentityCacheTTL, o.IdentityCacheEntries, o.Now),
		rewrite: rewrite, slots: make(slots, o.MaxConcurrent), peers: peers, log: log,
	}, nil
}

// intercept judges a request to the step-up route rt and applies the
// verdict. It reports whether it answered the request itself (held or
// refused it); false: the request goes on to the app.
func (g *stepUpGate) intercept(w http.ResponseWriter, r *http.Request, rt *stepUpRoute) bool {
	ev := events{rec: g.opts.Audit, ctx: r.Context(), ip: g.peers.ClientIP(r).String(), route: rt.path, requestID: problem.RequestID(r)}
	session, ok := g.creds.sessionOf(r)
	// "Enrolled?" and the proof's check read the user's row once.
	v := JudgeStepUp(g.facts(r.WithContext(mfa.WithUserMemo(r.Context())), rt, session, ok))
	ev.user = v.User
	switch v.Action {
	case Release:
		return false
	case Hold:
		g.hold(w, r, rt, ev, session)
		return true
	}
	ev.record(audit.StepUpRefused, "", v.Reason)
	switch v.Reason {
	case StepUpAmbiguous:
		problem.Write(w, r, problem.New(http.StatusBadRequest, gen.ProblemCodeBadRequest,
			"The request presents more than one application session."))
	case ReasonEnrollmentRequired:
		problem.Write(w, r, problem.New(http.StatusForbidden, gen.ProblemCodeMfaEnrollmentRequired,
			"Set up two-factor authentication first, then try again."))
	default: // unavailable
		g.unavailable(w, r, v.Err)
	}
	return true
}

// facts are the verdict's questions for r, asked lazily and in order.
func (g *stepUpGate) facts(r *http.Request, rt *stepUpRoute, session []byte, unambiguous bool) StepUpFacts {
	ctx := r.Context()
	return StepUpFacts{
		Ambiguous: !unambiguous,
		Session:   session,
		Required:  g.opts.Required,
		Whose:     func() (string, error) { return g.whose(r, session) },
		Enrolled:  func(user string) (bool, error) { return g.opts.MFA.Enrolled(ctx, user) },
		Proof: func(user string) error {
			return g.opts.MFA.CheckStepUpProof(ctx, gatecookie.Value(r, gatecookie.StepUp), user, session, rt.maxAge)
		},
	}
}

// whose asks the app whose session r presents, through the cache.
func (g *stepUpGate) whose(r *http.Request, session []byte) (string, error) {
	if len(session) != sha256.Size {
		return "", errors.New("proxy: step-up: no session hash")
	}
	// The Host is in the key: with upstream.preserve_host an app may read
	// one credential as different users on different hosts.
	key := sha256.Sum256(append([]byte(r.Host+"\x00"), session...))
	if user, ok := g.cache.get(key); ok {
		return user, nil
	}
	// Asked as the app would get the request: Host and X-Forwarded-*
	// after the rewrite, never the client's own.
	user, err := soleHolder(r.Context(), g.creds, g.introspect, outboundRequest(r, g.rewrite))
	if err == nil && user != "" {
		g.cache.put(key, user)
	}
	return user, err
}

// ErrSessionsDisagree: a request presents sessions of two users (a cookie
// of one, a bearer token of another). Which one the app acts on is the
// app's choice, so the gate cannot tell whose second factor it needs.
var ErrSessionsDisagree = errors.New("proxy: the request presents sessions of different users")

// soleHolder is the user of every session credential r presents: each
// one is shown to the app, and all it knows must name the same user
// (ErrSessionsDisagree otherwise); "" when it knows none.
func soleHolder(ctx context.Context, cs *credentials, in Introspector, r *http.Request) (string, error) {
	user, disagree := "", false
	err := askHolders(ctx, cs, in, r, func(u string) bool {
		if u != "" && user != "" && u != user {
			disagree = true
			return false
		}
		if u != "" {
			user = u
		}
		return true
	})
	switch {
	case err != nil:
		return "", err
	case disagree:
		return "", ErrSessionsDisagree
	}
	return user, nil
}

// hold reads the request (bounded), keeps it sealed as a challenge and
// answers 401 mfa_step_up_required. The app sees nothing of it.
func (g *stepUpGate) hold(w http.ResponseWriter, r *http.Request, rt *stepUpRoute, ev events, session []byte) {
	if l := g.opts.RateLimit; l != nil && l.refused(w, r, g.peers.ClientIP(r)) {
		ev.record(audit.StepUpRefused, "", "rate_limited")
		return
	}
	release, ok := g.slots.take(w, r, ev, audit.StepUpRefused, "Too many requests waiting for a second factor. Try again shortly.")
	if !ok {
		return
	}
	defer release()
	body, err := readBody(r, g.opts.MaxRequestBytes)
	if errors.Is(err, errRequestTooLarge) {
		ev.record(audit.StepUpRefused, "", "too_large")
		problem.Write(w, r, problem.New(http.StatusRequestEntityTooLarge, gen.ProblemCodeBadRequest, "The request is too large to be held for a second factor."))
		return
	}
	if err != nil {
		ev.record(audit.StepUpRefused, "", "bad_request")
		problem.Write(w, r, problem.New(http.StatusBadRequest, gen.ProblemCodeBadRequest, "The request body could not be read."))
		return
	}
	held := mfa.HeldRequest{
		Method: r.Method, URI: r.URL.RequestURI(), Host: r.Host, RemoteAddr: r.RemoteAddr,
		Header: heldHeader(r.Header), Body: body, Route: rt.path, MaxAge: rt.maxAge, Session: session,
	}
	ch, err := g.opts.MFA.HoldStepUp(r.Context(), ev.user, held, g.opts.Challenge)
	if err != nil {
		ev.record(audit.StepUpRefused, "", ReasonUnavailable)
		g.unavailable(w, r, err)
		return
	}
	ev.record(audit.StepUpRequired, "", "challenge_issued")
	if g.toPage(w, r, ch) {
		return
	}
	writeChallenge(w, r, ch, problem.New(http.StatusUnauthorized, gen.ProblemCodeMfaStepUpRequired,
		"Enter the code from your authenticator app to continue."), g.opts.ChallengeURL)
}

// toPage sends the browser's own form post to the self-service page,
// which asks for the code (the challenge in the fragment, which no server
// sees), and reports whether it did. Only a navigation from the same
// origin goes there: a form another site posts with the user's cookies
// gets the 401, so no page elsewhere can have the user confirm a request
// the user did not make.
func (g *stepUpGate) toPage(w http.ResponseWriter, r *http.Request, ch mfa.Challenge) bool {
	if g.opts.Page == "" || r.Header.Get("Sec-Fetch-Mode") != "navigate" || r.Header.Get("Sec-Fetch-Site") != "same-origin" {
		return false
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Location", g.opts.Page+"#step-up="+ch.Token)
	// The page completes only the challenge this browser was sent for.
	gatecookie.Set(w.Header(), gatecookie.StepUpNav, mfa.PageMark(ch.Token), time.Until(ch.ExpiresAt))
	w.WriteHeader(http.StatusSeeOther)
	return true
}

// heldHeader is what a held request keeps of h: neither hop-by-hop headers
// nor Expect (the body is read already) nor the gate's own cookies.
func heldHeader(h http.Header) http.Header {
	out := h.Clone()
	removeHopHeaders(out)
	out.Del("Expect")
	gatecookie.Strip(out)
	return out
}

// errRequestTooLarge: a request body beyond the bound.
var errRequestTooLarge = errors.New("proxy: request body larger than the limit")

// readBody reads r's body whole, at most limit bytes.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, errRequestTooLarge
	}
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	if _, err := buf.ReadFrom(io.LimitReader(r.Body, limit+1)); err != nil {
		return nil, err
	}
	if int64(buf.Len()) > limit {
		return nil, errRequestTooLarge
	}
	return buf.Bytes(), nil
}

func (g *stepUpGate) unavailable(w http.ResponseWriter, r *http.Request, err error) {
	writeUnavailable(w, r, g.log, "second factor unavailable; step-up request refused", err)
}
