package proxy_test

import (
	"context"
	"encoding/base32"
	"encoding/json"
	"errors"
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

// The trusted devices at the login gate, with the real parts: the mfa
// service on SQLite and the local keyring, a real app on loopback (its
// /login sets a session cookie, its /signup on a route nobody configured
// too), the real identity introspector, and the gate in front.

type eventLog struct {
	mu  sync.Mutex
	evs []audit.Event
}

func (l *eventLog) Record(_ context.Context, e audit.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.evs = append(l.evs, e)
}

// has reports whether an event name with outcome was recorded for user.
func (l *eventLog) has(name, user, outcome string) bool {
	return l.match(func(e audit.Event) bool { return e.Name == name && e.UserID == user && e.Outcome == outcome })
}

// hasAt is has on one route.
func (l *eventLog) hasAt(name, user, route, outcome string) bool {
	return l.match(func(e audit.Event) bool {
		return e.Name == name && e.UserID == user && e.Route == route && e.Outcome == outcome
	})
}

func (l *eventLog) match(f func(audit.Event) bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.evs, f)
}

type deviceEnv struct {
	front  string
	svc    *mfa.Service
	start  time.Time
	ahead  atomic.Int64 // how far the service's clock is ahead of start
	events *eventLog
	// cookies are the Cookie headers and gate headers the app received.
	mu      sync.Mutex
	cookies []string
	secrets map[string][]byte
}

// devicesStub overrides the service's device answers (a failing store).
type devicesStub struct {
	proxy.TrustedDevices
	err error
}

func (d devicesStub) UseTrustedDevice(context.Context, string, string) (string, mfa.Device, error) {
	return "", mfa.Device{}, d.err
}

func newDeviceEnv(t *testing.T, cfg func(*mfa.Config, *proxy.LoginOptions)) *deviceEnv {
	t.Helper()
	e := &deviceEnv{start: time.Now().UTC(), events: &eventLog{}, secrets: map[string][]byte{}}
	mc := mfa.DefaultConfig()
	app := http.NewServeMux()
	app.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.cookies = append(e.cookies, r.Header.Values("Cookie")...)
		for k := range r.Header {
			if strings.Contains(strings.ToLower(k), "remember") || strings.Contains(strings.ToLower(k), "totp") {
				e.cookies = append(e.cookies, "header "+k)
			}
		}
		e.mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		var creds struct{ User, Password string }
		json.Unmarshal(body, &creds)
		switch r.URL.Path {
		case "/api/me":
			if c, err := r.Cookie("session"); err == nil {
				json.NewEncoder(w).Encode(map[string]string{"id": c.Value})
				return
			}
			w.WriteHeader(http.StatusUnauthorized)
		case "/login", "/signup":
			if creds.Password != "pw" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			http.SetCookie(w, &http.Cookie{Name: "session", Value: creds.User, Path: "/"})
			json.NewEncoder(w).Encode(map[string]any{"user": map[string]string{"id": creds.User}})
		default:
			io.WriteString(w, "page")
		}
	})
	up := httptest.NewServer(app)
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	in, err := identity.NewIntrospector(&http.Client{Timeout: 2 * time.Second}, up.URL+"/api/me", []string{"Cookie"}, "/id", "")
	if err != nil {
		t.Fatal(err)
	}
	cred, err := identity.ParseCredential("cookie:session")
	if err != nil {
		t.Fatal(err)
	}
	lo := &proxy.LoginOptions{
		Paths: []string{"/login"}, CodeHeader: "X-TOTP-Code", CodeField: "totp_code",
		RememberHeader: "X-TOTP-Remember-Device", RememberField: "totp_remember_device",
		UserIDPointer: "/user/id", Challenge: mfa.ChallengeConfig{TTL: time.Minute, MaxAttempts: 3}, ChallengeURL: "/mfa/challenge",
		MaxAnswerBytes: 1 << 20, Audit: e.events, Credentials: []proxy.Credential{cred}, Introspector: in,
	}
	if cfg != nil {
		cfg(&mc, lo)
	}
	e.svc = mfatest.NewWith(t, mc, e.now).Service
	lo.MFA = e.svc
	if lo.Devices == nil {
		lo.Devices = e.svc
	} else if stub, ok := lo.Devices.(devicesStub); ok {
		stub.TrustedDevices = e.svc
		lo.Devices = stub
	}
	tr := proxy.NewTransport(proxy.TransportOptions{DialTimeout: time.Second, ResponseHeaderTimeout: 5 * time.Second, IdleConnTimeout: time.Minute, MaxIdleConns: 8})
	f, err := proxy.New(proxy.Options{
		Upstream: u, Transport: tr, PassThrough: passThroughClient(tr, u),
		APIPrefix: "/mfa", API: http.NotFoundHandler(), Logger: slog.New(slog.DiscardHandler), Login: lo,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	e.front = srv.URL
	return e
}

// now is the service's clock, moved by advance.
func (e *deviceEnv) now() time.Time          { return e.start.Add(time.Duration(e.ahead.Load())) }
func (e *deviceEnv) advance(d time.Duration) { e.ahead.Add(int64(d)) }

func (e *deviceEnv) enroll(t *testing.T, user string) {
	t.Helper()
	ctx := context.Background()
	en, err := e.svc.StartEnrollment(ctx, user, user)
	if err != nil {
		t.Fatal(err)
	}
	secret, _ := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(en.Secret)
	if _, err := e.svc.ConfirmEnrollment(ctx, user, totp.Code(secret, totp.DefaultParams().Step(e.now())-1, totp.DefaultParams())); err != nil {
		t.Fatal(err)
	}
	e.secrets[user] = secret
}

func (e *deviceEnv) code(user string) string {
	p := totp.DefaultParams()
	e.advance(time.Duration(p.Period) * time.Second) // a fresh step each time
	return totp.Code(e.secrets[user], p.Step(e.now()), p)
}

// login posts user's password to path with header, and the device token
// as the gate's cookie when it is not empty.
func (e *deviceEnv) login(t *testing.T, path, user, device string, header ...string) *http.Response {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"user": user, "password": "pw"})
	return e.post(t, path, string(body), device, header...)
}

// post sends a JSON login body to path, as login does.
func (e *deviceEnv) post(t *testing.T, path, body, device string, header ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", e.front+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "devices-test/1.0")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if device != "" {
		req.Header.Set("Cookie", "theme=dark; "+gatecookie.Device+"="+device+"; other=1")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}

// cookie returns the Set-Cookie of name in res, if any.
func cookie(res *http.Response, name string) *http.Cookie {
	for _, c := range res.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// passed: the app's session for user left the gate.
func passed(res *http.Response, user string) bool {
	c := cookie(res, "session")
	return res.StatusCode == http.StatusOK && c != nil && c.Value == user
}

// challenged: the gate held the login and asked for a code; no session left.
func challenged(t *testing.T, res *http.Response) {
	t.Helper()
	if res.StatusCode != http.StatusUnauthorized || cookie(res, "session") != nil {
		t.Fatalf("status %d, session cookie %v; want 401 and the app's session held", res.StatusCode, cookie(res, "session"))
	}
}

// deviceToken returns the device token the gate set on res, after checking
// the cookie's attributes.
func deviceToken(t *testing.T, res *http.Response, maxAge int) string {
	t.Helper()
	c := cookie(res, gatecookie.Device)
	if c == nil || c.Value == "" {
		t.Fatalf("no %s cookie on the answer (status %d, Set-Cookie %q)", gatecookie.Device, res.StatusCode, res.Header.Values("Set-Cookie"))
	}
	if !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Domain != "" || c.MaxAge != maxAge {
		t.Errorf("device cookie %+v: want Secure, HttpOnly, SameSite=Lax, Path=/, no Domain, Max-Age %d", c, maxAge)
	}
	return c.Value
}

// appNeverSawGateCookies fails the test when the app received the gate's
// cookie or one of its request fields as a header.
func (e *deviceEnv) appNeverSawGateCookies(t *testing.T) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, c := range e.cookies {
		if strings.Contains(c, gatecookie.Prefix) || strings.HasPrefix(c, "header ") {
			t.Errorf("the app received the gate's cookie or fields: %q", c)
		}
	}
}

const thirtyDays = 30 * 24 * 60 * 60

func TestTrustedDeviceAtTheGate(t *testing.T) {
	t.Parallel()
	e := newDeviceEnv(t, nil)
	e.enroll(t, "alice")
	e.enroll(t, "bob")

	// A login with a code and the header trusts the device.
	res := e.login(t, "/login", "alice", "", "X-TOTP-Code", e.code("alice"), "X-TOTP-Remember-Device", "true")
	if !passed(res, "alice") {
		t.Fatalf("login with a code: status %d", res.StatusCode)
	}
	t1 := deviceToken(t, res, thirtyDays)
	if !e.events.has(audit.DeviceTrusted, "alice", "login") {
		t.Error("no device_trusted event")
	}
	// Without a code, the device passes and its token rotates.
	e.advance(time.Hour)
	res = e.login(t, "/login", "alice", t1)
	if !passed(res, "alice") {
		t.Fatalf("login on the trusted device: status %d", res.StatusCode)
	}
	t2 := deviceToken(t, res, thirtyDays-3600) // an hour after it was trusted
	if t2 == t1 {
		t.Fatal("the token did not rotate")
	}
	if !e.events.has(audit.DeviceUsed, "alice", "login") || !e.events.has(audit.LoginPassed, "alice", "trusted_device") {
		t.Error("no device_used / login_passed trusted_device event")
	}
	// Another user presenting alice's device is challenged, and alice's
	// device is untouched by it.
	challenged(t, e.login(t, "/login", "bob", t2))
	res = e.login(t, "/login", "alice", t2)
	if !passed(res, "alice") {
		t.Fatalf("alice after bob tried her device: status %d", res.StatusCode)
	}
	t3 := cookie(res, gatecookie.Device).Value
	// The rotated-away token, used again: challenged, the device revoked,
	// the cookie cleared; the current token no longer passes either.
	res = e.login(t, "/login", "alice", t2)
	challenged(t, res)
	if c := cookie(res, gatecookie.Device); c == nil || c.MaxAge >= 0 {
		t.Errorf("reuse answer: device cookie %+v, want it cleared", c)
	}
	if !e.events.has(audit.DeviceReuseDetected, "alice", "revoked") {
		t.Error("no device_reuse_detected event")
	}
	challenged(t, e.login(t, "/login", "alice", t3))

	e.appNeverSawGateCookies(t)
}

// A login with a code that asks to remember a browser already holding a
// device of that user replaces the device: one browser, one device, and
// the overwritten token no longer passes.
func TestTrustedDeviceReplacedAtTheGate(t *testing.T) {
	t.Parallel()
	e := newDeviceEnv(t, nil)
	e.enroll(t, "alice")
	old := deviceToken(t, e.login(t, "/login", "alice", "", "X-TOTP-Code", e.code("alice"), "X-TOTP-Remember-Device", "true"), thirtyDays)
	res := e.login(t, "/login", "alice", old, "X-TOTP-Code", e.code("alice"), "X-TOTP-Remember-Device", "true")
	if !passed(res, "alice") {
		t.Fatalf("login with a code from a trusted browser: status %d", res.StatusCode)
	}
	fresh := deviceToken(t, res, thirtyDays)
	if !e.events.has(audit.DeviceRevoked, "alice", "replaced") {
		t.Error("no device_revoked replaced event")
	}
	challenged(t, e.login(t, "/login", "alice", old))
	if !passed(e.login(t, "/login", "alice", fresh), "alice") {
		t.Error("the new device does not pass")
	}
}

// The flag in the body works as the header; a request that says false,
// or a login without a code, trusts nothing.
func TestTrustedDeviceFromBodyField(t *testing.T) {
	t.Parallel()
	e := newDeviceEnv(t, nil)
	e.enroll(t, "alice")
	body := func(remember string) string {
		return `{"user":"alice","password":"pw","totp_code":"` + e.code("alice") + `","totp_remember_device":` + remember + `}`
	}
	for _, tc := range []struct {
		remember string
		trust    bool
	}{{"true", true}, {"false", false}, {`"1"`, true}} {
		res := e.post(t, "/login", body(tc.remember), "")
		if !passed(res, "alice") || (cookie(res, gatecookie.Device) != nil) != tc.trust {
			t.Errorf("totp_remember_device %s: status %d, device cookie %v; want passed, cookie %v", tc.remember, res.StatusCode, cookie(res, gatecookie.Device), tc.trust)
		}
	}
	res := e.login(t, "/login", "alice", "", "X-TOTP-Remember-Device", "maybe", "X-TOTP-Code", e.code("alice"))
	if res.StatusCode != http.StatusBadRequest || cookie(res, "session") != nil {
		t.Errorf("remember: maybe: status %d, want 400 and no session", res.StatusCode)
	}
	e.appNeverSawGateCookies(t)
}

// On a route nobody configured (a signup that logs in), a held session
// passes on a trusted device too: the cookie the app never sees is still
// read from the client's request.
func TestTrustedDeviceOnAnyRoute(t *testing.T) {
	t.Parallel()
	e := newDeviceEnv(t, nil)
	e.enroll(t, "alice")
	token := deviceToken(t, e.login(t, "/login", "alice", "", "X-TOTP-Code", e.code("alice"), "X-TOTP-Remember-Device", "1"), thirtyDays)
	challenged(t, e.login(t, "/signup", "alice", ""))
	res := e.login(t, "/signup", "alice", token)
	if !passed(res, "alice") {
		t.Fatalf("signup on a trusted device: status %d", res.StatusCode)
	}
	if next := cookie(res, gatecookie.Device); next == nil || next.Value == token {
		t.Errorf("signup on a trusted device: device cookie %v, want a rotated token", next)
	}
	e.appNeverSawGateCookies(t)
}

func TestTrustedDeviceExpiresAtTheGate(t *testing.T) {
	t.Parallel()
	e := newDeviceEnv(t, func(c *mfa.Config, _ *proxy.LoginOptions) { c.TrustedDeviceTTL = time.Hour })
	e.enroll(t, "alice")
	token := deviceToken(t, e.login(t, "/login", "alice", "", "X-TOTP-Code", e.code("alice"), "X-TOTP-Remember-Device", "true"), 3600)
	e.advance(time.Hour - time.Minute)
	res := e.login(t, "/login", "alice", token)
	if !passed(res, "alice") {
		t.Fatalf("a minute before the expiry: status %d", res.StatusCode)
	}
	token = deviceToken(t, res, 60)
	e.advance(time.Minute)
	challenged(t, e.login(t, "/login", "alice", token))
}

// Trusted devices off (TTL 0): the flag is ignored, no cookie is set, and
// a token from before does not pass.
func TestTrustedDevicesOffAtTheGate(t *testing.T) {
	t.Parallel()
	e := newDeviceEnv(t, func(c *mfa.Config, _ *proxy.LoginOptions) { c.TrustedDeviceTTL = 0 })
	e.enroll(t, "alice")
	res := e.login(t, "/login", "alice", "", "X-TOTP-Code", e.code("alice"), "X-TOTP-Remember-Device", "true")
	if !passed(res, "alice") || cookie(res, gatecookie.Device) != nil {
		t.Fatalf("status %d, device cookie %v; want passed without one", res.StatusCode, cookie(res, gatecookie.Device))
	}
	challenged(t, e.login(t, "/login", "alice", strings.Repeat("A", 43)))
}

// The device check failing (store or keyring down) leaves the login to the
// challenge: fail closed, never a release.
func TestTrustedDeviceUnavailableChallenges(t *testing.T) {
	t.Parallel()
	e := newDeviceEnv(t, func(_ *mfa.Config, lo *proxy.LoginOptions) {
		lo.Devices = devicesStub{err: errors.Join(mfa.ErrUnavailable, errors.New("disk gone"))}
	})
	e.enroll(t, "alice")
	challenged(t, e.login(t, "/login", "alice", strings.Repeat("A", 43)))
}

// Under the required policy a user without MFA must enroll: a device
// cookie (left from before an admin reset) skips nothing, and the reset
// revoked the device.
func TestTrustedDeviceDoesNotSkipEnrollment(t *testing.T) {
	t.Parallel()
	e := newDeviceEnv(t, func(_ *mfa.Config, lo *proxy.LoginOptions) { lo.Required = true })
	e.enroll(t, "alice")
	token := deviceToken(t, e.login(t, "/login", "alice", "", "X-TOTP-Code", e.code("alice"), "X-TOTP-Remember-Device", "true"), thirtyDays)
	if n, err := e.svc.Reset(context.Background(), "alice"); err != nil || n != 1 {
		t.Fatalf("Reset = %d, %v; want 1 device revoked", n, err)
	}
	res := e.login(t, "/login", "alice", token)
	challenged(t, res)
	e.enroll(t, "alice")
	challenged(t, e.login(t, "/login", "alice", token))
}

// The pass-through never hands the app a __Host-totpgate- cookie, and
// keeps every other cookie as sent.
func TestGateCookiesNeverReachTheApp(t *testing.T) {
	t.Parallel()
	got := make(chan []string, 4)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Values("Cookie")
	}))
	t.Cleanup(up.Close)
	for _, watch := range []bool{false, true} {
		front := newFront(t, up.URL, frontOpts{watch: watch})
		for _, tc := range []struct{ sent, want string }{
			{"a=1; __Host-totpgate-device=secret; b=2", "a=1; b=2"},
			{"__Host-totpgate-device=x; __Host-totpgate-step-up=y", ""},
			{"a=1;b=2", "a=1;b=2"},
			{"a=__Host-totpgate-device", "a=__Host-totpgate-device"},
		} {
			req, _ := http.NewRequest("GET", front+"/page", nil)
			req.Header.Set("Cookie", tc.sent)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if cs := <-got; strings.Join(cs, "; ") != tc.want {
				t.Errorf("watch %v: sent Cookie %q, the app got %q, want %q", watch, tc.sent, cs, tc.want)
			}
		}
	}
}
