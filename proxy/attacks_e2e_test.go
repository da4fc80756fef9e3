package proxy_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/totpgate/totpgate/audit"
	"github.com/totpgate/totpgate/identity"
	"github.com/totpgate/totpgate/mfa"
	"github.com/totpgate/totpgate/proxy"
)

type enrolledAlice struct{ stubMFA }

func (enrolledAlice) Enrolled(_ context.Context, u string) (bool, error) { return u == "alice", nil }

// attackFront: real identity.Introspector against the app's /api/me.
func attackFront(t *testing.T, app http.Handler, creds ...string) string {
	up := httptest.NewServer(app)
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	in, err := identity.NewIntrospector(&http.Client{Timeout: 2 * time.Second}, up.URL+"/api/me", []string{"Cookie", "Authorization", "X-Session"}, "/id", "")
	if err != nil {
		t.Fatal(err)
	}
	var cs []proxy.Credential
	for _, s := range creds {
		c, err := identity.ParseCredential(s)
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	tr := proxy.NewTransport(proxy.TransportOptions{DialTimeout: time.Second, ResponseHeaderTimeout: 5 * time.Second, IdleConnTimeout: time.Minute, MaxIdleConns: 8})
	f, err := proxy.New(proxy.Options{
		Upstream: u, Transport: tr, PassThrough: passThroughClient(tr, u),
		APIPrefix: "/mfa", API: http.NotFoundHandler(), Logger: slog.New(slog.DiscardHandler),
		Login: &proxy.LoginOptions{
			Paths: []string{"/login"}, CodeHeader: "X-TOTP-Code", CodeField: "totp_code",
			UserIDRequestField: "username", // the answer names nobody: Django-like redirect
			Challenge:          mfa.ChallengeConfig{TTL: time.Minute, MaxAttempts: 3}, ChallengeURL: "/mfa/challenge", MFA: enrolledAlice{},
			MaxAnswerBytes: 1 << 20, Audit: audit.NewLog(slog.New(slog.DiscardHandler)),
			Credentials: cs, Introspector: in,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return srv.URL
}

// The identity endpoint is rate limited (per client IP, which a client can
// exhaust through the gate): its 429 (express-rate-limit) or 403
// (django-ratelimit) must not read as "not a session" and let a fresh
// session of an enrolled user out.
func TestAttackIdentityEndpointRateLimited(t *testing.T) {
	for _, limited := range []int{http.StatusTooManyRequests, http.StatusForbidden} {
		t.Run(http.StatusText(limited), func(t *testing.T) { identityRateLimited(t, limited) })
	}
}

func identityRateLimited(t *testing.T, limited int) {
	var meCalls atomic.Int64
	app := http.NewServeMux()
	app.HandleFunc("/api/me", func(w http.ResponseWriter, r *http.Request) {
		if meCalls.Add(1) > 5 { // 5 per window
			http.Error(w, "Too many requests", limited)
			return
		}
		if strings.Contains(r.Header.Get("Cookie"), "sid=S-alice") {
			io.WriteString(w, `{"id":"alice"}`)
			return
		}
		w.WriteHeader(401)
	})
	app.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "sid", Value: "S-alice", Path: "/"})
		http.Redirect(w, r, "/", http.StatusFound)
	})
	front := attackFront(t, app, "cookie:sid")
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	// the attacker spends the budget through the gate (pass-through)
	for range 6 {
		res, err := c.Get(front + "/api/me")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
	}
	res, err := c.PostForm(front+"/login", url.Values{"username": {"alice"}, "password": {"pw"}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if sc := res.Header.Get("Set-Cookie"); strings.Contains(sc, "S-alice") {
		t.Errorf("enrolled alice's session released without a second factor (status %d, Set-Cookie %q)", res.StatusCode, sc)
	}
}

// "header:X-Session" strips a "Bearer " prefix from the value found but
// presents it back without it, so the identity endpoint says 401 and the
// session is "no session".
func TestAttackHeaderCredentialWithBearerPrefix(t *testing.T) {
	app := http.NewServeMux()
	app.HandleFunc("/api/me", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Session") == "Bearer S-alice" {
			io.WriteString(w, `{"id":"alice"}`)
			return
		}
		w.WriteHeader(401)
	})
	app.HandleFunc("/signup", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Session", "Bearer S-alice")
		w.WriteHeader(200)
	})
	front := attackFront(t, app, "header:X-Session")
	res, err := http.Post(front+"/signup", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.Header.Get("X-Session") != "" {
		t.Errorf("enrolled alice's session header released on /signup (status %d)", res.StatusCode)
	}
}

// body routes are compared on the outbound path, which includes the
// A token in the JSON answer of a body route is held for its enrolled
// user, also when the upstream URL has a base path (the route is matched
// on the client's path, not the rewritten one).
func TestBodyRoutesHoldATokenInJSON(t *testing.T) {
	for _, base := range []string{"", "/base"} {
		t.Run("base "+base, func(t *testing.T) {
			app := http.NewServeMux()
			app.HandleFunc(base+"/api/me", func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Authorization") == "Bearer S-alice" {
					io.WriteString(w, `{"id":"alice"}`)
					return
				}
				w.WriteHeader(401)
			})
			app.HandleFunc(base+"/users", func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, `{"sessionToken":"S-alice"}`)
			})
			up := httptest.NewServer(app)
			t.Cleanup(up.Close)
			u, _ := url.Parse(up.URL + base)
			in, _ := identity.NewIntrospector(&http.Client{}, up.URL+base+"/api/me", []string{"Authorization"}, "/id", "")
			c, _ := identity.ParseCredential("json:sessionToken as bearer")
			tr := proxy.NewTransport(proxy.TransportOptions{DialTimeout: time.Second, ResponseHeaderTimeout: 5 * time.Second, IdleConnTimeout: time.Minute, MaxIdleConns: 8})
			f, err := proxy.New(proxy.Options{
				Upstream: u, Transport: tr, PassThrough: passThroughClient(tr, u),
				APIPrefix: "/mfa", API: http.NotFoundHandler(), Logger: slog.New(slog.DiscardHandler),
				Login: &proxy.LoginOptions{
					Paths: []string{"/login"}, CodeHeader: "X-TOTP-Code", CodeField: "totp_code", UserIDPointer: "/user/id",
					Challenge: mfa.ChallengeConfig{TTL: time.Minute, MaxAttempts: 3}, ChallengeURL: "/mfa/challenge", MFA: enrolledAlice{},
					MaxAnswerBytes: 1 << 20, Audit: audit.NewLog(slog.New(slog.DiscardHandler)),
					Credentials: []proxy.Credential{c}, BodyRoutes: []string{"/users"}, Introspector: in,
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(f)
			t.Cleanup(srv.Close)
			res, err := http.Post(srv.URL+"/users", "application/json", strings.NewReader(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if strings.Contains(string(b), "S-alice") || res.StatusCode != 401 {
				t.Errorf("alice's token on body route /users: %d %s, want it held (401)", res.StatusCode, b)
			}
		})
	}
}

// A password sent along (HTTP Basic, which the app accepts) must not make
// a new session of that user pass as "the caller renewing their own".
func TestAttackBasicAuthPassesForTheCallersSession(t *testing.T) {
	app := http.NewServeMux()
	app.HandleFunc("/api/me", func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); ok && u == "alice" && p == "pw" || strings.Contains(r.Header.Get("Cookie"), "sid=S-alice") {
			io.WriteString(w, `{"id":"alice"}`)
			return
		}
		w.WriteHeader(401)
	})
	app.HandleFunc("/signup", func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); ok && u == "alice" && p == "pw" {
			http.SetCookie(w, &http.Cookie{Name: "sid", Value: "S-alice", Path: "/"})
		}
		w.WriteHeader(200)
	})
	front := attackFront(t, app, "cookie:sid")
	req, _ := http.NewRequest("POST", front+"/signup", nil)
	req.SetBasicAuth("alice", "pw")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if strings.Contains(res.Header.Get("Set-Cookie"), "S-alice") {
		t.Fatalf("alice's new session released because the request carried her password (status %d)", res.StatusCode)
	}
}
