package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/totpgate/totpgate/gen"
	"github.com/totpgate/totpgate/internal/testenv"
)

// The app's identity endpoint answering any 4xx means "not logged in":
// the caller gets 401, not 502; an app-id header alone is no credential
// (the app is not even asked); a redirect is not followed.
func TestIdentityAnswersMeanWhatTheySay(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		switch r.Header.Get("Cookie") {
		case "sid=expired":
			w.WriteHeader(419) // Laravel's "page expired"
		case "sid=moved":
			http.Redirect(w, r, "/login", http.StatusFound)
		case "sid=alice":
			json.NewEncoder(w).Encode(map[string]string{"id": "alice"})
		default:
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	t.Cleanup(up.Close)
	s := startSidecar(t, []string{"TOTPGATE_IDENTITY_CONTEXT_HEADERS=X-App-Id", "TOTPGATE_IDENTITY_FORWARD_HEADERS=Cookie,X-App-Id"}, "--upstream", up.URL)
	status := func(h ...string) int { return call(t, "GET", s.main+"/mfa/status", "", h...).StatusCode }
	if got := status("Cookie", "sid=expired"); got != 401 {
		t.Errorf("identity endpoint answered 419: status = %d, want 401", got)
	}
	if got := status("Cookie", "sid=alice"); got != 200 {
		t.Errorf("a logged-in caller: status = %d, want 200", got)
	}
	before := calls.Load()
	if got := status("X-App-Id", "shop"); got != 401 {
		t.Errorf("only an app-id header: status = %d, want 401", got)
	}
	if calls.Load() != before {
		t.Error("the app was asked about a caller who sent no credential")
	}
	before = calls.Load()
	if got := status("Cookie", "sid=moved"); got != 502 {
		t.Errorf("identity endpoint redirected: status = %d, want 502 (fail closed, not followed)", got)
	}
	if n := calls.Load() - before; n != 1 {
		t.Errorf("a redirect from the identity endpoint was followed (%d calls)", n)
	}
}

// A spent code buys a release, or nothing: of many concurrent completions
// of one challenge, each with its own valid recovery code, exactly one is
// released and every loser's code is still unspent.
func TestConcurrentChallengeCompletionsSpendOneCode(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t)
	_, recovery := e.enroll(t, "rosa")
	_, body := e.login(t, "/login", `{"user":"rosa","password":"pw"}`, nil)
	var p struct {
		ChallengeID string `json:"challenge_id"`
	}
	json.Unmarshal([]byte(body), &p)
	const racers = 8
	statuses := make([]int, racers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range racers {
		wg.Go(func() {
			<-start
			res, err := e.c.CompleteChallengeWithResponse(context.Background(), gen.ChallengeRequest{ChallengeId: p.ChallengeID, Code: &recovery[i]})
			if err == nil {
				statuses[i] = res.StatusCode()
			}
		})
	}
	close(start)
	wg.Wait()
	released, notFound := 0, 0
	for _, s := range statuses {
		switch s {
		case 200:
			released++
		case 404:
			notFound++
		}
	}
	if released != 1 || notFound != racers-1 {
		t.Fatalf("statuses %v: want one 200 and %d 404", statuses, racers-1)
	}
	st, err := e.c.GetStatusWithResponse(context.Background(), session("rosa"))
	if err != nil || st.JSON200 == nil {
		t.Fatal(err)
	}
	if got := st.JSON200.RecoveryCodesRemaining; got != len(recovery)-1 {
		t.Fatalf("recovery codes left: %d, want %d (only the winner's spent)", got, len(recovery)-1)
	}
}

// A wrong code on a challenge answers the attempts left and the challenge
// id, as the spec declares; a refusal because the user is already locked
// does not burn the challenge's attempts.
func TestChallengeAttemptsAndLocks(t *testing.T) {
	t.Parallel()
	const adminToken = "an-admin-token-of-some-length"
	e := newLoginEnv(t, "TOTPGATE_LOGIN_CHALLENGE_ATTEMPTS=3", "TOTPGATE_MFA_MAX_FAILURES=2", "TOTPGATE_ADMIN_TOKEN="+adminToken)
	code, _ := e.enroll(t, "saul")
	hold := func() string {
		_, body := e.login(t, "/login", `{"user":"saul","password":"pw"}`, nil)
		var p struct {
			ChallengeID string `json:"challenge_id"`
		}
		json.Unmarshal([]byte(body), &p)
		return p.ChallengeID
	}
	complete := func(id, c string) (int, map[string]any) {
		res, err := e.c.CompleteChallengeWithResponse(context.Background(), gen.ChallengeRequest{ChallengeId: id, Code: &c})
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		json.Unmarshal(res.Body, &doc)
		return res.StatusCode(), doc
	}
	id := hold()
	st, doc := complete(id, "000000")
	// Attempts left: the smaller of the challenge's (2) and the user's
	// before the lock (1).
	if st != 401 || doc["challenge_id"] != id || doc["attempts_remaining"] != float64(1) {
		t.Fatalf("wrong code = %d %v, want 401 with challenge_id and attempts_remaining 1", st, doc)
	}
	// The second failure locks saul (max_failures 2) and burns an attempt.
	if st, _ := complete(id, "111111"); st != 429 {
		t.Fatalf("the failure that locks = %d, want 429", st)
	}
	// While locked, refusals do not burn the remaining attempt.
	for range 3 {
		if st, _ := complete(id, code(0)); st != 429 {
			t.Fatalf("completion while locked = %d, want 429", st)
		}
	}
	req, _ := http.NewRequest("POST", e.s.admin+"/admin/users/saul/unlock", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != 204 {
		t.Fatalf("admin unlock: %v %v", res, err)
	}
	if st, doc := complete(id, code(0)); st != 200 {
		t.Fatalf("completion after the unlock = %d %v, want 200 (lock refusals must not have used up the challenge)", st, doc)
	}
}

// Behind a trusted proxy, IPv6 clients of one /64 share a rate-limit
// bucket: rotating addresses inside it buys no extra burst.
func TestRateLimitKeysIPv6BySlash64(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusUnauthorized) }))
	t.Cleanup(up.Close)
	s := startSidecar(t, []string{"TOTPGATE_TRUSTED_PROXIES=127.0.0.1/32", "TOTPGATE_API_RATE_BURST=3", "TOTPGATE_API_RATE_PER_SECOND=0.01"}, "--upstream", up.URL)
	status := func(client string) int {
		return call(t, "GET", s.main+"/mfa/status", "", "X-Forwarded-For", client).StatusCode
	}
	limited := 0
	for i := range 20 {
		if status(fmt.Sprintf("2001:db8:aa:bb::%x", i+1)) == http.StatusTooManyRequests {
			limited++
		}
	}
	if limited != 17 {
		t.Fatalf("20 addresses of one /64: %d limited, want 17 (one burst of 3)", limited)
	}
	if got := status("2001:db8:aa:cc::1"); got == http.StatusTooManyRequests {
		t.Fatal("another /64 was limited too")
	}
}

// The sidecar starts while PostgreSQL is down: pass-through flows, second-
// factor work fails closed with 503, /readyz is not ready; once the
// database is back the store opens (migrations included) and logins are
// gated as usual.
func TestStartsWithoutTheStore(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPGServer(t)
	pg.Stop(t, "fast")
	app := newLoginApp(t)
	s := startSidecar(t, []string{"TOTPGATE_STORE_DRIVER=postgres", "TOTPGATE_STORE_DSN=" + pg.DSN}, "--upstream", app.URL)
	if code, body := get(t, s.main+"/page"); code != 200 || body != "page" {
		t.Fatalf("pass-through with the store down = %d %q", code, body)
	}
	if code, _ := get(t, s.admin+"/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with the store down = %d, want 503", code)
	}
	e := &loginEnv{s: s, app: app}
	res, body := e.login(t, "/login", `{"user":"bob","password":"pw"}`, nil)
	if res.StatusCode != http.StatusServiceUnavailable || len(res.Cookies()) > 0 || !strings.Contains(body, "mfa_unavailable") {
		t.Fatalf("login with the store down = %d %s, want 503 mfa_unavailable and no session", res.StatusCode, body)
	}
	pg.Start(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _ := get(t, s.admin+"/readyz"); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store did not open after PostgreSQL came back:\n%s", s.logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	c, err := gen.NewClientWithResponses(s.main)
	if err != nil {
		t.Fatal(err)
	}
	e.c = c
	e.enroll(t, "bob")
	if res, body := e.login(t, "/login", `{"user":"bob","password":"pw"}`, nil); res.StatusCode != 401 || !strings.Contains(body, "mfa_required") {
		t.Fatalf("login after the store came back = %d %s, want 401 mfa_required", res.StatusCode, body)
	}
}

// Concurrent wrong codes lock the user once: one lockout_started event,
// however many concurrent losers find the lock.
func TestLockoutStartedOncePerLock(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, "TOTPGATE_MFA_MAX_FAILURES=3")
	e.enroll(t, "tess")
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 12 {
		wg.Go(func() {
			<-start
			e.login(t, "/login", `{"user":"tess","password":"pw"}`, http.Header{"X-Totp-Code": {fmt.Sprintf("%06d", i)}})
		})
	}
	close(start)
	wg.Wait()
	waitForLog(t, e.s, `"event":"lockout_started"`)
	if n := strings.Count(e.s.logs.String(), `"event":"lockout_started"`); n != 1 {
		t.Fatalf("%d lockout_started events for one lock, want 1", n)
	}
}

// A single-page app on another origin logs in through the gate and uses
// the user API; a cross-site page cannot change anyone's second factor.
func TestCrossOriginAppsAndCSRF(t *testing.T) {
	t.Parallel()
	const spa, evil = "https://spa.example", "https://evil.example"
	// The app allows its SPA's origin, with credentials, like the cors
	// middleware of most frameworks.
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Origin") == spa {
			w.Header().Set("Access-Control-Allow-Origin", spa)
			w.Header().Set("Access-Control-Allow-Credentials", "true")
			w.Header().Set("Vary", "Origin")
		}
		switch {
		case r.Method == http.MethodOptions:
			w.Header().Set("Access-Control-Allow-Methods", "POST")
			w.Header().Set("Access-Control-Allow-Headers", "Content-Type, X-TOTP-Code")
			w.WriteHeader(http.StatusNoContent)
		case r.URL.Path == "/api/me":
			c, err := r.Cookie("session")
			if err != nil {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			json.NewEncoder(w).Encode(map[string]string{"id": c.Value})
		case r.URL.Path == "/login":
			var creds struct{ User string }
			json.NewDecoder(r.Body).Decode(&creds)
			http.SetCookie(w, &http.Cookie{Name: "session", Value: creds.User})
			json.NewEncoder(w).Encode(map[string]any{"user": map[string]string{"id": creds.User}})
		}
	}))
	t.Cleanup(app.Close)
	s := startSidecar(t, []string{"TOTPGATE_API_CORS_ORIGINS=" + spa}, "--upstream", app.URL)
	c, err := gen.NewClientWithResponses(s.main)
	if err != nil {
		t.Fatal(err)
	}
	e := &loginEnv{s: s, c: c}
	e.enroll(t, "uma")
	do := func(method, path, origin, body string, h ...string) *http.Response {
		t.Helper()
		if origin != "" {
			h = append(h, "Origin", origin)
		}
		return call(t, method, s.main+path, body, h...)
	}
	// The preflight on the login route is the app's.
	if res := do("OPTIONS", "/login", spa, "", "Access-Control-Request-Method", "POST"); res.StatusCode != 204 || res.Header.Get("Access-Control-Allow-Origin") != spa {
		t.Errorf("login preflight = %d, ACAO %q: want the app's 204", res.StatusCode, res.Header.Get("Access-Control-Allow-Origin"))
	}
	// The gate's 401 carries the app's CORS headers, so the page can read the challenge.
	res := do("POST", "/login", spa, `{"user":"uma"}`)
	if res.StatusCode != 401 || res.Header.Get("Access-Control-Allow-Origin") != spa || res.Header.Get("Access-Control-Allow-Credentials") != "true" ||
		!strings.Contains(res.Header.Get("Access-Control-Expose-Headers"), "WWW-Authenticate") || len(res.Cookies()) > 0 {
		t.Errorf("held login from the SPA = %d, CORS %v", res.StatusCode, res.Header)
	}
	// The user API answers the allowed origin's preflight, refuses others.
	if res := do("OPTIONS", "/mfa/challenge", spa, "", "Access-Control-Request-Method", "POST"); res.StatusCode != 204 ||
		res.Header.Get("Access-Control-Allow-Origin") != spa || res.Header.Get("Access-Control-Allow-Credentials") != "true" {
		t.Errorf("API preflight from the SPA = %d %v", res.StatusCode, res.Header)
	}
	if res := do("OPTIONS", "/mfa/challenge", evil, "", "Access-Control-Request-Method", "POST"); res.StatusCode != 403 || res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("API preflight from another origin = %d %v", res.StatusCode, res.Header)
	}
	// CSRF: a cross-site page with the user's cookie cannot replace the enrollment.
	for _, h := range [][]string{{"Origin", evil}, {"Sec-Fetch-Site", "cross-site"}} {
		if res := do("POST", "/mfa/enroll", "", "", append(h, "Cookie", "session=vic")...); res.StatusCode != 403 {
			t.Errorf("cross-site enroll (%s) = %d, want 403", h[0], res.StatusCode)
		}
	}
	if st, err := c.GetStatusWithResponse(context.Background(), session("vic")); err != nil || st.JSON200 == nil || st.JSON200.State != gen.MfaStateNone {
		t.Fatalf("a refused cross-site call changed the state: %+v %v", st.JSON200, err)
	}
	// The SPA itself (allowed origin) and same-origin pages can.
	if res := do("POST", "/mfa/enroll", spa, "", "Cookie", "session=vic"); res.StatusCode != 201 || res.Header.Get("Access-Control-Allow-Origin") != spa {
		t.Errorf("enroll from the SPA = %d %v", res.StatusCode, res.Header)
	}
	if res := do("POST", "/mfa/enroll", s.main, "", "Cookie", "session=wes"); res.StatusCode != 201 {
		t.Errorf("same-origin enroll = %d", res.StatusCode)
	}
}

// call sends one request with the given headers (name, value pairs) and
// a JSON body when body is set, and returns the answer, its body closed.
func call(t *testing.T, method, url, body string, h ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i < len(h); i += 2 {
		req.Header.Set(h[i], h[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res
}
