package main

// The differential suite: real frameworks (Express 4 + express-session,
// Django's stock LoginView) and a Go app with the awkward answers (a token
// in a redirect, a session in a header, a gzip body ignoring
// Accept-Encoding, 103 Early Hints, 200 on failure) stand behind a real
// sidecar. Every request spelling goes once straight to the app and once
// through the gate. Whenever the direct request yields a usable session
// for an enrolled user, the gated one must yield none: whatever came back
// (cookies, tokens, the cookie the client already held) is presented to
// the app's authenticated endpoint and must be refused there.

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/totpgate/totpgate/gen"
	"github.com/totpgate/totpgate/internal/testenv"
	"github.com/totpgate/totpgate/totp"
)

// diffTarget is one app behind one sidecar.
type diffTarget struct {
	name      string
	app       string // the app's base URL
	loginPath string // the app's canonical login path
	paths     []string
	sidecar   *sidecar
	// bodyKinds the app's login accepts; spellings of other kinds still
	// run (the direct answer decides whether they matter).
	formOnly bool
	// anyStatus are paths whose gated answer may be a plain 200: the
	// session came in a 1xx that the gate drops, the final answer carries
	// nothing.
	anyStatus map[string]bool
}

// noRedirect is a client that shows every answer as it came.
var noRedirect = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	// No keep-alive: Django's development server sends a body after HEAD.
	Transport: &http.Transport{ExpectContinueTimeout: time.Second, DisableCompression: true, DisableKeepAlives: true},
	Timeout:   20 * time.Second,
}

// spelling builds one login request for user against base.
type spelling struct {
	name  string
	build func(base, path, user string) *http.Request
}

func formReq(method, target, body string, h ...string) *http.Request {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, target, r)
	if body != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i < len(h); i += 2 {
		req.Header.Set(h[i], h[i+1])
	}
	return req
}

func jsonReq(target, body, ctype string, h ...string) *http.Request {
	req, _ := http.NewRequest("POST", target, strings.NewReader(body))
	req.Header.Set("Content-Type", ctype)
	for i := 0; i < len(h); i += 2 {
		req.Header.Set(h[i], h[i+1])
	}
	return req
}

func form(user string) string { return "username=" + url.QueryEscape(user) + "&password=pw" }
func jsonBody(user string) string {
	b, _ := json.Marshal(map[string]string{"username": user, "password": "pw"})
	return string(b)
}

func multipartReq(target, user string) *http.Request {
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	mw.WriteField("username", user)
	mw.WriteField("password", "pw")
	mw.Close()
	req, _ := http.NewRequest("POST", target, &b)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	return req
}

// spellings are the ways a client can say "log me in as user".
func spellings() []spelling {
	s := []spelling{
		{"form", func(b, p, u string) *http.Request { return formReq("POST", b+p, form(u)) }},
		{"json", func(b, p, u string) *http.Request { return jsonReq(b+p, jsonBody(u), "application/json") }},
		{"json as text/plain", func(b, p, u string) *http.Request { return jsonReq(b+p, jsonBody(u), "text/plain;charset=UTF-8") }},
		{"json +json type", func(b, p, u string) *http.Request { return jsonReq(b+p, jsonBody(u), "application/vnd.api+json") }},
		{"multipart", func(b, p, u string) *http.Request { return multipartReq(b+p, u) }},
		{"GET with query", func(b, p, u string) *http.Request { return formReq("GET", b+p+"?"+form(u), "") }},
		{"HEAD with query", func(b, p, u string) *http.Request { return formReq("HEAD", b+p+"?"+form(u), "") }},
		{"PUT form", func(b, p, u string) *http.Request { return formReq("PUT", b+p, form(u)) }},
		{"Expect 100-continue form", func(b, p, u string) *http.Request { return formReq("POST", b+p, form(u), "Expect", "100-continue") }},
		{"Expect 100-continue json", func(b, p, u string) *http.Request {
			return jsonReq(b+p, jsonBody(u), "application/json", "Expect", "100-continue")
		}},
		{"Accept-Encoding gzip form", func(b, p, u string) *http.Request { return formReq("POST", b+p, form(u), "Accept-Encoding", "gzip") }},
		{"Accept-Encoding gzip json", func(b, p, u string) *http.Request {
			return jsonReq(b+p, jsonBody(u), "application/json", "Accept-Encoding", "gzip, deflate, br")
		}},
		{"repeated user form", func(b, p, u string) *http.Request {
			return formReq("POST", b+p, "username=nobody&"+form(u))
		}},
		{"repeated user json", func(b, p, u string) *http.Request {
			return jsonReq(b+p, `{"username":"nobody","username":"`+u+`","password":"pw"}`, "application/json")
		}},
		{"upper-case user form", func(b, p, u string) *http.Request { return formReq("POST", b+p, form(strings.ToUpper(u))) }},
		{"upper-case user json", func(b, p, u string) *http.Request {
			return jsonReq(b+p, jsonBody(strings.ToUpper(u)), "application/json")
		}},
		{"fullwidth user form", func(b, p, u string) *http.Request { return formReq("POST", b+p, form(fullwidth(u))) }},
		{"padded user form", func(b, p, u string) *http.Request { return formReq("POST", b+p, form(" "+u+" ")) }},
		{"query plus body", func(b, p, u string) *http.Request {
			return formReq("POST", b+p+"?username=nobody", form(u))
		}},
		{"form latin-1 charset", func(b, p, u string) *http.Request {
			r := formReq("POST", b+p, form(u))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=ISO-8859-1")
			return r
		}},
		{"chunked form", func(b, p, u string) *http.Request {
			r := formReq("POST", b+p, "")
			r.Body = io.NopCloser(strings.NewReader(form(u))) // unknown length: sent chunked
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			return r
		}},
		{"chunked json", func(b, p, u string) *http.Request {
			r := jsonReq(b+p, "", "application/json")
			r.Body, r.ContentLength = io.NopCloser(strings.NewReader(jsonBody(u))), -1
			return r
		}},
		{"method override header", func(b, p, u string) *http.Request {
			return formReq("POST", b+p, form(u), "X-HTTP-Method-Override", "PUT")
		}},
	}
	for _, variant := range []string{"UPPER", "//double/", "trailing/", ".json", ";jsessionid=x", "%-encoded", "dotless-i"} {
		s = append(s, spelling{"path " + variant + " form", func(b, p, u string) *http.Request {
			return formReq("POST", b+respell(p, variant), form(u))
		}}, spelling{"path " + variant + " json", func(b, p, u string) *http.Request {
			return jsonReq(b+respell(p, variant), jsonBody(u), "application/json")
		}})
	}
	return s
}

func fullwidth(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= '!' && r <= '~' {
			return r - '!' + '！'
		}
		return r
	}, s)
}

// respell spells the login path p another way a framework may route alike.
func respell(p, how string) string {
	trimmed := strings.TrimSuffix(p, "/")
	switch how {
	case "UPPER":
		return strings.ToUpper(p)
	case "//double/":
		return "/" + p + "/"
	case "trailing/":
		if strings.HasSuffix(p, "/") {
			return trimmed
		}
		return p + "/"
	case ".json":
		return trimmed + ".json"
	case ";jsessionid=x":
		return trimmed + ";jsessionid=x" + strings.TrimPrefix(p, trimmed)
	case "%-encoded":
		return strings.Replace(p, "o", "%6F", 1)
	case "dotless-i":
		return strings.Replace(p, "i", "%C4%B1", 1)
	}
	return p
}

// outcome of one request: the credentials that came back.
type outcome struct {
	status  int
	cookies map[string]string
	tokens  []string
	body    string
}

var tokenPattern = regexp.MustCompile(`TOK-[0-9a-f]{16}`)

// send runs req with the client's earlier cookies (an anonymous session),
// and collects every credential of the answer.
func send(t *testing.T, req *http.Request, jar map[string]string) outcome {
	t.Helper()
	for k, v := range jar {
		req.AddCookie(&http.Cookie{Name: k, Value: v})
	}
	// Informational answers (103 Early Hints) count too: a client sees them.
	var early []http.Header
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			early = append(early, http.Header(h).Clone())
			return nil
		},
	}))
	res, err := noRedirect.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if res.Header.Get("Content-Encoding") == "gzip" {
		if zr, err := gzip.NewReader(bytes.NewReader(raw)); err == nil {
			raw, _ = io.ReadAll(zr)
		}
	}
	o := outcome{status: res.StatusCode, cookies: map[string]string{}, body: string(raw)}
	for k, v := range jar {
		o.cookies[k] = v
	}
	var hdrs strings.Builder
	for _, h := range append(early, res.Header) {
		for _, c := range (&http.Response{Header: h}).Cookies() {
			o.cookies[c.Name] = c.Value
		}
		for k, vs := range h {
			hdrs.WriteString(k + ": " + strings.Join(vs, ",") + "\n")
		}
	}
	o.tokens = tokenPattern.FindAllString(hdrs.String()+string(raw), -1)
	return o
}

// sessionUser presents everything in o to the app's authenticated
// endpoint, directly, and returns the user it is logged in as ("" when
// none of it is a session).
func sessionUser(t *testing.T, app string, o outcome) string {
	t.Helper()
	try := func(h http.Header) string {
		req, _ := http.NewRequest("GET", app+"/api/me", nil)
		req.Header = h
		res, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var me struct{ ID string }
		if res.StatusCode != 200 || json.NewDecoder(res.Body).Decode(&me) != nil {
			return ""
		}
		return me.ID
	}
	var cookies []string
	for k, v := range o.cookies {
		cookies = append(cookies, k+"="+v)
	}
	if len(cookies) > 0 {
		if u := try(http.Header{"Cookie": {strings.Join(cookies, "; ")}}); u != "" {
			return u
		}
	}
	for _, tok := range o.tokens {
		if u := try(http.Header{"Authorization": {"Bearer " + tok}}); u != "" {
			return u
		}
	}
	return ""
}

// anonymousJar is what a visitor holds before logging in: the app's
// session cookie for an anonymous session, fetched through base.
func anonymousJar(t *testing.T, base string) map[string]string {
	t.Helper()
	o := send(t, formReq("GET", base+"/", ""), nil)
	return o.cookies
}

// enrollAt logs user in at the app directly and enrolls them through the
// sidecar with that session; it returns a code generator.
func enrollAt(t *testing.T, tg *diffTarget, user string, login func() outcome) func(int64) string {
	t.Helper()
	o := login()
	var cookies []string
	for k, v := range o.cookies {
		cookies = append(cookies, k+"="+v)
	}
	if len(cookies) == 0 {
		t.Fatalf("%s: direct login of %s gave no cookie (status %d)", tg.name, user, o.status)
	}
	withSession := func(_ context.Context, r *http.Request) error {
		r.Header.Set("Cookie", strings.Join(cookies, "; "))
		return nil
	}
	c, err := gen.NewClientWithResponses(tg.sidecar.main)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	en, err := c.StartEnrollmentWithResponse(ctx, withSession)
	if err != nil || en.JSON201 == nil {
		t.Fatalf("%s: enroll %s: %v %s", tg.name, user, err, en.Body)
	}
	secret, _ := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(en.JSON201.Secret)
	p := totp.DefaultParams()
	code := func(offset int64) string { return totp.Code(secret, p.Step(time.Now())+offset, p) }
	for range 2 {
		conf, _ := c.ConfirmEnrollmentWithResponse(ctx, gen.CodeRequest{Code: code(-1)}, withSession)
		if conf != nil && conf.JSON200 != nil {
			return code
		}
	}
	t.Fatalf("%s: confirm enrollment of %s failed", tg.name, user)
	return nil
}

// runDifferential sends every spelling for the enrolled user directly and
// through the gate. It returns how many spellings gave a usable session
// directly (the suite proves nothing where that is zero).
func runDifferential(t *testing.T, tg *diffTarget, enrolled string) int {
	t.Helper()
	usableDirect := 0
	for _, path := range tg.paths {
		for _, sp := range spellings() {
			direct := send(t, sp.build(tg.app, path, enrolled), anonymousJar(t, tg.app))
			if sessionUser(t, tg.app, direct) != enrolled {
				continue
			}
			usableDirect++
			gated := send(t, sp.build(tg.sidecar.main, path, enrolled), anonymousJar(t, tg.sidecar.main))
			if u := sessionUser(t, tg.app, gated); u != "" {
				t.Errorf("%s %s %s: the gate let a session for %q out without a second factor (gated status %d, body %.200q)",
					tg.name, path, sp.name, u, gated.status, gated.body)
			}
			switch {
			case tg.anyStatus[path]:
			case gated.status == 400, gated.status == 401, gated.status == 413, gated.status == 415, gated.status == 502, gated.status == 503:
			default:
				t.Errorf("%s %s %s: gated status %d for an enrolled user", tg.name, path, sp.name, gated.status)
			}
		}
	}
	t.Logf("%s: %d spellings gave %s a usable session directly; none did through the gate", tg.name, usableDirect, enrolled)
	return usableDirect
}

// completeChallenge proves the held answer is the app's real one: a
// gated login, then the two-call flow with a valid code, gives a session.
func completeChallenge(t *testing.T, tg *diffTarget, req *http.Request, code func(int64) string, step int64) {
	t.Helper()
	gated := send(t, req, anonymousJar(t, tg.sidecar.main))
	var p struct {
		Code        string `json:"code"`
		ChallengeID string `json:"challenge_id"`
	}
	if err := json.Unmarshal([]byte(gated.body), &p); err != nil || gated.status != 401 || p.Code != "mfa_required" {
		t.Fatalf("%s: gated login = %d %s, want 401 mfa_required", tg.name, gated.status, gated.body)
	}
	body, _ := json.Marshal(map[string]string{"challenge_id": p.ChallengeID, "code": code(step)})
	done := send(t, jsonReq(tg.sidecar.main+"/mfa/challenge", string(body), "application/json"), nil)
	if u := sessionUser(t, tg.app, done); u == "" {
		t.Fatalf("%s: completed challenge (%d) gave no usable session: %.300s", tg.name, done.status, done.body)
	}
}

func appSidecar(t *testing.T, app string, env ...string) *sidecar {
	return startSidecar(t, append([]string{
		"TOTPGATE_IDENTITY_INTROSPECT_PATH=/api/me", "TOTPGATE_IDENTITY_USER_ID_POINTER=/id",
		"TOTPGATE_IDENTITY_FORWARD_HEADERS=Cookie,Authorization",
	}, env...), "--upstream", app)
}

func TestDifferentialExpress(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{testenv.LoginRegenerate, testenv.LoginInPlace} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			app := testenv.Express(t, mode)
			// Only /login is configured; /signup and /password/reset log
			// users in too, found by the session credential.
			tg := &diffTarget{name: "express/" + mode, app: app, loginPath: "/login", paths: []string{"/login", "/signup", "/password/reset"},
				sidecar: appSidecar(t, app, "TOTPGATE_LOGIN_PATHS=/login", "TOTPGATE_LOGIN_USER_ID_POINTER=/user/id", "TOTPGATE_SESSION_CREDENTIALS=cookie:connect.sid")}
			code := enrollAt(t, tg, "alice", func() outcome {
				return send(t, jsonReq(app+"/login", jsonBody("alice"), "application/json"), nil)
			})
			if n := runDifferential(t, tg, "alice"); n < 3*15 {
				t.Errorf("only %d spellings gave a session directly; the differential proves little", n)
			}
			completeChallenge(t, tg, jsonReq(tg.sidecar.main+"/login", jsonBody("alice"), "application/json", "Accept-Encoding", "gzip"), code, 0)
			completeChallenge(t, tg, jsonReq(tg.sidecar.main+"/signup", jsonBody("alice"), "application/json"), code, 1)
			// A user without MFA still logs in through the gate, whatever the spelling.
			for _, path := range tg.paths {
				for _, sp := range []string{"json", "Expect 100-continue json", "Accept-Encoding gzip json", "form"} {
					for _, s := range spellings() {
						if s.name == sp {
							if u := sessionUser(t, app, send(t, s.build(tg.sidecar.main, path, "bob"), anonymousJar(t, tg.sidecar.main))); u != "bob" {
								t.Errorf("%s %s: bob (no MFA) did not get his session through the gate: %q", path, sp, u)
							}
						}
					}
				}
			}
			// A logged-in user's own session keeps working on every route.
			o := send(t, jsonReq(tg.sidecar.main+"/signup", jsonBody("newcomer"), "application/json"), nil)
			if u := sessionUser(t, app, o); u != "newcomer" {
				t.Errorf("signup of a new user without MFA through the gate: %q (status %d)", u, o.status)
			}
		})
	}
	t.Run("required policy", func(t *testing.T) {
		t.Parallel()
		app := testenv.Express(t, testenv.LoginInPlace)
		tg := &diffTarget{name: "express/required", app: app, loginPath: "/login", paths: []string{"/login", "/signup", "/password/reset"},
			sidecar: appSidecar(t, app, "TOTPGATE_LOGIN_PATHS=/login", "TOTPGATE_LOGIN_USER_ID_POINTER=/user/id", "TOTPGATE_MFA_POLICY=required",
				"TOTPGATE_SESSION_CREDENTIALS=cookie:connect.sid")}
		if n := runDifferential(t, tg, "carol"); n < 3*15 { // carol has no MFA: under required she must enroll first
			t.Errorf("only %d spellings gave a session directly", n)
		}
		// A brand-new signup is held until the newcomer enrolls.
		o := send(t, jsonReq(tg.sidecar.main+"/signup", jsonBody("zed"), "application/json"), nil)
		if u := sessionUser(t, app, o); u != "" || o.status != 401 || !strings.Contains(o.body, "mfa_enrollment_required") {
			t.Errorf("new signup under the required policy = %d %.120s (session %q)", o.status, o.body, u)
		}
	})
}

func TestDifferentialDjango(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{testenv.LoginRegenerate, testenv.LoginInPlace} {
		for _, attribution := range []string{"header", "request_field", "introspection"} {
			t.Run(mode+"/"+attribution, func(t *testing.T) {
				t.Parallel()
				app := testenv.Django(t, mode, attribution == "header")
				env := []string{"TOTPGATE_LOGIN_PATHS=/login/"}
				paths := []string{"/login/"}
				switch attribution {
				case "header":
					env = append(env, "TOTPGATE_LOGIN_USER_ID_HEADER=X-User-Id", "TOTPGATE_SESSION_CREDENTIALS=cookie:sessionid")
					paths = append(paths, "/magic/")
				case "request_field":
					// Django's AuthenticationForm strips and NFKC-normalizes the name.
					env = append(env, "TOTPGATE_LOGIN_USER_ID_REQUEST_FIELD=username", "TOTPGATE_LOGIN_USER_ID_NORMALIZE=trim,nfkc")
				case "introspection":
					// The login answer is a redirect that names nobody: the
					// session cookie, shown to /api/me, says whose it is.
					env = append(env, "TOTPGATE_SESSION_CREDENTIALS=cookie:sessionid")
					paths = append(paths, "/magic/")
				}
				tg := &diffTarget{name: "django/" + mode + "/" + attribution, app: app, loginPath: "/login/", paths: paths, formOnly: true,
					sidecar: appSidecar(t, app, env...)}
				code := enrollAt(t, tg, "alice", func() outcome { return send(t, formReq("POST", app+"/login/", form("alice")), nil) })
				if n := runDifferential(t, tg, "alice"); n < 8*len(paths) {
					t.Errorf("only %d spellings gave a session directly; the differential proves little", n)
				}
				completeChallenge(t, tg, formReq("POST", tg.sidecar.main+"/login/", form("alice"), "Accept-Encoding", "gzip"), code, 0)
				for _, p := range paths {
					if u := sessionUser(t, app, send(t, formReq("POST", tg.sidecar.main+p, form("bob")), anonymousJar(t, tg.sidecar.main))); u != "bob" {
						t.Errorf("%s: bob (no MFA) did not get his session through the gate: %q", p, u)
					}
				}
				// The login form page still renders through the gate.
				if o := send(t, formReq("GET", tg.sidecar.main+"/login/", ""), nil); o.status != 200 || !strings.Contains(o.body, "<form") {
					t.Errorf("GET /login/ through the gate = %d", o.status)
				}
			})
		}
	}
}

// awkwardApp is a Go app whose logins answer in the ways that slipped past
// the old gate. Every session is a random TOK-… token, valid as cookie
// gosession or as a bearer token on /api/me.
type awkwardApp struct {
	*httptest.Server
	mu       sync.Mutex
	sessions map[string]string
}

func newAwkwardApp(t *testing.T) *awkwardApp {
	a := &awkwardApp{sessions: map[string]string{}}
	a.Server = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.Close)
	return a
}

func (a *awkwardApp) newSession(user string) string {
	var b [8]byte
	rand.Read(b[:])
	tok := "TOK-" + hex.EncodeToString(b[:])
	a.mu.Lock()
	a.sessions[tok] = user
	a.mu.Unlock()
	return tok
}

func (a *awkwardApp) serve(w http.ResponseWriter, r *http.Request) {
	p := strings.ToLower(strings.TrimSuffix(strings.Split(r.URL.Path, ";")[0], "/"))
	if p == "/api/me" {
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if c, err := r.Cookie("gosession"); err == nil {
			tok = c.Value
		}
		a.mu.Lock()
		user := a.sessions[tok]
		a.mu.Unlock()
		if user == "" {
			w.WriteHeader(401)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"id": user})
		return
	}
	if p == "" {
		io.WriteString(w, "home")
		return
	}
	user, pw := "", ""
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		var c struct{ Username, Password string }
		json.NewDecoder(r.Body).Decode(&c)
		user, pw = c.Username, c.Password
	} else {
		r.ParseForm()
		user, pw = r.Form.Get("username"), r.Form.Get("password")
	}
	ok := pw == "pw" && user != "" && user == strings.ToLower(user) && !strings.ContainsAny(user, " ")
	if !ok && p != "/login-200fail" {
		w.WriteHeader(401)
		return
	}
	switch p {
	case "/users": // a JSON API that signs the user in on creation, token in the body
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{"id": "u-1", "sessionToken": a.newSession(user)})
	case "/batch": // a batch endpoint: the login is one answer among several
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode([]any{
			map[string]any{"status": 200, "body": map[string]any{"items": []int{1, 2}}},
			map[string]any{"status": 200, "body": map[string]any{"sessionToken": a.newSession(user)}},
		})
	case "/graphql": // a GraphQL mutation answer
		w.Header().Set("Content-Type", "application/graphql-response+json")
		json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"login": map[string]any{"viewer": map[string]string{"name": user}, "sessionToken": a.newSession(user)}}})
	case "/hints": // the session rides in a 103 Early Hints, on a route nobody configured
		w.Header().Set("Set-Cookie", (&http.Cookie{Name: "gosession", Value: a.newSession(user)}).String())
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Set-Cookie")
		io.WriteString(w, "ok")
	case "/login-redirect": // the session rides in the Location fragment
		http.Redirect(w, r, "/app#access_token="+a.newSession(user), http.StatusFound)
	case "/login-header": // the session rides in a header, nobody is named
		w.Header().Set("X-Session-Token", a.newSession(user))
		io.WriteString(w, "ok")
	case "/login-gzip": // compressed whatever the client asked for
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		json.NewEncoder(zw).Encode(map[string]any{"user": map[string]string{"id": user}, "token": a.newSession(user)})
		zw.Close()
	case "/login-103": // early hints first, then the session
		w.Header().Set("Link", "</app.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		http.SetCookie(w, &http.Cookie{Name: "gosession", Value: a.newSession(user)})
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"user": map[string]string{"id": user}})
	case "/login-200fail": // 200 whatever happened; {"ok":false} says refused
		w.Header().Set("Content-Type", "application/json")
		if !ok {
			io.WriteString(w, `{"ok":false}`)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"ok": true, "user": map[string]string{"id": user}, "token": a.newSession(user)})
	default:
		w.WriteHeader(404)
	}
}

func TestDifferentialAwkwardAnswers(t *testing.T) {
	t.Parallel()
	app := newAwkwardApp(t)
	paths := []string{"/login-redirect", "/login-header", "/login-gzip", "/login-103", "/login-200fail"}
	// Only the login routes are configured; /users, /batch and /graphql
	// hand out sessions too, found by the credential in their JSON.
	tg := &diffTarget{name: "go", app: app.URL, paths: append(paths, "/users", "/batch", "/graphql", "/hints"), anyStatus: map[string]bool{"/hints": true},
		sidecar: appSidecar(t, app.URL, "TOTPGATE_LOGIN_PATHS="+strings.Join(paths, ","), "TOTPGATE_LOGIN_USER_ID_POINTER=/user/id",
			"TOTPGATE_LOGIN_REFUSED_POINTER=/ok", "TOTPGATE_LOGIN_REFUSED_VALUE=false",
			"TOTPGATE_SESSION_CREDENTIALS=cookie:gosession,json:sessionToken,json:token,location:access_token,header:X-Session-Token as bearer",
			"TOTPGATE_SESSION_BODY_ROUTES=/users,/batch,/graphql")}
	code := enrollAt(t, tg, "alice", func() outcome {
		return send(t, jsonReq(app.URL+"/login-103", jsonBody("alice"), "application/json"), nil)
	})
	if n := runDifferential(t, tg, "alice"); n < 9*8 {
		t.Errorf("only %d spellings gave a session directly; the differential proves little", n)
	}
	// A code is good once per time step: alice completes two, dave one.
	daveCode := enrollAt(t, tg, "dave", func() outcome {
		return send(t, jsonReq(app.URL+"/login-103", jsonBody("dave"), "application/json"), nil)
	})
	for i, p := range []string{"/login-gzip", "/login-103", "/login-200fail"} {
		user, c, step := "alice", code, int64(i)
		if i == 2 {
			user, c, step = "dave", daveCode, 0
		}
		completeChallenge(t, tg, jsonReq(tg.sidecar.main+p, jsonBody(user), "application/json"), c, step)
		if u := sessionUser(t, app.URL, send(t, jsonReq(tg.sidecar.main+p, jsonBody("bob"), "application/json"), nil)); u != "bob" {
			t.Errorf("%s: bob (no MFA) did not get his session through the gate: %q", p, u)
		}
	}
	// A refused login on the 200-on-failure route goes out as the app said.
	if o := send(t, jsonReq(tg.sidecar.main+"/login-200fail", `{"username":"alice","password":"no"}`, "application/json"), nil); o.status != 200 || o.body != `{"ok":false}` {
		t.Errorf("refused login on a 200-on-failure route = %d %s", o.status, o.body)
	}
	// Answers that name nobody are attributed by their credential: bob
	// (no MFA) gets his session on every route; alice's batch is held and
	// released whole after the second factor.
	for _, p := range []string{"/login-redirect", "/login-header", "/users", "/batch", "/graphql"} {
		if u := sessionUser(t, app.URL, send(t, jsonReq(tg.sidecar.main+p, jsonBody("bob"), "application/json"), nil)); u != "bob" {
			t.Errorf("%s: bob (no MFA) did not get his session through the gate: %q", p, u)
		}
	}
	erinCode := enrollAt(t, tg, "erin", func() outcome {
		return send(t, jsonReq(app.URL+"/login-103", jsonBody("erin"), "application/json"), nil)
	})
	completeChallenge(t, tg, jsonReq(tg.sidecar.main+"/batch", jsonBody("erin"), "application/json"), erinCode, 0)
	// Without a credential to ask about, an answer that names nobody but
	// could carry a session fails closed.
	bare := appSidecar(t, app.URL, "TOTPGATE_LOGIN_PATHS="+strings.Join(paths, ","), "TOTPGATE_LOGIN_USER_ID_POINTER=/user/id")
	for _, p := range []string{"/login-redirect", "/login-header"} {
		o := send(t, jsonReq(bare.main+p, jsonBody("bob"), "application/json"), nil)
		if o.status != 503 || len(o.tokens) > 0 {
			t.Errorf("%s for bob without credentials: %d with %d tokens, want 503 and none", p, o.status, len(o.tokens))
		}
	}
	if !strings.Contains(bare.logs.String(), `"event":"login_refused"`) {
		t.Error("no login_refused audit event for the unattributed answers")
	}
}

// liveSessions asks the Express test app how many sessions user has.
func liveSessions(t *testing.T, app, user string) int {
	t.Helper()
	res, err := http.Get(app + "/api/sessions?user=" + url.QueryEscape(user))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var n struct{ Sessions int }
	json.NewDecoder(res.Body).Decode(&n)
	return n.Sessions
}

// waitSessions waits until user has want live sessions at the app.
func waitSessions(t *testing.T, app, user string, want int, why string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for liveSessions(t, app, user) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s has %d live sessions at the app, want %d: the held session was not revoked", why, user, liveSessions(t, app, user), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Every held login that will never be released has its app session ended
// at the app, whatever ended it: out of attempts, lockout, expiry, admin
// reset. Checked against the app itself (its session store).
func TestHeldSessionsAreRevoked(t *testing.T) {
	t.Parallel()
	app := testenv.Express(t, testenv.LoginRegenerate)
	const adminToken = "an-admin-token-of-some-length"
	tg := &diffTarget{name: "express/revoke", app: app, sidecar: appSidecar(t, app,
		"TOTPGATE_LOGIN_PATHS=/login", "TOTPGATE_LOGIN_USER_ID_POINTER=/user/id", "TOTPGATE_SESSION_CREDENTIALS=cookie:connect.sid",
		"TOTPGATE_LOGIN_REVOKE_PATH=/logout", "TOTPGATE_LOGIN_CHALLENGE_TTL=3s", "TOTPGATE_LOGIN_SWEEP_INTERVAL=200ms",
		"TOTPGATE_LOGIN_CHALLENGE_ATTEMPTS=2", "TOTPGATE_MFA_MAX_FAILURES=3", "TOTPGATE_ADMIN_TOKEN="+adminToken)}
	baseline := map[string]int{}
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		enrollAt(t, tg, u, func() outcome { return send(t, jsonReq(app+"/login", jsonBody(u), "application/json"), nil) })
		baseline[u] = liveSessions(t, app, u)
	}
	login := func(user string, h ...string) (outcome, string) {
		o := send(t, jsonReq(tg.sidecar.main+"/login", jsonBody(user), "application/json", h...), nil)
		var p struct {
			ChallengeID string `json:"challenge_id"`
		}
		json.Unmarshal([]byte(o.body), &p)
		return o, p.ChallengeID
	}
	held := func(user string) string {
		o, id := login(user)
		if o.status != 401 || id == "" {
			t.Fatalf("gated login of %s = %d %s", user, o.status, o.body)
		}
		if n := liveSessions(t, app, user); n != baseline[user]+1 {
			t.Fatalf("%s: the app holds %d sessions after the held login, want %d", user, n, baseline[user]+1)
		}
		return id
	}

	// Out of attempts: two wrong codes kill the challenge.
	id := held("alice")
	for range 2 {
		body, _ := json.Marshal(map[string]string{"challenge_id": id, "code": "000000"})
		send(t, jsonReq(tg.sidecar.main+"/mfa/challenge", string(body), "application/json"), nil)
	}
	waitSessions(t, app, "alice", baseline["alice"], "out of attempts")

	// Locked: the third wrong code in one-call logins locks bob; that
	// login's session is revoked at once, the two held before it on expiry.
	for i := range 3 {
		if o, _ := login("bob", "X-TOTP-Code", fmt.Sprintf("%06d", i)); o.status != 401 && o.status != 429 {
			t.Fatalf("wrong-code login of bob = %d %s", o.status, o.body)
		}
	}
	waitSessions(t, app, "bob", baseline["bob"], "locked, then expired")

	// Expired: nobody answers the challenge.
	held("carol")
	waitSessions(t, app, "carol", baseline["carol"], "expired")

	// Admin reset: dave's held login can no longer be released.
	held("dave")
	req, _ := http.NewRequest("POST", tg.sidecar.admin+"/admin/users/dave/reset", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != 204 {
		t.Fatalf("admin reset: %v %v", res, err)
	}
	waitSessions(t, app, "dave", baseline["dave"], "reset")

	for _, why := range []string{"out_of_attempts", "locked", "expired", "reset"} {
		waitForLog(t, tg.sidecar, `"event":"session_revoked"`, `"route":"`+why+`"`, `"outcome":"ok"`)
	}
}
