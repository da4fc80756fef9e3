package main

import (
	"context"
	"encoding/base32"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/totpgate/totpgate/gen"
	"github.com/totpgate/totpgate/totp"
)

// loginApp is a real app on loopback with a lenient router: like many
// frameworks it treats /Login, //login/, /login;x and /%6Cogin as /login.
// It answers a good password with a session cookie and token, and records
// whether it ever saw a second-factor code, and every Cookie header it got.
type loginApp struct {
	*httptest.Server
	mu      sync.Mutex
	sawCode bool
	revoked []string // sessions ended through /logout
	cookies []string
	changes int // runs of POST /settings/password (a sensitive route)
}

func newLoginApp(t *testing.T) *loginApp {
	a := &loginApp{}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		if strings.Contains(string(body), "totp_code") || r.Header.Get("X-TOTP-Code") != "" || r.URL.Query().Has("totp_code") {
			a.sawCode = true
		}
		a.cookies = append(a.cookies, r.Header.Values("Cookie")...)
		a.mu.Unlock()
		switch p := strings.ToLower(path.Clean("/" + strings.Split(r.URL.Path, ";")[0])); p {
		case "/logout":
			if c, err := r.Cookie("session"); err == nil {
				a.mu.Lock()
				a.revoked = append(a.revoked, c.Value)
				a.mu.Unlock()
			}
		case "/settings/password":
			if _, err := r.Cookie("session"); err != nil || r.Method != http.MethodPost {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			a.mu.Lock()
			a.changes++
			n := a.changes
			a.mu.Unlock()
			json.NewEncoder(w).Encode(map[string]int{"changed": n})
		case "/api/me":
			c, err := r.Cookie("session")
			if err != nil {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			json.NewEncoder(w).Encode(map[string]string{"id": c.Value})
		case "/login", "/login-anon":
			var creds struct{ User, Password string }
			json.Unmarshal(body, &creds)
			if r.Method == http.MethodGet { // some apps log in with GET and a query
				creds.User, creds.Password = r.URL.Query().Get("user"), r.URL.Query().Get("password")
			}
			if creds.Password != "pw" {
				w.WriteHeader(http.StatusUnauthorized)
				io.WriteString(w, `{"error":"bad password"}`)
				return
			}
			http.SetCookie(w, &http.Cookie{Name: "session", Value: creds.User})
			if p == "/login-anon" { // an app whose login answer names nobody
				json.NewEncoder(w).Encode(map[string]any{"token": "SESSION-" + creds.User})
				return
			}
			json.NewEncoder(w).Encode(map[string]any{"token": "SESSION-" + creds.User, "user": map[string]string{"id": creds.User}})
		default:
			io.WriteString(w, "page")
		}
	}))
	t.Cleanup(a.Close)
	return a
}

type loginEnv struct {
	s   *sidecar
	app *loginApp
	c   *gen.ClientWithResponses
}

// newLoginEnv starts the login app and a sidecar in front of it; env adds
// TOTPGATE_* settings.
func newLoginEnv(t *testing.T, env ...string) *loginEnv {
	app := newLoginApp(t)
	s := startSidecar(t, env, "--upstream", app.URL)
	c, err := gen.NewClientWithResponses(s.main)
	if err != nil {
		t.Fatal(err)
	}
	return &loginEnv{s: s, app: app, c: c}
}

// enroll turns MFA on for user and returns a code generator.
func (e *loginEnv) enroll(t *testing.T, user string) (func(offset int64) string, []string) {
	t.Helper()
	ctx := context.Background()
	en, err := e.c.StartEnrollmentWithResponse(ctx, session(user))
	if err != nil || en.JSON201 == nil {
		t.Fatalf("enroll: %v %s", err, en.Body)
	}
	secret, _ := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(en.JSON201.Secret)
	p := totp.DefaultParams()
	code := func(offset int64) string { return totp.Code(secret, p.Step(time.Now())+offset, p) }
	// Confirm with the previous step's code, so the tests' logins can use
	// the current one. A step boundary between computing the code and the
	// server's check pushes it out of the skew window: try again then with
	// a freshly computed code (a failure is cleared by the success).
	var conf *gen.ConfirmEnrollmentResponse
	for range 2 {
		conf, _ = e.c.ConfirmEnrollmentWithResponse(ctx, gen.CodeRequest{Code: code(-1)}, session(user))
		if conf != nil && conf.JSON200 != nil {
			break
		}
	}
	if conf == nil || conf.JSON200 == nil {
		t.Fatalf("confirm: %s", conf.Body)
	}
	return code, conf.JSON200.RecoveryCodes
}

func (e *loginEnv) login(t *testing.T, path, body string, header http.Header) (*http.Response, string) {
	t.Helper()
	h := http.Header{"Content-Type": {"application/json"}} // even with no body; header may replace it
	for k, v := range header {
		h[k] = v
	}
	return e.send(t, "POST", path, body, h)
}

// send is one request to the sidecar's main listener (a JSON body when
// body is not empty), answered with its body read.
func (e *loginEnv) send(t *testing.T, method, path, body string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, e.s.main+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header[k] = v
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

// newLoginEnvIn is newLoginEnv with the sidecar's working directory (and so
// its SQLite file) chosen by the test.
func newLoginEnvIn(t *testing.T, dir string, env ...string) *loginEnv {
	t.Helper()
	app := newLoginApp(t)
	s := startSidecarIn(t, dir, env, "--upstream", app.URL)
	c, err := gen.NewClientWithResponses(s.main)
	if err != nil {
		t.Fatal(err)
	}
	return &loginEnv{s: s, app: app, c: c}
}

func (e *loginEnv) admin(t *testing.T, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, e.s.admin+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, out
}
