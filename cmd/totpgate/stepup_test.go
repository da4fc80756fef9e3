package main

import (
	"context"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/totpgate/totpgate/gen"
	"github.com/totpgate/totpgate/internal/gatecookie"
	"github.com/totpgate/totpgate/internal/testenv"
	"github.com/totpgate/totpgate/totp"
)

// testClock is the injected clock of an in-process sidecar: real time
// plus an offset the test moves, so a proof can grow old without a sleep.
type testClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}
func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// startSidecarWithClock runs `totpgate serve` in this process (serveOn)
// with the clock now, on random loopback ports, its state in a temporary
// directory; env are TOTPGATE_* settings as for startSidecar. Its answers
// are checked against the contract like a child's.
func startSidecarWithClock(t *testing.T, now func() time.Time, env []string, args ...string) *sidecar {
	t.Helper()
	vars := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	logs := &testenv.LockedBuffer{}
	cfg, err := loadConfig("serve", args, func(k string) string { return vars[k] }, logs)
	if err != nil {
		t.Fatalf("%v\n%s", err, logs.String())
	}
	dir := t.TempDir()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Store.Path, cfg.Keyring.LocalPath = filepath.Join(dir, "totpgate.db"), filepath.Join(dir, "totpgate-keyring.json")
	log, err := newLogger(logs, cfg.Log.Level)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	s := &sidecar{logs: logs, exited: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		s.exitErr = serveOn(ctx, cfg, log, ls, now, func(main, admin net.Addr) {
			s.main, s.admin = "http://"+main.String(), "http://"+admin.String()
			close(ready)
		})
		close(s.exited)
	}()
	t.Cleanup(func() {
		stop()
		<-s.exited
		if t.Failed() {
			t.Logf("sidecar logs:\n%s", logs.String())
		}
	})
	select {
	case <-ready:
	case <-s.exited:
		t.Fatalf("sidecar stopped before starting: %v\n%s", s.exitErr, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("sidecar did not start:\n%s", logs.String())
	}
	contract.watch(s.main, "main")
	contract.watch(s.admin, "admin")
	return s
}

// stepUpTarget is one framework app behind a sidecar with a step-up route.
type stepUpTarget struct {
	t       *testing.T
	app     string // the app's own base URL
	s       *sidecar
	clock   *testClock
	cookie  string // the app's session cookie
	login   func(user, code string) *http.Request
	secrets map[string][]byte
}

// asSent is a client that shows a redirect as it came (a login answer's
// cookies are on it), through http.DefaultTransport and so the contract
// checker.
var asSent = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 20 * time.Second}

func (tg *stepUpTarget) do(req *http.Request) (*http.Response, string) {
	tg.t.Helper()
	res, err := asSent.Do(req)
	if err != nil {
		tg.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

// session logs user in through the gate (with code when given) and
// returns the Cookie header of the app session it got.
func (tg *stepUpTarget) session(user, code string) string {
	tg.t.Helper()
	res, body := tg.do(tg.login(user, code))
	for _, c := range res.Cookies() {
		if c.Name == tg.cookie && c.Value != "" {
			return c.Name + "=" + c.Value
		}
	}
	tg.t.Fatalf("login of %s through the gate gave no session: %d %.300s", user, res.StatusCode, body)
	return ""
}

// code is user's code of the next time step: the clock moves on by one
// step first, so no two codes of a test share a step (a code is accepted
// once per step).
func (tg *stepUpTarget) code(user string) string {
	tg.clock.add(30 * time.Second)
	p := totp.DefaultParams()
	return totp.Code(tg.secrets[user], p.Step(tg.clock.now()), p)
}

// enroll turns MFA on for the user of the app session cookie.
func (tg *stepUpTarget) enroll(user, cookie string) {
	tg.t.Helper()
	c, _ := gen.NewClientWithResponses(tg.s.main)
	withSession := func(_ context.Context, r *http.Request) error { r.Header.Set("Cookie", cookie); return nil }
	en, err := c.StartEnrollmentWithResponse(context.Background(), withSession)
	if err != nil || en.JSON201 == nil {
		tg.t.Fatalf("enroll %s: %v %s", user, err, en.Body)
	}
	tg.secrets[user], _ = base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(en.JSON201.Secret)
	conf, err := c.ConfirmEnrollmentWithResponse(context.Background(), gen.CodeRequest{Code: tg.code(user)}, withSession)
	if err != nil || conf.JSON200 == nil {
		tg.t.Fatalf("confirm %s: %v %s", user, err, conf.Body)
	}
}

// change asks the app, through the gate, to change the password of the
// session in cookie; it answers the status and the decoded JSON body.
func (tg *stepUpTarget) change(cookie string) (*http.Response, map[string]any) {
	tg.t.Helper()
	return tg.postJSON("/settings/password/", `{"password":"n3w"}`, cookie)
}

// completeStepUp sends the code to the step-up endpoint with cookie.
func (tg *stepUpTarget) completeStepUp(id, code, cookie string) (*http.Response, map[string]any) {
	tg.t.Helper()
	body, _ := json.Marshal(map[string]string{"challenge_id": id, "code": code})
	return tg.postJSON("/mfa/step-up", string(body), cookie)
}

// postJSON posts body to the sidecar's path with cookie and decodes the
// JSON answer.
func (tg *stepUpTarget) postJSON(path, body, cookie string) (*http.Response, map[string]any) {
	tg.t.Helper()
	req, _ := http.NewRequest("POST", tg.s.main+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Cookie", cookie)
	res, raw := tg.do(req)
	var out map[string]any
	json.Unmarshal([]byte(raw), &out)
	return res, out
}

// ran is how many times the app changed a password, asked of the app itself.
func (tg *stepUpTarget) ran() int {
	tg.t.Helper()
	res, err := http.Get(tg.app + "/settings/password/count/")
	if err != nil {
		tg.t.Fatal(err)
	}
	defer res.Body.Close()
	var c struct{ Count int }
	if err := json.NewDecoder(res.Body).Decode(&c); err != nil {
		tg.t.Fatal(err)
	}
	return c.Count
}

func proofOf(t *testing.T, res *http.Response) string {
	t.Helper()
	for _, c := range res.Cookies() {
		if c.Name == gatecookie.StepUp {
			if !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Domain != "" || c.MaxAge != 300 {
				t.Errorf("proof cookie %+v: want __Host- attributes, HttpOnly, SameSite=Lax, Max-Age=300", c)
			}
			return c.Name + "=" + c.Value
		}
	}
	t.Fatalf("no proof cookie in %v", res.Header.Values("Set-Cookie"))
	return ""
}

// newStepUpTarget starts framework's app (express or django) and an
// in-process sidecar in front of it with POST /settings/password as a
// step-up route (max_age 5m) and the settings in extra.
func newStepUpTarget(t *testing.T, framework string, extra ...string) *stepUpTarget {
	env := []string{
		"TOTPGATE_IDENTITY_INTROSPECT_PATH=/api/me", "TOTPGATE_IDENTITY_USER_ID_POINTER=/id",
		"TOTPGATE_IDENTITY_FORWARD_HEADERS=Cookie", "TOTPGATE_STEP_UP_ROUTES=POST /settings/password 5m",
	}
	tg := &stepUpTarget{t: t, clock: &testClock{}, secrets: map[string][]byte{}}
	switch framework {
	case "express":
		tg.app, tg.cookie = testenv.Express(t, testenv.LoginRegenerate), "connect.sid"
		env = append(env, "TOTPGATE_LOGIN_PATHS=/login", "TOTPGATE_LOGIN_USER_ID_POINTER=/user/id", "TOTPGATE_SESSION_CREDENTIALS=cookie:connect.sid")
		tg.login = func(user, code string) *http.Request {
			req, _ := http.NewRequest("POST", tg.s.main+"/login", strings.NewReader(fmt.Sprintf(`{"username":%q,"password":"pw"}`, user)))
			req.Header.Set("Content-Type", "application/json")
			if code != "" {
				req.Header.Set("X-TOTP-Code", code)
			}
			return req
		}
	case "django":
		// The login answer is a redirect that names nobody: the session
		// cookie, shown to /api/me, says whose it is.
		tg.app, tg.cookie = testenv.Django(t, testenv.LoginRegenerate, false), "sessionid"
		env = append(env, "TOTPGATE_LOGIN_PATHS=/login/", "TOTPGATE_SESSION_CREDENTIALS=cookie:sessionid")
		tg.login = func(user, code string) *http.Request {
			form := url.Values{"username": {user}, "password": {"pw"}}
			if code != "" {
				form.Set("totp_code", code)
			}
			req, _ := http.NewRequest("POST", tg.s.main+"/login/", strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			return req
		}
	default:
		t.Fatalf("no framework %q", framework)
	}
	tg.s = startSidecarWithClock(t, tg.clock.now, append(env, extra...), "--upstream", tg.app)
	return tg
}

// Step-up against the real framework apps: a password change without a
// fresh code is held and the app never sees it; after the code it reaches
// the app once; the proof lets the same session through within max_age,
// and no other session or user; a replayed completion is refused.
func TestStepUpAgainstFrameworkApps(t *testing.T) {
	t.Parallel()
	for _, framework := range []string{"express", "django"} {
		t.Run(framework, func(t *testing.T) {
			t.Parallel()
			tg := newStepUpTarget(t, framework)
			s1 := tg.session("alice", "")
			tg.enroll("alice", s1)
			bob := tg.session("bob", "")
			tg.enroll("bob", bob)

			// Held: the app does not see it.
			res, p := tg.change(s1)
			id, _ := p["challenge_id"].(string)
			if res.StatusCode != 401 || p["code"] != "mfa_step_up_required" || len(id) != 43 || p["challenge_url"] != "/mfa/step-up" ||
				!strings.Contains(res.Header.Get("WWW-Authenticate"), id) || res.Header.Get("Cache-Control") != "no-store" {
				t.Fatalf("change without a fresh code = %d %v", res.StatusCode, p)
			}
			if n := tg.ran(); n != 0 {
				t.Fatalf("the app ran the held change %d times", n)
			}

			// A second session of the same user (logged in twice) cannot
			// complete the first one's challenge, and spends nothing.
			s2 := tg.session("alice", tg.code("alice"))
			if s2 == s1 {
				t.Fatal("the second login gave the same session")
			}
			if res, p := tg.completeStepUp(id, tg.code("alice"), s2); res.StatusCode != 404 || p["code"] != "challenge_not_found" {
				t.Fatalf("completion from another session = %d %v", res.StatusCode, p)
			}
			// A page on another origin cannot complete it with the user's
			// cookies (the user API's cross-site rule), and spends nothing.
			{
				body, _ := json.Marshal(map[string]string{"challenge_id": id, "code": tg.code("alice")})
				req, _ := http.NewRequest("POST", tg.s.main+"/mfa/step-up", strings.NewReader(string(body)))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Cookie", s1)
				req.Header.Set("Origin", "https://evil.example")
				req.Header.Set("Sec-Fetch-Site", "cross-site")
				if res, raw := tg.do(req); res.StatusCode != http.StatusForbidden || tg.ran() != 0 {
					t.Fatalf("cross-site completion = %d %.200s, app ran %d times", res.StatusCode, raw, tg.ran())
				}
			}
			// A login challenge is no step-up challenge, and the reverse;
			// neither spends the code sent with it.
			held, lp := tg.do(tg.login("alice", ""))
			var login struct {
				ChallengeID string `json:"challenge_id"`
			}
			json.Unmarshal([]byte(lp), &login)
			if held.StatusCode != 401 || login.ChallengeID == "" {
				t.Fatalf("login without a code = %d %s", held.StatusCode, lp)
			}
			code := tg.code("alice")
			if res, _ := tg.completeStepUp(login.ChallengeID, code, s1); res.StatusCode != 404 {
				t.Fatalf("a login challenge at /mfa/step-up = %d", res.StatusCode)
			}
			c, _ := gen.NewClientWithResponses(tg.s.main)
			wrongKind, _ := c.CompleteChallengeWithResponse(context.Background(), gen.ChallengeRequest{ChallengeId: id, Code: &code})
			if wrongKind.StatusCode() != 404 {
				t.Fatalf("a step-up challenge at /mfa/challenge = %d %s", wrongKind.StatusCode(), wrongKind.Body)
			}
			loggedIn, _ := c.CompleteChallengeWithResponse(context.Background(), gen.ChallengeRequest{ChallengeId: login.ChallengeID, Code: &code})
			if loggedIn.StatusCode() >= 400 {
				t.Fatalf("the login challenge after the wrong-kind attempts = %d %s (its code must be unspent)", loggedIn.StatusCode(), loggedIn.Body)
			}
			if n := tg.ran(); n != 0 {
				t.Fatalf("the app ran the held change %d times", n)
			}

			// The code releases it: it reaches the app once, and the
			// client gets the app's answer.
			res, p = tg.completeStepUp(id, tg.code("alice"), s1)
			if res.StatusCode != 200 || p["ok"] != true || p["user"] != "alice" || p["changes"] != 1.0 {
				t.Fatalf("completion = %d %v, want the app's answer", res.StatusCode, p)
			}
			proof := proofOf(t, res)
			if n := tg.ran(); n != 1 {
				t.Fatalf("after the code the app ran %d times, want 1", n)
			}
			// A replayed completion is refused, and the app runs nothing.
			if res, p := tg.completeStepUp(id, tg.code("alice"), s1); res.StatusCode != 404 || p["code"] != "challenge_not_found" {
				t.Fatalf("replayed completion = %d %v", res.StatusCode, p)
			}
			if n := tg.ran(); n != 1 {
				t.Fatalf("after a replay the app ran %d times, want 1", n)
			}

			// With the proof, the same session passes within max_age.
			if res, p := tg.change(s1 + "; " + proof); res.StatusCode != 200 || p["changes"] != 2.0 {
				t.Fatalf("change with the proof = %d %v", res.StatusCode, p)
			}
			// Not for another session of the same user, nor another user.
			for name, cookie := range map[string]string{"another session of alice": s2, "bob": bob} {
				if res, p := tg.change(cookie + "; " + proof); res.StatusCode != 401 || p["code"] != "mfa_step_up_required" {
					t.Fatalf("alice's proof with %s = %d %v", name, res.StatusCode, p)
				}
			}
			if n := tg.ran(); n != 2 {
				t.Fatalf("the app ran %d times, want 2", n)
			}
			// Past max_age the proof is challenged again.
			tg.clock.add(5*time.Minute + time.Second)
			if res, p := tg.change(s1 + "; " + proof); res.StatusCode != 401 || p["code"] != "mfa_step_up_required" {
				t.Fatalf("change with a proof past max_age = %d %v", res.StatusCode, p)
			}
			// A user without MFA (optional policy) passes.
			carol := tg.session("carol", "")
			if res, p := tg.change(carol); res.StatusCode != 200 || p["user"] != "carol" {
				t.Fatalf("change by a user without MFA = %d %v", res.StatusCode, p)
			}
			if n := tg.ran(); n != 3 {
				t.Fatalf("the app ran %d times, want 3", n)
			}

			logs := tg.s.logs.String()
			for _, ev := range []string{
				`"event":"step_up_required","user_id":"alice","client_ip":"127.0.0.1","route":"/settings/password","outcome":"challenge_issued"`,
				`"event":"step_up_passed","user_id":"alice","client_ip":"127.0.0.1","route":"/settings/password","outcome":"totp"`,
				`"event":"step_up_failed","user_id":"","client_ip":"127.0.0.1","route":"CompleteStepUp","outcome":"challenge_not_found"`,
			} {
				if !strings.Contains(logs, ev) {
					t.Errorf("audit log lacks %s", ev)
				}
			}
			for _, secret := range []string{id, strings.TrimPrefix(proof, gatecookie.StepUp+"="), code} {
				if strings.Contains(logs, secret) {
					t.Error("the logs hold a challenge id, proof or code")
				}
			}
			raw, _ := scrape(t, tg.s)
			for _, series := range []string{
				`totpgate_step_up_events_total{event="required",route="/settings/password"} 4`,
				`totpgate_step_up_events_total{event="passed_code",route="/settings/password"} 1`,
				`totpgate_step_up_events_total{event="not_found",route="/settings/password"} 1`, // the other session
				`totpgate_step_up_events_total{event="not_found",route="unknown"} 2`,            // the login challenge, the replay
			} {
				if !strings.Contains(raw, series) {
					t.Errorf("/metrics lacks %s", series)
				}
			}
		})
	}
}

// Under the required policy a user without MFA is refused on a step-up
// route (enroll first), nothing is held and the app sees nothing. Such a
// user cannot log in through the gate at all; the session is one the app
// gave before the policy changed (here: directly).
func TestStepUpRequiredPolicy(t *testing.T) {
	t.Parallel()
	tg := newStepUpTarget(t, "express", "TOTPGATE_MFA_POLICY=required")
	req, _ := http.NewRequest("POST", tg.app+"/login", strings.NewReader(`{"username":"carol","password":"pw"}`))
	req.Header.Set("Content-Type", "application/json")
	res, _ := tg.do(req)
	var carol string
	for _, c := range res.Cookies() {
		if c.Name == "connect.sid" {
			carol = c.Name + "=" + c.Value
		}
	}
	if carol == "" {
		t.Fatalf("no session from the app: %d", res.StatusCode)
	}
	res, p := tg.change(carol)
	if res.StatusCode != 403 || p["code"] != "mfa_enrollment_required" || p["challenge_id"] != nil {
		t.Fatalf("change by a user without MFA under the required policy = %d %v", res.StatusCode, p)
	}
	if n := tg.ran(); n != 0 {
		t.Fatalf("the app ran %d times", n)
	}
	if !strings.Contains(tg.s.logs.String(), `"event":"step_up_refused","user_id":"carol","client_ip":"127.0.0.1","route":"/settings/password","outcome":"enrollment_required"`) {
		t.Error("no step_up_refused event")
	}
}
