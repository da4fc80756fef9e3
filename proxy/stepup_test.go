package proxy_test

import (
	"context"
	"encoding/base32"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/totpgate/totpgate/audit"
	"github.com/totpgate/totpgate/identity"
	"github.com/totpgate/totpgate/internal/gatecookie"
	"github.com/totpgate/totpgate/mfa"
	"github.com/totpgate/totpgate/mfa/mfatest"
	"github.com/totpgate/totpgate/proxy"
	"github.com/totpgate/totpgate/totp"
)

// stepUpApp is a real app on loopback: sessions are cookie sid=<id> or a
// bearer token (which wins when a request has both, as in many APIs), its
// identity endpoint answers whose they are (and counts how often it is
// asked), and POST /settings/password counts each change it makes.
type stepUpApp struct {
	*httptest.Server
	mu       sync.Mutex
	sessions map[string]string // sid -> user
	changes  int
	asked    int  // identity lookups
	meDown   bool // the identity endpoint answers 500
	lastSeen http.Header
	lastBody string
}

func newStepUpApp(t *testing.T) *stepUpApp {
	a := &stepUpApp{sessions: map[string]string{"S1": "alice", "S2": "alice", "SB": "bob", "SC": "carol", "TA": "alice", "TB": "bob"}}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		user := ""
		if c, err := r.Cookie("sid"); err == nil {
			user = a.sessions[c.Value]
		}
		if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			user = a.sessions[tok]
		}
		switch r.URL.Path {
		case "/api/me":
			a.asked++
			switch {
			case a.meDown:
				w.WriteHeader(http.StatusInternalServerError)
			case user == "":
				w.WriteHeader(http.StatusUnauthorized)
			default:
				json.NewEncoder(w).Encode(map[string]string{"id": user})
			}
		case "/settings/password":
			if user == "" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			b, _ := io.ReadAll(r.Body)
			a.changes++
			a.lastSeen, a.lastBody = r.Header.Clone(), string(b)
			w.Header().Set("X-App", "changed")
			w.Header().Add("Set-Cookie", "flash=done")
			w.WriteHeader(http.StatusAccepted)
			json.NewEncoder(w).Encode(map[string]any{"changes": a.changes, "user": user})
		default:
			io.WriteString(w, "page")
		}
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *stepUpApp) counts() (changes, asked int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.changes, a.asked
}

type stepUpEnv struct {
	t       *testing.T
	front   string
	app     *stepUpApp
	svc     *mfa.Service
	clock   *mfatest.Clock
	fw      *proxy.StepUpForwarder
	secrets map[string][]byte
	events  *eventLog
}

var stepUpChallenge = mfa.ChallengeConfig{TTL: 5 * time.Minute, MaxAttempts: 3}

// stepUpTransport are the limits of the tests' forwarders.
var stepUpTransport = proxy.TransportOptions{DialTimeout: 2 * time.Second, ResponseHeaderTimeout: 10 * time.Second}

// newStepUpEnv puts the gate, with a real mfa service on SQLite and a
// local keyring and a real introspector, in front of a stepUpApp.
func newStepUpEnv(t *testing.T, required bool, maxBody int64, limit *proxy.RateLimit) *stepUpEnv {
	t.Helper()
	clock := mfatest.NewClock(time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC))
	svc := mfatest.New(t, clock.Now).Service
	app := newStepUpApp(t)
	u, _ := url.Parse(app.URL)
	introspect, err := identity.NewIntrospector(&http.Client{Timeout: 5 * time.Second}, app.URL+"/api/me", []string{"Cookie"}, "/id", "")
	if err != nil {
		t.Fatal(err)
	}
	cred, _ := identity.ParseCredential("cookie:sid")
	token, _ := identity.ParseCredential("json:token as bearer")
	events := &eventLog{}
	tr := proxy.NewTransport(proxy.TransportOptions{DialTimeout: 2 * time.Second, ResponseHeaderTimeout: 10 * time.Second, IdleConnTimeout: time.Minute, MaxIdleConns: 16})
	f, err := proxy.New(proxy.Options{
		Upstream: u, PreserveHost: true, Transport: tr, APIPrefix: "/mfa", Logger: slog.New(slog.DiscardHandler),
		API: http.NotFoundHandler(),
		Login: &proxy.LoginOptions{
			Paths: []string{"/login"}, CodeHeader: "X-TOTP-Code", CodeField: "totp_code", UserIDPointer: "/user/id",
			Challenge: stepUpChallenge, ChallengeURL: "/mfa/challenge", MFA: svc, MaxAnswerBytes: 1 << 20, Audit: events,
			Credentials: []proxy.Credential{cred, token}, Introspector: introspect,
		},
		StepUp: &proxy.StepUpOptions{
			Routes:          []proxy.StepUpRoute{{Path: "/settings/password", Methods: []string{"POST"}, MaxAge: 5 * time.Minute}},
			MaxRequestBytes: maxBody, IdentityCacheTTL: 10 * time.Second, IdentityCacheEntries: 100, Required: required,
			Challenge: stepUpChallenge, ChallengeURL: "/mfa/step-up", MFA: svc, Audit: events, Now: clock.Now, RateLimit: limit,
			Page: "/mfa/",
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	fw, err := proxy.NewStepUpForwarder(proxy.StepUpForwarderOptions{Upstream: u, PreserveHost: true, Transport: stepUpTransport,
		Credentials: []proxy.Credential{cred}, MaxAnswerBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return &stepUpEnv{t: t, front: srv.URL, app: app, svc: svc, clock: clock, fw: fw, secrets: map[string][]byte{}, events: events}
}

func (e *stepUpEnv) enroll(user string) {
	e.t.Helper()
	ctx := context.Background()
	en, err := e.svc.StartEnrollment(ctx, user, user)
	if err != nil {
		e.t.Fatal(err)
	}
	secret, _ := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(en.Secret)
	if _, err := e.svc.ConfirmEnrollment(ctx, user, e.code(secret)); err != nil {
		e.t.Fatal(err)
	}
	e.clock.Add(30 * time.Second)
	e.secrets[user] = secret
}

func (e *stepUpEnv) code(secret []byte) string {
	p := totp.DefaultParams()
	return totp.Code(secret, p.Step(e.clock.Now()), p)
}

// change posts a password change through the gate with cookie.
func (e *stepUpEnv) change(cookie, body string) (*http.Response, map[string]any) {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.front+"/settings/password", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	json.NewDecoder(res.Body).Decode(&out)
	return res, out
}

// complete finishes the step-up challenge id as the session sid would and
// sends the held request to the app; it returns the app's answer and the
// proof.
func (e *stepUpEnv) complete(id, user, sid string) (mfa.HeldAnswer, mfa.StepUp) {
	e.t.Helper()
	r := httptest.NewRequest("POST", "/mfa/step-up", nil)
	r.Header.Set("Cookie", "sid="+sid)
	session, ok := e.fw.Session(r)
	if !ok {
		e.t.Fatal("no session")
	}
	up, err := e.svc.CompleteStepUp(context.Background(), id, e.code(e.secrets[user]), session, stepUpChallenge)
	if err != nil {
		e.t.Fatalf("complete: %v", err)
	}
	e.clock.Add(30 * time.Second) // the code's step is spent
	answer, err := e.fw.Forward(context.Background(), up.Request)
	if err != nil {
		e.t.Fatalf("forward: %v", err)
	}
	return answer, up
}

// The browser's own form post (a same-origin navigation) is held and sent
// to the self-service page with its challenge in the fragment; a form
// another site posts, and a script's fetch, get the 401. Either way the
// app sees nothing.
func TestStepUpSendsTheBrowsersOwnFormToThePage(t *testing.T) {
	t.Parallel()
	e := newStepUpEnv(t, false, 1024, nil)
	e.enroll("alice")
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct {
		name, mode, site string
		page             bool
	}{
		{"own form", "navigate", "same-origin", true},
		{"another site's form", "navigate", "cross-site", false},
		{"a sibling site's form", "navigate", "same-site", false},
		{"a script", "cors", "same-origin", false},
		{"no fetch metadata", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", e.front+"/settings/password", strings.NewReader("password=n3w"))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Cookie", "sid=S1")
			if tc.mode != "" {
				req.Header.Set("Sec-Fetch-Mode", tc.mode)
				req.Header.Set("Sec-Fetch-Site", tc.site)
			}
			res, err := noRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			loc := res.Header.Get("Location")
			switch {
			case tc.page && (res.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/mfa/#step-up=") || len(strings.TrimPrefix(loc, "/mfa/#step-up=")) != 43 ||
				res.Header.Get("Cache-Control") != "no-store"):
				t.Errorf("= %d Location %q, want 303 to the page with the challenge", res.StatusCode, loc)
			case tc.page && !slices.ContainsFunc(res.Cookies(), func(c *http.Cookie) bool {
				return c.Name == "__Host-totpgate-step-up-nav" && c.Value == mfa.PageMark(strings.TrimPrefix(loc, "/mfa/#step-up=")) && c.Secure && c.HttpOnly
			}):
				t.Errorf("the 303 set no page mark for its challenge: %v", res.Header.Values("Set-Cookie"))
			case !tc.page && (res.StatusCode != http.StatusUnauthorized || loc != ""):
				t.Errorf("= %d Location %q, want 401 mfa_step_up_required", res.StatusCode, loc)
			}
		})
	}
	if n, _ := e.app.counts(); n != 0 {
		t.Fatalf("the app ran a held change %d times", n)
	}
}

func TestStepUpHoldsUntilTheCodeAndReleasesOnce(t *testing.T) {
	t.Parallel()
	e := newStepUpEnv(t, false, 1024, nil)
	e.enroll("alice")

	res, p := e.change("sid=S1; __Host-totpgate-device=dev", `{"password":"new"}`)
	id, _ := p["challenge_id"].(string)
	if res.StatusCode != 401 || p["code"] != "mfa_step_up_required" || len(id) != 43 || p["challenge_url"] != "/mfa/step-up" ||
		res.Header.Get("WWW-Authenticate") != `TOTP realm="totpgate", challenge="`+id+`"` || res.Header.Get("Cache-Control") != "no-store" ||
		p["attempts_remaining"] != 3.0 || p["expires_at"] == nil {
		t.Fatalf("change without a proof = %d %v %v", res.StatusCode, res.Header, p)
	}
	if n, _ := e.app.counts(); n != 0 {
		t.Fatalf("the app ran the held change %d times", n)
	}
	if !e.events.hasAt(audit.StepUpRequired, "alice", "/settings/password", "challenge_issued") {
		t.Error("no step_up_required event")
	}

	answer, up := e.complete(id, "alice", "S1")
	if n, _ := e.app.counts(); n != 1 || answer.Status != http.StatusAccepted || answer.Header.Get("X-App") != "changed" ||
		!strings.Contains(string(answer.Body), `"changes":1`) || answer.Header.Get("Set-Cookie") != "flash=done" {
		t.Fatalf("released: app ran %d times, answered %d %v %s", n, answer.Status, answer.Header, answer.Body)
	}
	e.app.mu.Lock()
	seen, body := e.app.lastSeen, e.app.lastBody
	e.app.mu.Unlock()
	if body != `{"password":"new"}` || seen.Get("Content-Type") != "application/json" || seen.Get("Cookie") != "sid=S1" || seen.Get("X-Forwarded-For") == "" {
		t.Fatalf("the app got %v %q, want the held request without the gate's cookies", seen, body)
	}
	// Spent: the same challenge does not release again.
	r := httptest.NewRequest("POST", "/", nil)
	r.Header.Set("Cookie", "sid=S1")
	session, _ := e.fw.Session(r)
	if _, err := e.svc.CompleteStepUp(context.Background(), id, e.code(e.secrets["alice"]), session, stepUpChallenge); err == nil {
		t.Fatal("a spent challenge completed again")
	}

	// With the proof the next change passes directly.
	proof := gatecookie.StepUp + "=" + up.Proof
	res, p = e.change("sid=S1; "+proof, `{"password":"newer"}`)
	if n, _ := e.app.counts(); res.StatusCode != http.StatusAccepted || n != 2 {
		t.Fatalf("change with a proof = %d %v (app ran %d times)", res.StatusCode, p, n)
	}
}

// The proof passes only for its user, its session and within max_age.
func TestStepUpProofTable(t *testing.T) {
	t.Parallel()
	e := newStepUpEnv(t, false, 1024, nil)
	e.enroll("alice")
	e.enroll("bob")
	_, p := e.change("sid=S1", `{}`)
	_, up := e.complete(p["challenge_id"].(string), "alice", "S1")
	proof := up.Proof
	payload, mac, _ := strings.Cut(proof, ".")
	tampered := payload + "." + strings.Map(func(r rune) rune {
		if r == 'A' {
			return 'B'
		}
		return 'A'
	}, mac)
	e.clock.Add(time.Hour)
	_, p = e.change("sid=S1", `{}`)
	_, future := e.complete(p["challenge_id"].(string), "alice", "S1")
	e.clock.Add(-time.Hour - 30*time.Second) // back to 30 s after the first proof

	for _, tc := range []struct {
		name, cookie string
		passes       bool
	}{
		{"its user and session", "sid=S1; " + gatecookie.StepUp + "=" + proof, true},
		{"another session of the same user", "sid=S2; " + gatecookie.StepUp + "=" + proof, false},
		{"another user", "sid=SB; " + gatecookie.StepUp + "=" + proof, false},
		{"a wrong MAC", "sid=S1; " + gatecookie.StepUp + "=" + tampered, false},
		{"from the future", "sid=S1; " + gatecookie.StepUp + "=" + future.Proof, false},
		{"malformed", "sid=S1; " + gatecookie.StepUp + "=garbage", false},
		{"empty", "sid=S1; " + gatecookie.StepUp + "=", false},
		{"twice", "sid=S1; " + gatecookie.StepUp + "=" + proof + "; " + gatecookie.StepUp + "=" + proof, false},
		{"none", "sid=S1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := e.app.counts()
			res, p := e.change(tc.cookie, `{}`)
			after, _ := e.app.counts()
			if tc.passes && (res.StatusCode != http.StatusAccepted || after != before+1) {
				t.Fatalf("= %d %v, want it passed to the app", res.StatusCode, p)
			}
			if !tc.passes && (res.StatusCode != 401 || p["code"] != "mfa_step_up_required" || after != before) {
				t.Fatalf("= %d %v (app ran %d more), want it held", res.StatusCode, p, after-before)
			}
		})
	}
	// Expired: past max_age the same proof is challenged again.
	e.clock.Add(5*time.Minute - 30*time.Second)
	if res, _ := e.change("sid=S1; "+gatecookie.StepUp+"="+proof, `{}`); res.StatusCode != http.StatusAccepted {
		t.Fatalf("at exactly max_age = %d, want passed", res.StatusCode)
	}
	e.clock.Add(time.Second)
	if res, p := e.change("sid=S1; "+gatecookie.StepUp+"="+proof, `{}`); res.StatusCode != 401 || p["code"] != "mfa_step_up_required" {
		t.Fatalf("past max_age = %d %v, want held", res.StatusCode, p)
	}
}

func TestStepUpWhoPasses(t *testing.T) {
	t.Parallel()
	for _, required := range []bool{false, true} {
		e := newStepUpEnv(t, required, 1024, nil)
		e.enroll("alice")
		for _, tc := range []struct {
			name, cookie string
			status       int
			code         string
			ran          bool
		}{
			{"not logged in", "", 401, "", false},              // the app refuses it
			{"an unknown session", "sid=nope", 401, "", false}, // the app refuses it
			{"a user without MFA", "sid=SC", http.StatusAccepted, "", true},
			{"a session cookie twice", "sid=SC; sid=S1", 400, "bad_request", false},
			{"an enrolled user", "sid=S1", 401, "mfa_step_up_required", false},
		} {
			if required && tc.name == "a user without MFA" {
				tc.status, tc.code, tc.ran = 403, "mfa_enrollment_required", false
			}
			before, _ := e.app.counts()
			res, p := e.change(tc.cookie, `{}`)
			after, _ := e.app.counts()
			code, _ := p["code"].(string)
			if res.StatusCode != tc.status || code != tc.code || (after > before) != tc.ran {
				t.Errorf("required=%v %s: %d %q (ran: %v), want %d %q (ran: %v)", required, tc.name, res.StatusCode, code, after > before, tc.status, tc.code, tc.ran)
			}
		}
		if required && !e.events.hasAt(audit.StepUpRefused, "carol", "/settings/password", "enrollment_required") {
			t.Error("no step_up_refused enrollment_required event")
		}
	}
}

// A request that presents sessions of two users is refused: the gate
// cannot know which one the app acts on (this app takes the bearer token),
// so it cannot know whose second factor is needed.
func TestStepUpSessionsOfTwoUsers(t *testing.T) {
	t.Parallel()
	e := newStepUpEnv(t, false, 1024, nil)
	e.enroll("alice")
	e.enroll("bob")
	for _, tc := range []struct {
		name, bearer string
		status       int
		code         string
	}{
		{"alice's cookie, bob's token", "TB", 400, "bad_request"},
		{"alice's cookie and token", "TA", 401, "mfa_step_up_required"},
		{"alice's cookie, a token nobody has", "T?", 401, "mfa_step_up_required"},
	} {
		req, _ := http.NewRequest("POST", e.front+"/settings/password", strings.NewReader(`{}`))
		req.Header.Set("Cookie", "sid=S1")
		req.Header.Set("Authorization", "Bearer "+tc.bearer)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var p map[string]any
		json.NewDecoder(res.Body).Decode(&p)
		res.Body.Close()
		if res.StatusCode != tc.status || p["code"] != tc.code {
			t.Errorf("%s: %d %v, want %d %s", tc.name, res.StatusCode, p, tc.status, tc.code)
		}
	}
	if n, _ := e.app.counts(); n != 0 {
		t.Fatalf("the app ran %d times", n)
	}
}

// Only requests to the configured route and methods are held; a login
// route is the login gate's.
func TestStepUpOnlyOnItsRoutes(t *testing.T) {
	t.Parallel()
	e := newStepUpEnv(t, false, 1024, nil)
	e.enroll("alice")
	for _, tc := range []struct {
		method, path string
		held         bool
	}{
		{"POST", "/settings/password", true},
		{"POST", "/SETTINGS/password/", true},
		{"POST", "/settings/password.json", true},
		{"GET", "/settings/password", false},
		{"POST", "/settings", false},
		{"POST", "/other", false},
	} {
		req, _ := http.NewRequest(tc.method, e.front+tc.path, nil)
		req.Header.Set("Cookie", "sid=S1")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if held := res.StatusCode == 401 && res.Header.Get("WWW-Authenticate") != ""; held != tc.held {
			t.Errorf("%s %s: %d, held %v, want %v", tc.method, tc.path, res.StatusCode, held, tc.held)
		}
	}
}

// A held request is bounded: a larger body is refused with 413 and never
// reaches the app.
func TestStepUpRequestBound(t *testing.T) {
	t.Parallel()
	e := newStepUpEnv(t, false, 1024, nil)
	e.enroll("alice")
	for _, size := range []int{1024, 1025, 1 << 20} {
		res, p := e.change("sid=S1", strings.Repeat("x", size))
		want := 401
		if size > 1024 {
			want = 413
		}
		if res.StatusCode != want {
			t.Errorf("a %d-byte body = %d %v, want %d", size, res.StatusCode, p, want)
		}
	}
	// A chunked body (no Content-Length) is bounded as it is read.
	req, _ := http.NewRequest("POST", e.front+"/settings/password", io.MultiReader(strings.NewReader(strings.Repeat("y", 2000))))
	req.Header.Set("Cookie", "sid=S1")
	req.ContentLength = -1
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 413 {
		t.Errorf("a chunked 2000-byte body = %d, want 413", res.StatusCode)
	}
	if n, _ := e.app.counts(); n != 0 {
		t.Fatalf("the app ran %d times", n)
	}
	if !e.events.hasAt(audit.StepUpRefused, "alice", "/settings/password", "too_large") {
		t.Error("no step_up_refused too_large event")
	}
}

// Whose session a credential is, is remembered for the ttl on the
// injected clock; negative answers and outages are not.
func TestStepUpIdentityCache(t *testing.T) {
	t.Parallel()
	e := newStepUpEnv(t, false, 1024, nil)
	e.enroll("alice")
	asked := func() int { _, n := e.app.counts(); return n }
	e.change("sid=S1", `{}`)
	e.change("sid=S1", `{}`)
	if n := asked(); n != 1 {
		t.Fatalf("two requests of one session within the ttl asked the app %d times, want 1 (a hit)", n)
	}
	e.change("sid=S2", `{}`)
	if n := asked(); n != 2 {
		t.Fatalf("another session asked %d times in all, want 2 (a miss)", n)
	}
	// The same session on another Host is another question (an app may
	// read one credential as different users on different hosts).
	req, _ := http.NewRequest("POST", e.front+"/settings/password", strings.NewReader(`{}`))
	req.Host = "tenant-b.example"
	req.Header.Set("Cookie", "sid=S1")
	if res, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else {
		res.Body.Close()
	}
	if n := asked(); n != 3 {
		t.Fatalf("the session on another Host asked %d times in all, want 3 (a miss)", n)
	}
	e.clock.Add(10 * time.Second)
	e.change("sid=S1", `{}`)
	if n := asked(); n != 4 {
		t.Fatalf("after the ttl the app was asked %d times in all, want 4 (expired)", n)
	}
	e.change("sid=nope", `{}`)
	e.change("sid=nope", `{}`)
	if n := asked(); n != 6 {
		t.Fatalf("an unknown session was asked %d times in all, want 6 (never cached)", n)
	}
	// The app's identity endpoint failing: refused (503), not cached.
	e.app.mu.Lock()
	e.app.meDown = true
	e.app.mu.Unlock()
	if res, p := e.change("sid=SB", `{}`); res.StatusCode != 503 || p["code"] != "mfa_unavailable" {
		t.Fatalf("identity endpoint down = %d %v, want 503", res.StatusCode, p)
	}
	e.app.mu.Lock()
	e.app.meDown = false
	e.app.mu.Unlock()
	before := asked()
	if res, _ := e.change("sid=SB", `{}`); res.StatusCode != http.StatusAccepted || asked() != before+1 {
		t.Fatalf("after the outage = %d, asked %d more; want passed, asked again", res.StatusCode, asked()-before)
	}
	if !e.events.hasAt(audit.StepUpRefused, "", "/settings/password", "unavailable") {
		t.Error("no step_up_refused unavailable event")
	}
}

// The app's answer to a released request is read bounded too: a larger
// one is an error (the API answers 502), never held whole.
func TestStepUpForwardReadsTheAnswerBounded(t *testing.T) {
	t.Parallel()
	var sent atomic.Int32
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sent.Add(1)
		w.Write([]byte(strings.Repeat("x", 2048)))
	}))
	t.Cleanup(app.Close)
	u, _ := url.Parse(app.URL)
	cred, _ := identity.ParseCredential("cookie:sid")
	for _, limit := range []int64{2048, 2047} {
		fw, err := proxy.NewStepUpForwarder(proxy.StepUpForwarderOptions{Upstream: u, Transport: stepUpTransport,
			Credentials: []proxy.Credential{cred}, MaxAnswerBytes: limit})
		if err != nil {
			t.Fatal(err)
		}
		a, err := fw.Forward(context.Background(), mfa.HeldRequest{Method: "POST", URI: "/settings/password?x=1", Header: http.Header{}, Body: []byte("b")})
		if limit == 2048 && (err != nil || len(a.Body) != 2048 || a.Status != 200) {
			t.Fatalf("an answer at the bound = %d bytes, %v", len(a.Body), err)
		}
		if limit == 2047 && err == nil {
			t.Fatal("an answer over the bound was read whole")
		}
	}
	if n := sent.Load(); n != 2 {
		t.Fatalf("the app got %d requests, want one per forward", n)
	}
}

// Held requests come out of the client's rate-limit budget: no client
// fills the store with them.
func TestStepUpHoldsAreRateLimited(t *testing.T) {
	t.Parallel()
	e := newStepUpEnv(t, false, 1024, proxy.NewRateLimit(proxy.NewPeers(nil), 0.001, 2, 64, time.Now))
	e.enroll("alice")
	for i, want := range []int{401, 401, 429} {
		res, p := e.change("sid=S1", `{}`)
		if res.StatusCode != want || (want == 429 && (p["code"] != "rate_limited" || res.Header.Get("Retry-After") == "")) {
			t.Fatalf("hold %d = %d %v, want %d", i+1, res.StatusCode, p, want)
		}
	}
	if !e.events.hasAt(audit.StepUpRefused, "alice", "/settings/password", "rate_limited") {
		t.Error("no step_up_refused rate_limited event")
	}
	// What needs no hold is not limited: a user without MFA passes.
	if res, _ := e.change("sid=SC", `{}`); res.StatusCode != http.StatusAccepted {
		t.Fatalf("a user without MFA after the limit = %d", res.StatusCode)
	}
}
