package main

// Trusted devices end to end: the real binary in front of the real
// framework apps (Express, Django), by the differential idea. A remembered
// login must give a session the app accepts (GET /api/me with it works)
// for the same user only; every other way of presenting the device (another
// user, a rotated-away token, after expiry, revoke, revoke-others, disable,
// reset, new recovery codes, a lockout) must give no session at all.

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base32"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/totpgate/totpgate/gen"
	"github.com/totpgate/totpgate/internal/gatecookie"
	"github.com/totpgate/totpgate/internal/testenv"
	"github.com/totpgate/totpgate/totp"
)

// deviceTarget is one framework app behind one sidecar.
type deviceTarget struct {
	name    string
	app     string
	sidecar *sidecar
	// login builds the app's usual login request for user against base.
	login func(base, user string) *http.Request
}

// deviceAnswer is what a client got from one gated login.
type deviceAnswer struct {
	outcome
	device *http.Cookie // the gate's device cookie, when it set one
}

// gated sends tg's login of user through the gate with header set, and
// the device token as the gate's cookie ("" none).
func (tg *deviceTarget) gated(t *testing.T, user, device string, header ...string) deviceAnswer {
	t.Helper()
	req := tg.login(tg.sidecar.main, user)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	req.Header.Set("User-Agent", "totpgate-devices-test/1.0 ("+tg.name+")")
	if device != "" {
		req.AddCookie(&http.Cookie{Name: gatecookie.Device, Value: device})
	}
	res, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if res.Header.Get("Content-Encoding") == "gzip" {
		if zr, err := gzip.NewReader(bytes.NewReader(raw)); err == nil {
			raw, _ = io.ReadAll(zr)
		}
	}
	a := deviceAnswer{outcome: outcome{status: res.StatusCode, cookies: map[string]string{}, body: string(raw)}}
	for _, c := range res.Cookies() {
		if c.Name == gatecookie.Device {
			a.device = c
			continue
		}
		a.cookies[c.Name] = c.Value
	}
	return a
}

// passes: the login of user gave a session the app accepts as user's.
func (tg *deviceTarget) passes(t *testing.T, a deviceAnswer, user, why string) {
	t.Helper()
	if u := sessionUser(t, tg.app, a.outcome); u != user {
		t.Fatalf("%s: %s: the app's session is %q (status %d %.200s), want %q's", tg.name, why, u, a.status, a.body, user)
	}
}

// refused: the login gave no session the app accepts, for anyone.
func (tg *deviceTarget) refused(t *testing.T, a deviceAnswer, why string) {
	t.Helper()
	if u := sessionUser(t, tg.app, a.outcome); u != "" || a.status != http.StatusUnauthorized {
		t.Fatalf("%s: %s: status %d, session of %q; want 401 and no session", tg.name, why, a.status, u)
	}
}

// trust logs user in with a recovery code and asks to remember the
// device; it returns the device token after checking the cookie.
func (tg *deviceTarget) trust(t *testing.T, user, code string) (string, deviceAnswer) {
	t.Helper()
	a := tg.gated(t, user, "", "X-TOTP-Code", code, "X-TOTP-Remember-Device", "true")
	tg.passes(t, a, user, "login with a code, remembering the device")
	return deviceCookie(t, tg.name, a.device), a
}

// deviceCookie checks a device cookie the gate set and returns its token.
func deviceCookie(t *testing.T, name string, c *http.Cookie) string {
	t.Helper()
	if c == nil || len(c.Value) != 43 {
		t.Fatalf("%s: device cookie %v, want a 43-character token", name, c)
	}
	if !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Domain != "" || c.MaxAge <= 0 {
		t.Errorf("%s: device cookie %s: want Secure, HttpOnly, SameSite=Lax, Path=/, no Domain and a Max-Age", name, c)
	}
	return c.Value
}

// pass logs user in on the device: no code, a session, a rotated token.
func (tg *deviceTarget) pass(t *testing.T, user, token, why string) string {
	t.Helper()
	a := tg.gated(t, user, token)
	tg.passes(t, a, user, why)
	next := deviceCookie(t, tg.name, a.device)
	if next == token {
		t.Fatalf("%s: %s: the device token did not rotate", tg.name, why)
	}
	return next
}

// enrolled is a user with MFA on: a code generator, the recovery codes
// and an app session (cookies) for the user API.
type enrolled struct {
	code     func(offset int64) string
	recovery []string
	session  map[string]string
}

func (e enrolled) editor(device string) gen.RequestEditorFn {
	return func(_ context.Context, r *http.Request) error {
		for k, v := range e.session {
			r.AddCookie(&http.Cookie{Name: k, Value: v})
		}
		if device != "" {
			r.AddCookie(&http.Cookie{Name: gatecookie.Device, Value: device})
		}
		return nil
	}
}

// enroll logs user in at the app directly and turns MFA on through the
// sidecar's API with that session.
func (tg *deviceTarget) enroll(t *testing.T, user string) enrolled {
	t.Helper()
	o := send(t, tg.login(tg.app, user), nil)
	if len(o.cookies) == 0 {
		t.Fatalf("%s: direct login of %s gave no cookie (status %d)", tg.name, user, o.status)
	}
	e := enrolled{session: o.cookies}
	c := tg.client(t)
	ctx := context.Background()
	en, err := c.StartEnrollmentWithResponse(ctx, e.editor(""))
	if err != nil || en.JSON201 == nil {
		t.Fatalf("%s: enroll %s: %v %s", tg.name, user, err, en.Body)
	}
	secret, _ := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(en.JSON201.Secret)
	p := totp.DefaultParams()
	e.code = func(offset int64) string { return totp.Code(secret, p.Step(time.Now())+offset, p) }
	for range 2 { // a step boundary may pass between making the code and checking it
		conf, _ := c.ConfirmEnrollmentWithResponse(ctx, gen.CodeRequest{Code: e.code(-1)}, e.editor(""))
		if conf != nil && conf.JSON200 != nil {
			e.recovery = conf.JSON200.RecoveryCodes
			return e
		}
	}
	t.Fatalf("%s: confirm enrollment of %s failed", tg.name, user)
	return e
}

func (tg *deviceTarget) client(t *testing.T) *gen.ClientWithResponses {
	t.Helper()
	c, err := gen.NewClientWithResponses(tg.sidecar.main)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (tg *deviceTarget) admin(t *testing.T, path string) int {
	t.Helper()
	req, _ := http.NewRequest("POST", tg.sidecar.admin+path, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// trustedDeviceScenario is the whole acceptance of trusted devices against
// one app.
func trustedDeviceScenario(t *testing.T, tg *deviceTarget) {
	ctx := context.Background()
	c := tg.client(t)
	alice, bob := tg.enroll(t, "alice"), tg.enroll(t, "bob")

	// A remembered login passes without a code, for alice only.
	d1, _ := tg.trust(t, "alice", alice.recovery[0])
	d2 := tg.pass(t, "alice", d1, "alice on her trusted device")
	tg.refused(t, tg.gated(t, "bob", d2), "bob presenting alice's device")
	tg.refused(t, tg.gated(t, "bob", d1), "bob presenting alice's rotated-away token")
	d3 := tg.pass(t, "alice", d2, "alice after bob tried her device")
	// The rotated-away token, used again, revokes the device: the current
	// token is dead too.
	reuse := tg.gated(t, "alice", d2)
	tg.refused(t, reuse, "a rotated-away token used again")
	if reuse.device == nil || reuse.device.MaxAge >= 0 {
		t.Errorf("%s: the reuse answer does not clear the device cookie (%v)", tg.name, reuse.device)
	}
	tg.refused(t, tg.gated(t, "alice", d3), "the current token of a device revoked for reuse")

	// Listed with the current one marked, revoked through the API (the
	// answer clears the cookie), then refused.
	d4, _ := tg.trust(t, "alice", alice.recovery[1])
	d5, _ := tg.trust(t, "alice", alice.recovery[2])
	list, err := c.ListTrustedDevicesWithResponse(ctx, alice.editor(d5))
	if err != nil || list.JSON200 == nil || len(list.JSON200.Devices) != 2 {
		t.Fatalf("%s: list devices: %v %s", tg.name, err, list.Body)
	}
	var current, other gen.TrustedDevice
	for _, d := range list.JSON200.Devices {
		if d.Current {
			current = d
		} else {
			other = d
		}
	}
	if current.Id == "" || other.Id == "" || !strings.Contains(current.Label, "totpgate-devices-test") {
		t.Fatalf("%s: devices %+v: want one current, one other, labelled from the User-Agent", tg.name, list.JSON200.Devices)
	}
	if bobs, _ := c.ListTrustedDevicesWithResponse(ctx, bob.editor(d5)); bobs == nil || bobs.JSON200 == nil || len(bobs.JSON200.Devices) != 0 {
		t.Errorf("%s: bob's device list shows alice's devices: %s", tg.name, bobs.Body)
	}
	if res, err := c.RevokeTrustedDeviceWithResponse(ctx, current.Id, bob.editor("")); err != nil || res.StatusCode() != http.StatusNotFound {
		t.Errorf("%s: bob revoking alice's device: %v %d, want 404", tg.name, err, res.StatusCode())
	}
	// A page on another site cannot revoke with the user's cookies (the
	// user API's cross-site rule holds for the device operations).
	for _, req := range []*http.Request{
		httptest.NewRequest("DELETE", tg.sidecar.main+"/mfa/devices/"+string(current.Id), nil),
		httptest.NewRequest("POST", tg.sidecar.main+"/mfa/devices/revoke-others", nil),
	} {
		req.RequestURI = ""
		req.Header.Set("Origin", "https://evil.example")
		alice.editor(d5)(ctx, req)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusForbidden {
			t.Errorf("%s: cross-site %s %s = %d, want 403", tg.name, req.Method, req.URL.Path, res.StatusCode)
		}
	}
	res, err := c.RevokeTrustedDeviceWithResponse(ctx, current.Id, alice.editor(d5))
	if err != nil || res.StatusCode() != http.StatusNoContent || !strings.HasPrefix(res.HTTPResponse.Header.Get("Set-Cookie"), gatecookie.Device+"=;") {
		t.Fatalf("%s: revoke the current device: %v %d Set-Cookie %q", tg.name, err, res.StatusCode(), res.HTTPResponse.Header.Get("Set-Cookie"))
	}
	tg.refused(t, tg.gated(t, "alice", d5), "a device revoked through the API")
	d4 = tg.pass(t, "alice", d4, "the device not revoked")

	// Sign out every other device: the current one stays.
	d6, _ := tg.trust(t, "alice", alice.recovery[3])
	others, err := c.RevokeOtherTrustedDevicesWithResponse(ctx, alice.editor(d6))
	if err != nil || others.JSON200 == nil || others.JSON200.Revoked != 1 {
		t.Fatalf("%s: revoke others: %v %s, want 1 revoked", tg.name, err, others.Body)
	}
	tg.refused(t, tg.gated(t, "alice", d4), "another device after sign out every other device")
	d6 = tg.pass(t, "alice", d6, "the device that signed the others out")
	if st, _ := c.GetStatusWithResponse(ctx, alice.editor("")); st == nil || st.JSON200 == nil || st.JSON200.TrustedDevices == nil || *st.JSON200.TrustedDevices != 1 {
		t.Errorf("%s: status trusted_devices: %s, want 1", tg.name, st.Body)
	}

	// New recovery codes revoke every device.
	regen, err := c.RegenerateRecoveryCodesWithResponse(ctx, gen.CodeRequest{Code: alice.code(0)}, alice.editor(""))
	if err != nil || regen.JSON200 == nil {
		t.Fatalf("%s: regenerate recovery codes: %v %s", tg.name, err, regen.Body)
	}
	tg.refused(t, tg.gated(t, "alice", d6), "a device after new recovery codes")

	// A lockout revokes every device: after an admin lifts the lock the
	// device still gives nothing.
	d7, _ := tg.trust(t, "alice", regen.JSON200.RecoveryCodes[0])
	for locked := false; !locked; {
		a := tg.gated(t, "alice", "", "X-TOTP-Code", "000000")
		tg.refusedAny(t, a, "a wrong code")
		locked = a.status == http.StatusTooManyRequests
	}
	if st := tg.admin(t, "/admin/users/alice/unlock"); st != http.StatusNoContent {
		t.Fatalf("%s: unlock: %d", tg.name, st)
	}
	tg.refused(t, tg.gated(t, "alice", d7), "a device after a lockout")

	// An admin reset revokes every device: after enrolling again the old
	// device gives nothing.
	d8, _ := tg.trust(t, "alice", regen.JSON200.RecoveryCodes[1])
	if st := tg.admin(t, "/admin/users/alice/reset"); st != http.StatusNoContent {
		t.Fatalf("%s: reset: %d", tg.name, st)
	}
	alice = tg.enroll(t, "alice")
	tg.refused(t, tg.gated(t, "alice", d8), "a device of before an admin reset")

	// Disabling MFA revokes every device: after enrolling again the old
	// device gives nothing.
	d9, _ := tg.trust(t, "alice", alice.recovery[0])
	if dis, err := c.DisableMfaWithResponse(ctx, gen.CodeRequest{Code: alice.recovery[1]}, alice.editor(d9)); err != nil || dis.StatusCode() != http.StatusNoContent {
		t.Fatalf("%s: disable: %v %d", tg.name, err, dis.StatusCode())
	}
	tg.enroll(t, "alice")
	tg.refused(t, tg.gated(t, "alice", d9), "a device of before disabling MFA")

	// The two-call login: remember_device with the code.
	held := tg.gated(t, "bob", "")
	tg.refused(t, held, "bob without a code")
	var p struct {
		ChallengeID string `json:"challenge_id"`
	}
	if err := json.Unmarshal([]byte(held.body), &p); err != nil || p.ChallengeID == "" {
		t.Fatalf("%s: no challenge in %s", tg.name, held.body)
	}
	remember := true
	// The released answer is the app's own: a redirect is not followed,
	// so the session it sets is seen (through the contract checker).
	direct, err := gen.NewClient(tg.sidecar.main, gen.WithHTTPClient(&http.Client{Transport: http.DefaultTransport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}))
	if err != nil {
		t.Fatal(err)
	}
	done, err := direct.CompleteChallenge(ctx, gen.ChallengeRequest{ChallengeId: p.ChallengeID, Code: &bob.recovery[0], RememberDevice: &remember},
		func(_ context.Context, r *http.Request) error {
			r.Header.Set("User-Agent", "bob's browser")
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	done.Body.Close()
	var bobDevice *http.Cookie
	sessionCookies := map[string]string{}
	for _, ck := range done.Cookies() {
		if ck.Name == gatecookie.Device {
			bobDevice = ck
		} else {
			sessionCookies[ck.Name] = ck.Value
		}
	}
	tg.passes(t, deviceAnswer{outcome: outcome{status: done.StatusCode, cookies: sessionCookies}}, "bob", "the completed challenge")
	tg.pass(t, "bob", deviceCookie(t, tg.name, bobDevice), "bob on the device the challenge trusted")
}

// refusedAny: no session, whatever the status (401 or 429).
func (tg *deviceTarget) refusedAny(t *testing.T, a deviceAnswer, why string) {
	t.Helper()
	if u := sessionUser(t, tg.app, a.outcome); u != "" {
		t.Fatalf("%s: %s: a session of %q left the gate (status %d)", tg.name, why, u, a.status)
	}
}

// expiryScenario: with a one-second life, a device passes right after it
// was trusted and is refused once that second is over.
func expiryScenario(t *testing.T, tg *deviceTarget) {
	ivan := tg.enroll(t, "ivan")
	d, a := tg.trust(t, "ivan", ivan.recovery[0])
	if a.device.MaxAge != 1 {
		t.Errorf("%s: Max-Age %d, want 1 (mfa.trusted_device_ttl 1s)", tg.name, a.device.MaxAge)
	}
	time.Sleep(1100 * time.Millisecond) // past the device's life: a lower bound, not a race
	tg.refused(t, tg.gated(t, "ivan", d), "an expired device")
}

func expressTarget(t *testing.T, env ...string) *deviceTarget {
	app := testenv.Express(t, testenv.LoginRegenerate)
	return &deviceTarget{name: "express", app: app,
		sidecar: appSidecar(t, app, append([]string{"TOTPGATE_LOGIN_PATHS=/login", "TOTPGATE_LOGIN_USER_ID_POINTER=/user/id",
			"TOTPGATE_SESSION_CREDENTIALS=cookie:connect.sid", "TOTPGATE_ADMIN_TOKEN=" + adminToken}, env...)...),
		login: func(base, user string) *http.Request {
			return jsonReq(base+"/login", jsonBody(user), "application/json")
		}}
}

func djangoTarget(t *testing.T, env ...string) *deviceTarget {
	app := testenv.Django(t, testenv.LoginRegenerate, true)
	return &deviceTarget{name: "django", app: app,
		sidecar: appSidecar(t, app, append([]string{"TOTPGATE_LOGIN_PATHS=/login/", "TOTPGATE_LOGIN_USER_ID_HEADER=X-User-Id",
			"TOTPGATE_SESSION_CREDENTIALS=cookie:sessionid", "TOTPGATE_ADMIN_TOKEN=" + adminToken}, env...)...),
		login: func(base, user string) *http.Request { return formReq("POST", base+"/login/", form(user)) }}
}

// TestTrustedDevices runs the acceptance and the expiry against Express
// and Django, each behind its own sidecar (the expiry's with a one-second
// mfa.trusted_device_ttl).
func TestTrustedDevices(t *testing.T) {
	t.Parallel()
	for name, target := range map[string]func(*testing.T, ...string) *deviceTarget{"express": expressTarget, "django": djangoTarget} {
		t.Run(name+"/acceptance", func(t *testing.T) { t.Parallel(); trustedDeviceScenario(t, target(t)) })
		t.Run(name+"/expiry", func(t *testing.T) {
			t.Parallel()
			expiryScenario(t, target(t, "TOTPGATE_MFA_TRUSTED_DEVICE_TTL=1s"))
		})
	}
}

// The app never receives the gate's cookie (not on the login route, not
// passed through, not on the identity call), the device events reach the
// webhook and the metrics, and with the feature off no cookie is set.
func TestTrustedDeviceCookieStaysWithTheGate(t *testing.T) {
	t.Parallel()
	const hookSecret = "webhook-secret-0123456789"
	events := make(chan string, 100)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p struct{ Event, Outcome string }
		json.NewDecoder(r.Body).Decode(&p)
		events <- p.Event + " " + p.Outcome
	}))
	t.Cleanup(recv.Close)
	e := newLoginEnv(t, "TOTPGATE_AUDIT_WEBHOOK_URL="+recv.URL, "TOTPGATE_AUDIT_WEBHOOK_SECRET="+hookSecret)
	_, recovery := e.enroll(t, "alice")
	res, _ := e.login(t, "/login", `{"user":"alice","password":"pw"}`, http.Header{"X-Totp-Code": {recovery[0]}, "X-Totp-Remember-Device": {"1"}})
	token := deviceCookie(t, "login app", cookieNamed(res, gatecookie.Device))
	res, _ = e.login(t, "/login", `{"user":"alice","password":"pw"}`, http.Header{"Cookie": {gatecookie.Device + "=" + token}})
	if res.StatusCode != http.StatusOK || cookieNamed(res, "session") == nil {
		t.Fatalf("login on the trusted device: %d", res.StatusCode)
	}
	token = deviceCookie(t, "login app", cookieNamed(res, gatecookie.Device))
	withDevice := http.Header{"Cookie": {"session=alice; " + gatecookie.Device + "=" + token}}
	e.send(t, "GET", "/some/page", "", withDevice)
	if st, err := e.c.GetStatusWithResponse(context.Background(), func(_ context.Context, r *http.Request) error {
		r.Header = withDevice.Clone()
		return nil
	}); err != nil || st.JSON200 == nil || st.JSON200.TrustedDevices == nil || *st.JSON200.TrustedDevices != 1 {
		t.Errorf("status: %v %s, want trusted_devices 1", err, st.Body)
	}
	e.app.mu.Lock()
	for _, c := range e.app.cookies {
		if strings.Contains(c, "totpgate") || strings.Contains(c, token) {
			t.Errorf("the app got the gate's cookie: %q", c)
		}
	}
	seenSession := len(e.app.cookies) > 0
	e.app.mu.Unlock()
	if !seenSession {
		t.Error("the app saw no cookie at all; the test proves nothing")
	}

	want := map[string]bool{"device_trusted login": false, "device_used login": false, "login_passed trusted_device": false}
	for deadline := time.After(10 * time.Second); ; {
		missing := 0
		for _, ok := range want {
			if !ok {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		select {
		case ev := <-events:
			if _, ok := want[ev]; ok {
				want[ev] = true
			}
		case <-deadline:
			t.Fatalf("webhook: device events delivered %v", want)
		}
	}
	raw, _ := scrape(t, e.s)
	for _, line := range []string{`totpgate_mfa_device_events_total{event="trusted",reason="login"} 1`,
		`totpgate_mfa_device_events_total{event="used",reason="login"} 1`,
		`totpgate_login_interceptions_total{outcome="passed_trusted_device",route="/login"} 1`} {
		if !strings.Contains(raw, line) {
			t.Errorf("/metrics lacks %s:\n%s", line, grepLines(raw, "device"))
		}
	}

	off := newLoginEnv(t, "TOTPGATE_MFA_TRUSTED_DEVICE_TTL=0")
	_, recovery = off.enroll(t, "alice")
	res, _ = off.login(t, "/login", `{"user":"alice","password":"pw"}`, http.Header{"X-Totp-Code": {recovery[0]}, "X-Totp-Remember-Device": {"true"}})
	if res.StatusCode != http.StatusOK || cookieNamed(res, gatecookie.Device) != nil {
		t.Errorf("feature off: status %d, device cookie %v; want the login and no cookie", res.StatusCode, cookieNamed(res, gatecookie.Device))
	}
}

func cookieNamed(res *http.Response, name string) *http.Cookie {
	for _, c := range res.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}
