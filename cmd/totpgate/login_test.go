package main

import (
	"context"
	"encoding/base32"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/totpgate/totpgate/gen"
	"github.com/totpgate/totpgate/totp"
)

func granted(res *http.Response, body string) bool {
	return len(res.Header.Values("Set-Cookie")) > 0 || strings.Contains(body, "SESSION-")
}

func TestLoginWithoutMFAPassesUnchanged(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t)
	res, body := e.login(t, "/login", `{"user":"nomfa","password":"pw"}`, nil)
	if res.StatusCode != 200 || !granted(res, body) {
		t.Fatalf("login without MFA: %d %s", res.StatusCode, body)
	}
	res, body = e.login(t, "/login", `{"user":"nomfa","password":"wrong"}`, nil)
	if res.StatusCode != 401 || !strings.Contains(body, "bad password") {
		t.Fatalf("refused login must pass unchanged: %d %s", res.StatusCode, body)
	}
}

func TestLoginOneCallAndTwoCalls(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t)
	code, recovery := e.enroll(t, "alice")
	// Fixed now, so a step boundary during the test changes nothing.
	c0, c1 := code(0), code(1)

	// One call, code in the header.
	res, body := e.login(t, "/login", `{"user":"alice","password":"pw"}`, http.Header{"X-Totp-Code": {c0}})
	if res.StatusCode != 200 || !granted(res, body) {
		t.Fatalf("one call with header code: %d %s", res.StatusCode, body)
	}
	// The same code again is a replay; a recovery code in the body works.
	res, body = e.login(t, "/login", `{"user":"alice","password":"pw","totp_code":"`+c0+`"}`, nil)
	if res.StatusCode != 401 || granted(res, body) || !strings.Contains(body, `"mfa_invalid"`) {
		t.Fatalf("replayed code: %d %s", res.StatusCode, body)
	}
	res, body = e.login(t, "/login", `{"user":"alice","password":"pw","totp_code":"`+recovery[0]+`"}`, nil)
	if res.StatusCode != 200 || !granted(res, body) {
		t.Fatalf("one call with a recovery code in the body: %d %s", res.StatusCode, body)
	}

	// Two calls: the app's answer is held, then released once.
	res, body = e.login(t, "/login", `{"user":"alice","password":"pw"}`, nil)
	var p struct {
		Code        string `json:"code"`
		ChallengeID string `json:"challenge_id"`
	}
	json.Unmarshal([]byte(body), &p)
	if res.StatusCode != 401 || granted(res, body) || p.Code != "mfa_required" || len(p.ChallengeID) != 43 ||
		!strings.Contains(res.Header.Get("WWW-Authenticate"), p.ChallengeID) {
		t.Fatalf("login without code: %d %s", res.StatusCode, body)
	}
	ctx := context.Background()
	wrong := "000000"
	bad, _ := e.c.CompleteChallengeWithResponse(ctx, gen.ChallengeRequest{ChallengeId: p.ChallengeID, Code: &wrong})
	if bad.StatusCode() != 401 || strings.Contains(string(bad.Body), "SESSION-") || !strings.Contains(bad.HTTPResponse.Header.Get("WWW-Authenticate"), p.ChallengeID) {
		t.Fatalf("challenge with a wrong code: %d %s", bad.StatusCode(), bad.Body)
	}
	good := c1
	ok, _ := e.c.CompleteChallengeWithResponse(ctx, gen.ChallengeRequest{ChallengeId: p.ChallengeID, Code: &good})
	if ok.StatusCode() != 200 || !strings.Contains(string(ok.Body), "SESSION-alice") || len(ok.HTTPResponse.Header.Values("Set-Cookie")) == 0 {
		t.Fatalf("challenge with a good code: %d %s", ok.StatusCode(), ok.Body)
	}
	again, _ := e.c.CompleteChallengeWithResponse(ctx, gen.ChallengeRequest{ChallengeId: p.ChallengeID, Code: &good})
	if again.StatusCode() != 404 {
		t.Fatalf("challenge used twice: %d %s", again.StatusCode(), again.Body)
	}
	logs := e.s.logs.String()
	for _, ev := range []string{`"event":"login_passed","user_id":"alice","client_ip":"127.0.0.1","route":"/login","outcome":"totp"`,
		`"event":"login_replay_refused","user_id":"alice"`, `"event":"recovery_code_used","user_id":"alice"`,
		`"event":"login_mfa_required","user_id":"alice"`, `"event":"login_failed","user_id":"alice","client_ip":"127.0.0.1","route":"CompleteChallenge","outcome":"invalid_code"`} {
		if !strings.Contains(logs, ev) {
			t.Errorf("audit log lacks %s", ev)
		}
	}
	for _, secret := range []string{c0, c1, recovery[0], p.ChallengeID} {
		if strings.Contains(logs, secret) {
			t.Error("logs contain a code, recovery code or challenge id")
		}
	}
	e.app.mu.Lock()
	defer e.app.mu.Unlock()
	if e.app.sawCode {
		t.Error("the app saw a second-factor code")
	}
}

// Every spelling the app's router treats as /login is intercepted.
func TestLoginPathSpellingsAreIntercepted(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t)
	_, _ = e.enroll(t, "bob")
	for _, p := range []string{"/login", "/Login", "/LOGIN", "//login", "/login/", "/./login", "/x/../login", "/%6Cogin", "/%4C%4F%47%49%4E", "/login;jsessionid=1", "/login?next=/"} {
		t.Run(p, func(t *testing.T) {
			res, body := e.login(t, p, `{"user":"bob","password":"pw"}`, nil)
			if granted(res, body) || res.StatusCode != 401 {
				t.Fatalf("POST %s: %d %s — session released without a second factor", p, res.StatusCode, body)
			}
		})
	}
}

func TestLoginThreats(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t)
	code, _ := e.enroll(t, "carol")
	bobCode, _ := e.enroll(t, "bob")
	c0 := code(0)

	t.Run("50 concurrent logins with one code: exactly one passes", func(t *testing.T) {
		var mu sync.Mutex
		passed := 0
		var wg sync.WaitGroup
		for range 50 {
			wg.Go(func() {
				res, body := e.login(t, "/login", `{"user":"carol","password":"pw"}`, http.Header{"X-Totp-Code": {c0}})
				if granted(res, body) {
					mu.Lock()
					passed++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if passed != 1 {
			t.Fatalf("%d of 50 logins passed with one code, want 1", passed)
		}
	})

	t.Run("another user's code and challenge fail", func(t *testing.T) {
		res, body := e.login(t, "/login", `{"user":"bob","password":"pw"}`, http.Header{"X-Totp-Code": {code(1)}})
		if granted(res, body) {
			t.Fatalf("carol's code let bob in: %s", body)
		}
		var p struct {
			ChallengeID string `json:"challenge_id"`
		}
		json.Unmarshal([]byte(body), &p)
		cc := code(1)
		r, _ := e.c.CompleteChallengeWithResponse(context.Background(), gen.ChallengeRequest{ChallengeId: p.ChallengeID, Code: &cc})
		if r.StatusCode() == 200 || strings.Contains(string(r.Body), "SESSION-") {
			t.Fatalf("carol's code completed bob's challenge: %d", r.StatusCode())
		}
	})

	t.Run("brute force locks, then a correct code is refused", func(t *testing.T) {
		var last *http.Response
		for range 6 {
			last, _ = e.login(t, "/login", `{"user":"bob","password":"pw"}`, http.Header{"X-Totp-Code": {"000000"}})
		}
		if last.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("after 6 wrong codes: %d, want 429", last.StatusCode)
		}
		res, body := e.login(t, "/login", `{"user":"bob","password":"pw"}`, http.Header{"X-Totp-Code": {bobCode(1)}})
		if granted(res, body) || res.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("correct code while locked: %d %s", res.StatusCode, body)
		}
	})
}

// With the keyring gone, an enrolled user's login is refused with 503 and
// no session, while pass-through traffic keeps flowing.
func TestLoginFailsClosedWhenKeysAreUnavailable(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t)
	code, _ := e.enroll(t, "dave")
	if err := os.Remove(filepath.Join(e.s.cmd.Dir, "totpgate-keyring.json")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // the keyring re-checks its file at most once a second
	res, body := e.login(t, "/login", `{"user":"dave","password":"pw"}`, http.Header{"X-Totp-Code": {code(0)}})
	if res.StatusCode != http.StatusServiceUnavailable || granted(res, body) || !strings.Contains(body, "mfa_unavailable") {
		t.Fatalf("login with keys unavailable: %d %s", res.StatusCode, body)
	}
	if code, body := get(t, e.s.main+"/page"); code != 200 || body != "page" {
		t.Fatalf("pass-through while keys unavailable: %d %q", code, body)
	}
}

// Under the required policy a user without MFA enrolls inside the login,
// gets recovery codes and is then let in.
func TestRequiredPolicyEnrollsDuringLogin(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, "TOTPGATE_MFA_POLICY=required")
	c := e.c
	ctx := context.Background()
	res, body := e.login(t, "/login", `{"user":"newbie","password":"pw"}`, nil)
	var p struct {
		Code         string `json:"code"`
		ChallengeID  string `json:"challenge_id"`
		ChallengeURL string `json:"challenge_url"`
	}
	json.Unmarshal([]byte(body), &p)
	if res.StatusCode != 401 || granted(res, body) || p.Code != "mfa_enrollment_required" || p.ChallengeURL != "/mfa/challenge/enroll" {
		t.Fatalf("login without MFA under required policy: %d %s", res.StatusCode, body)
	}
	early, _ := c.CompleteChallengeWithResponse(ctx, gen.ChallengeRequest{ChallengeId: p.ChallengeID})
	if early.StatusCode() != 400 || strings.Contains(string(early.Body), "SESSION-") {
		t.Fatalf("release before enrolling: %d %s", early.StatusCode(), early.Body)
	}
	en, err := c.StartChallengeEnrollmentWithResponse(ctx, gen.ChallengeEnrollmentRequest{ChallengeId: p.ChallengeID})
	if err != nil || en.JSON201 == nil {
		t.Fatalf("start in-login enrollment: %d %s", en.StatusCode(), en.Body)
	}
	secret, _ := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(en.JSON201.Secret)
	pp := totp.DefaultParams()
	conf, err := c.ConfirmChallengeEnrollmentWithResponse(ctx, gen.ChallengeEnrollmentConfirmRequest{ChallengeId: p.ChallengeID, Code: totp.Code(secret, pp.Step(time.Now()), pp)})
	if err != nil || conf.JSON200 == nil || len(conf.JSON200.RecoveryCodes) != 10 {
		t.Fatalf("confirm in-login enrollment: %d %s", conf.StatusCode(), conf.Body)
	}
	done, _ := c.CompleteChallengeWithResponse(ctx, gen.ChallengeRequest{ChallengeId: p.ChallengeID})
	if done.StatusCode() != 200 || !strings.Contains(string(done.Body), "SESSION-newbie") || len(done.HTTPResponse.Header.Values("Set-Cookie")) == 0 {
		t.Fatalf("release after enrolling: %d %s", done.StatusCode(), done.Body)
	}
	again, _ := c.CompleteChallengeWithResponse(ctx, gen.ChallengeRequest{ChallengeId: p.ChallengeID})
	if again.StatusCode() != 404 {
		t.Fatalf("second release: %d", again.StatusCode())
	}
	// Now enrolled: the next login asks for a code.
	res, body = e.login(t, "/login", `{"user":"newbie","password":"pw"}`, nil)
	if res.StatusCode != 401 || !strings.Contains(body, `"mfa_required"`) {
		t.Fatalf("next login: %d %s", res.StatusCode, body)
	}
}

// An app whose login answer names nobody: the user comes from the login
// request's own field, and the answer is still held.
func TestUserIDFromRequestField(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, "TOTPGATE_LOGIN_PATHS=/login,/login-anon", "TOTPGATE_LOGIN_USER_ID_REQUEST_FIELD=user")
	code, _ := e.enroll(t, "erin")
	res, body := e.login(t, "/login-anon", `{"user":"erin","password":"pw"}`, nil)
	if res.StatusCode != 401 || granted(res, body) || !strings.Contains(body, `"mfa_required"`) {
		t.Fatalf("anonymous login answer for an enrolled user: %d %s", res.StatusCode, body)
	}
	res, body = e.login(t, "/login-anon", `{"user":"erin","password":"pw"}`, http.Header{"X-Totp-Code": {code(0)}})
	if res.StatusCode != 200 || !granted(res, body) {
		t.Fatalf("with a code: %d %s", res.StatusCode, body)
	}
}

// Sessions the app issued in answers that will never be released are
// revoked through the app's logout route.
func TestRevokeOnDeadLogins(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, "TOTPGATE_LOGIN_REVOKE_PATH=/logout", "TOTPGATE_LOGIN_CHALLENGE_ATTEMPTS=2")
	app, c := e.app, e.c
	_, _ = e.enroll(t, "gina")
	_, _ = e.enroll(t, "hank")
	revoked := func() []string {
		app.mu.Lock()
		defer app.mu.Unlock()
		return append([]string(nil), app.revoked...)
	}

	// A challenge that dies of wrong codes.
	_, body := e.login(t, "/login", `{"user":"gina","password":"pw"}`, nil)
	var p struct {
		ChallengeID string `json:"challenge_id"`
	}
	json.Unmarshal([]byte(body), &p)
	wrong := "000000"
	for range 2 {
		c.CompleteChallengeWithResponse(context.Background(), gen.ChallengeRequest{ChallengeId: p.ChallengeID, Code: &wrong})
	}
	// Revocation runs in the background (with retries): wait for it.
	waitFor := func(what string, ok func([]string) bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !ok(revoked()); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: revoked %v", what, revoked())
			}
		}
	}
	waitFor("after the challenge died, want [gina]", func(got []string) bool { return len(got) == 1 && got[0] == "gina" })

	// A one-call login refused because the user is locked.
	for range 6 {
		e.login(t, "/login", `{"user":"hank","password":"pw"}`, http.Header{"X-Totp-Code": {"000000"}})
	}
	waitFor("after the lockout, want hank among them", func(got []string) bool { return slices.Contains(got, "hank") })
}

// A login by GET with query parameters, and one with a method-override
// header, are intercepted like any other; the code in the query is removed.
func TestLoginByGETAndMethodOverride(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t)
	code, _ := e.enroll(t, "jay")
	get := func(query string, h http.Header) (*http.Response, string) {
		return e.send(t, "GET", "/login?"+query, "", h)
	}
	if res, body := get("user=jay&password=pw", nil); res.StatusCode != 401 || granted(res, body) {
		t.Fatalf("GET login without code: %d %s", res.StatusCode, body)
	}
	if res, body := e.login(t, "/login", `{"user":"jay","password":"pw"}`, http.Header{"X-Http-Method-Override": {"PUT"}}); res.StatusCode != 401 || granted(res, body) {
		t.Fatalf("login with a method override: %d %s", res.StatusCode, body)
	}
	if res, body := get("user=jay&password=pw&totp_code="+code(0), nil); res.StatusCode != 200 || !granted(res, body) {
		t.Fatalf("GET login with the code in the query: %d %s", res.StatusCode, body)
	}
	e.app.mu.Lock()
	defer e.app.mu.Unlock()
	if e.app.sawCode {
		t.Error("the app saw the code")
	}
}
