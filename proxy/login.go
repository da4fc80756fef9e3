package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/totpgate/totpgate/audit"
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

// LoginOptions configures login interception.
type LoginOptions struct {
	// Paths are the app's login routes; matched on a normalized form, any method.
	Paths []string
	// CodeHeader and CodeField name where a client may put the code in the
	// login call itself; both are removed before the app sees the request.
	CodeHeader, CodeField string
	// UserIDPointer (JSON pointer into the app's answer) and UserIDHeader
	// (a header of the answer) say which user the app let in.
	UserIDPointer, UserIDHeader string
	// UserIDRequestField names a JSON/form/query field of the login request
	// holding the user id, used only when the app's answer names nobody. It
	// must be the field the app authenticates (the login name), and user ids
	// must be login names: a field the app ignores would let a caller name
	// any user.
	UserIDRequestField string
	Challenge          mfa.ChallengeConfig
	ChallengeURL       string
	MFA                SecondFactor
	MaxBodyBytes       int64 // of the login request and of the app's answer
	Audit              audit.Recorder
	// Required: every user must have MFA; one without must enroll inside
	// the login. RequiredPointer names a boolean in the app's login answer
	// that requires it for that user alone.
	Required        bool
	RequiredPointer string
}

type loginGate struct {
	opts  LoginOptions
	paths map[string]bool
	proxy http.Handler
	peers Peers
	log   *slog.Logger
}

func newLoginGate(o LoginOptions, proxy http.Handler, peers Peers, log *slog.Logger) (*loginGate, error) {
	if o.MFA == nil || o.Audit == nil || o.CodeField == "" || o.CodeHeader == "" || o.MaxBodyBytes <= 0 || o.Challenge.TTL <= 0 || o.Challenge.MaxAttempts <= 0 {
		return nil, errors.New("proxy: login interception needs the MFA service, code header and field, limits and challenge settings")
	}
	if o.UserIDPointer == "" && o.UserIDHeader == "" && o.UserIDRequestField == "" {
		return nil, errors.New("proxy: login interception needs a user id pointer or header")
	}
	g := &loginGate{opts: o, paths: map[string]bool{}, proxy: proxy, peers: peers, log: log}
	for _, p := range o.Paths {
		g.paths[NormalizePath(p)] = true
	}
	return g, nil
}

// NormalizePath is the form login routes are compared on: percent-decoding
// undone, ;params dropped, backslashes and repeated slashes merged, dot
// segments resolved, trailing slash removed, case folded. Frameworks that
// treat /Login, //login/ or /login;jsessionid=x as /login are all caught;
// over-matching is safe because the gate only acts on an answer that let a
// user in.
func NormalizePath(p string) string {
	for range 3 { // double encoding (%252F) must not slip through
		d, err := url.PathUnescape(p)
		if err != nil || d == p {
			break
		}
		p = d
	}
	p = strings.ReplaceAll(p, "\\", "/")
	segs := strings.Split(p, "/")
	for i, s := range segs {
		if j := strings.IndexByte(s, ';'); j >= 0 {
			segs[i] = s[:j]
		}
	}
	p = path.Clean("/" + strings.Join(segs, "/"))
	return strings.ToLower(strings.TrimSuffix(p, "/"))
}

func (g *loginGate) matches(r *http.Request) bool {
	if len(g.paths) == 0 {
		return false
	}
	return g.paths[NormalizePath(r.URL.Path)] || (r.URL.RawPath != "" && g.paths[NormalizePath(r.URL.RawPath)])
}

// ServeHTTP forwards the login to the app, holds its answer and releases it
// only when the user has no MFA or gave a valid code.
func (g *loginGate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	code, requestUser, err := g.takeCode(r)
	if err != nil {
		problem.Write(w, r, problem.New(http.StatusRequestEntityTooLarge, "bad_request", "The login request body is too large."))
		return
	}
	rec := &recorder{header: http.Header{}, limit: g.opts.MaxBodyBytes}
	g.proxy.ServeHTTP(rec, r)
	if rec.overflow {
		g.log.ErrorContext(r.Context(), "login answer larger than the limit; refused", "request_id", problem.RequestID(r))
		problem.Write(w, r, problem.New(http.StatusBadGateway, "upstream_unavailable", "The application's login answer could not be checked."))
		return
	}
	answer := mfa.HeldAnswer{Status: rec.statusCode(), Header: rec.header, Body: rec.body.Bytes()}
	if !grantsSession(answer) {
		g.opts.Audit.Record(r.Context(), audit.Event{Name: audit.LoginRejectedByApp, UserID: requestUser, ClientIP: g.peers.ClientIP(r).String(),
			Route: NormalizePath(r.URL.Path), Outcome: "app_refused", RequestID: problem.RequestID(r)})
		ReleaseHeld(w, answer) // a refused login needs no second factor
		return
	}
	doc := decodeAnswer(answer) // once, for the user id and the required flag
	user := g.userID(answer, doc)
	if user == "" {
		user = requestUser
	}
	event := func(name, outcome string) {
		g.opts.Audit.Record(r.Context(), audit.Event{Name: name, UserID: user, ClientIP: g.peers.ClientIP(r).String(),
			Route: NormalizePath(r.URL.Path), Outcome: outcome, RequestID: problem.RequestID(r)})
	}
	if user == "" {
		event(audit.LoginError, "no_user_id")
		g.log.ErrorContext(r.Context(), "login answer accepted a login but names no user; refused (check login.user_id_pointer)", "request_id", problem.RequestID(r))
		problem.Write(w, r, problem.New(http.StatusServiceUnavailable, "mfa_unavailable", "The second factor could not be checked."))
		return
	}
	enrolled, err := g.opts.MFA.Enrolled(r.Context(), user)
	if err != nil {
		event(audit.LoginError, "unavailable")
		g.unavailable(w, r, err)
		return
	}
	if !enrolled {
		if !g.opts.Required && !g.requiredByApp(doc) {
			event(audit.LoginPassed, "no_mfa")
			ReleaseHeld(w, answer)
			return
		}
		ch, err := g.opts.MFA.HoldLogin(r.Context(), user, answer, g.opts.Challenge, true)
		if err != nil {
			event(audit.LoginError, "unavailable")
			g.unavailable(w, r, err)
			return
		}
		event(audit.LoginMFARequired, "enrollment_required")
		g.challengeAnswer(w, r, ch, problem.New(http.StatusUnauthorized, "mfa_enrollment_required",
			"Two-factor authentication is required. Set it up to finish logging in."), g.opts.ChallengeURL+"/enroll")
		return
	}
	if code != "" {
		method, err := g.opts.MFA.Verify(r.Context(), user, code)
		if err == nil {
			event(audit.LoginPassed, string(method))
			if method == mfa.MethodRecovery {
				event(audit.RecoveryCodeUsed, "login")
			}
			ReleaseHeld(w, answer)
			return
		}
		var ce *mfa.CodeError
		if !errors.As(err, &ce) {
			event(audit.LoginError, "unavailable")
			g.unavailable(w, r, err)
			return
		}
		if ce.LockStarted {
			event(audit.LockoutStarted, "login")
		}
		switch {
		case ce.Locked:
			event(audit.LoginLocked, "refused")
		case ce.Replay:
			event(audit.LoginReplayRefused, "refused")
		default:
			event(audit.LoginFailed, "invalid_code")
		}
		if ce.Locked {
			// The answer is dropped for good: let the app end its session.
			if g.opts.Challenge.Revoke != nil {
				g.opts.Challenge.Revoke(r.Context(), answer)
			}
			w.Header().Set("Retry-After", problem.RetryAfter(time.Until(ce.LockedUntil)))
			problem.Write(w, r, problem.New(http.StatusTooManyRequests, "mfa_locked", "Too many failed attempts. Try again later."))
			return
		}
	}
	ch, err := g.opts.MFA.HoldLogin(r.Context(), user, answer, g.opts.Challenge, false)
	if err != nil {
		event(audit.LoginError, "unavailable")
		g.unavailable(w, r, err)
		return
	}
	if code == "" {
		event(audit.LoginMFARequired, "challenge_issued")
	}
	p := problem.New(http.StatusUnauthorized, "mfa_required", "Enter the code from your authenticator app to finish logging in.")
	if code != "" {
		p = problem.New(http.StatusUnauthorized, "mfa_invalid", "The code is not valid. Check the time on your device and try again.")
	}
	g.challengeAnswer(w, r, ch, p, g.opts.ChallengeURL)
}

// challengeAnswer is the 401 that holds a login: the challenge id in
// WWW-Authenticate and in the problem body.
func (g *loginGate) challengeAnswer(w http.ResponseWriter, r *http.Request, ch mfa.Challenge, p problem.Details, next string) {
	w.Header().Set("WWW-Authenticate", `TOTP realm="totpgate", challenge="`+ch.Token+`"`)
	problem.WriteExtended(w, r, p, map[string]any{
		"challenge_id":       ch.Token,
		"challenge_url":      next,
		"expires_at":         ch.ExpiresAt.UTC().Format(time.RFC3339),
		"attempts_remaining": ch.Attempts,
		"methods":            []string{"totp", "recovery_code"},
	})
}

// requiredByApp reads the per-user "required" flag from the decoded login answer.
func (g *loginGate) requiredByApp(doc any) bool {
	if g.opts.RequiredPointer == "" || doc == nil {
		return false
	}
	v, _ := identity.LookupValue(doc, g.opts.RequiredPointer)
	return v == true
}

// decodeAnswer decodes a JSON login answer (numbers kept as json.Number);
// nil when the body is not JSON.
func decodeAnswer(a mfa.HeldAnswer) any {
	var doc any
	dec := json.NewDecoder(bytes.NewReader(a.Body))
	dec.UseNumber()
	if dec.Decode(&doc) != nil {
		return nil
	}
	return doc
}

func (g *loginGate) unavailable(w http.ResponseWriter, r *http.Request, err error) {
	g.log.ErrorContext(r.Context(), "second factor unavailable; login refused", "request_id", problem.RequestID(r), "error", err.Error())
	w.Header().Set("Retry-After", "5")
	problem.Write(w, r, problem.New(http.StatusServiceUnavailable, "mfa_unavailable", "Two-factor authentication is temporarily unavailable. Try again shortly."))
}

// takeCode removes the code from the header, the query and a JSON or form
// body, so the app never sees it, and returns it with the user id request
// field (left in place) when one is configured.
func (g *loginGate) takeCode(r *http.Request) (string, string, error) {
	uf := g.opts.UserIDRequestField
	user := ""
	if uf != "" {
		user = strings.TrimSpace(r.URL.Query().Get(uf))
	}
	code := r.Header.Get(g.opts.CodeHeader)
	r.Header.Del(g.opts.CodeHeader)
	if q := r.URL.Query(); q.Has(g.opts.CodeField) {
		if code == "" {
			code = q.Get(g.opts.CodeField)
		}
		q.Del(g.opts.CodeField)
		r.URL.RawQuery = q.Encode()
	}
	if r.Body == nil || r.Body == http.NoBody {
		return code, user, nil
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	isJSON := mt == "application/json" || strings.HasSuffix(mt, "+json")
	isForm := mt == "application/x-www-form-urlencoded"
	if !isJSON && !isForm {
		return code, user, nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, g.opts.MaxBodyBytes+1))
	r.Body.Close()
	if err != nil {
		return "", "", err
	}
	if int64(len(body)) > g.opts.MaxBodyBytes {
		return "", "", errors.New("login body too large")
	}
	if isJSON {
		var doc map[string]any
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		if dec.Decode(&doc) == nil {
			if v, ok := doc[uf].(string); ok && uf != "" {
				user = strings.TrimSpace(v)
			}
			if v, ok := doc[g.opts.CodeField]; ok {
				if s, ok := v.(string); ok && code == "" {
					code = s
				}
				delete(doc, g.opts.CodeField)
				body, _ = json.Marshal(doc)
			}
		}
	} else if form, err := url.ParseQuery(string(body)); err == nil {
		if uf != "" && form.Has(uf) {
			user = strings.TrimSpace(form.Get(uf))
		}
		if !form.Has(g.opts.CodeField) {
			r.Body = io.NopCloser(bytes.NewReader(body))
			return code, user, nil
		}
		if code == "" {
			code = form.Get(g.opts.CodeField)
		}
		form.Del(g.opts.CodeField)
		body = []byte(form.Encode())
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return code, user, nil
}

// grantsSession: a 2xx answer, or a redirect that sets a cookie. Anything
// else is a refused login and goes out unchanged.
func grantsSession(a mfa.HeldAnswer) bool {
	switch {
	case a.Status >= 200 && a.Status < 300:
		return true
	case a.Status >= 300 && a.Status < 400:
		return len(a.Header.Values("Set-Cookie")) > 0
	}
	return false
}

func (g *loginGate) userID(a mfa.HeldAnswer, doc any) string {
	if g.opts.UserIDHeader != "" {
		if v := a.Header.Get(g.opts.UserIDHeader); v != "" {
			return v
		}
	}
	if g.opts.UserIDPointer == "" || doc == nil {
		return ""
	}
	id, _ := identity.Lookup(doc, g.opts.UserIDPointer)
	return id
}

// ReleaseHeld sends a held answer exactly as the app gave it (also used by
// the challenge endpoint).
func ReleaseHeld(w http.ResponseWriter, a mfa.HeldAnswer) {
	for k, vs := range a.Header {
		w.Header()[k] = vs
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(a.Body)))
	w.WriteHeader(a.Status)
	_, _ = w.Write(a.Body)
}

// recorder holds the app's login answer in memory, bounded.
type recorder struct {
	header   http.Header
	status   int
	body     bytes.Buffer
	limit    int64
	overflow bool
}

func (c *recorder) Header() http.Header { return c.header }
func (c *recorder) WriteHeader(s int) {
	if c.status == 0 {
		c.status = s
	}
}

func (c *recorder) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	if int64(c.body.Len()+len(p)) > c.limit {
		c.overflow = true
		return 0, errors.New("login answer too large")
	}
	return c.body.Write(p)
}

func (c *recorder) statusCode() int {
	if c.status == 0 {
		return http.StatusOK
	}
	return c.status
}
