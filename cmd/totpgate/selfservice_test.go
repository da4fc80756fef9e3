package main

import (
	"encoding/base32"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/totpgate/totpgate/totp"
)

// The self-service page is served with a strict CSP and only when enabled.
func TestSelfServicePageHeaders(t *testing.T) {
	t.Parallel()
	on := newLoginEnv(t, "TOTPGATE_API_SELF_SERVICE=true")
	res, err := http.Get(on.s.main + "/mfa/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	csp := res.Header.Get("Content-Security-Policy")
	if res.StatusCode != 200 || !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'self'") ||
		strings.Contains(csp, "unsafe") || !strings.Contains(csp, "frame-ancestors 'none'") || res.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("page: %d %v", res.StatusCode, res.Header)
	}
	for _, asset := range []string{"/mfa/assets/app.js", "/mfa/assets/app.css"} {
		res, err := http.Get(on.s.main + asset)
		if err != nil || res.StatusCode != 200 || res.Header.Get("Content-Security-Policy") == "" {
			t.Fatalf("%s: %v %v", asset, err, res)
		}
		res.Body.Close()
	}
	if res, _ := http.Post(on.s.main+"/mfa/", "text/plain", nil); res.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST to the page: %d", res.StatusCode)
	}
	off := newLoginEnv(t)
	res, err = http.Get(off.s.main + "/mfa/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Fatalf("page served while disabled: %d", res.StatusCode)
	}
}

// A user enrolls from the page in headless Chromium: the QR code in the
// screenshot decodes to the otpauth URI of the secret shown, the recovery
// codes download, and the user then logs in through the app with MFA.
// On the page the user trusts the browser with a code; a login in that
// browser then passes without a code (the device cookie rotates), "sign
// out every other device" ends another browser's trust, and once this
// browser is revoked its token is challenged.
func TestSelfServicePageInChromium(t *testing.T) {
	t.Parallel()
	script, artifacts := browserScript(t, "selfservice")

	e := newLoginEnv(t, "TOTPGATE_API_SELF_SERVICE=true", "TOTPGATE_SESSION_CREDENTIALS=cookie:session",
		"TOTPGATE_IDENTITY_FORWARD_HEADERS=Cookie", "TOTPGATE_STEP_UP_ROUTES=POST /settings/password 5m",
		// One browser drives the whole page at machine speed: more than
		// the default per-client budget a person would ever use.
		"TOTPGATE_API_RATE_BURST=200")
	user := "page-user"
	cmd := exec.Command("node", script)
	cmd.Env = append(os.Environ(), "TOTPGATE_URL="+e.s.main, "TOTPGATE_USER="+user, "ARTIFACTS="+artifacts)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("browser run: %v\n%s\n%s", err, out, stderr)
	}
	var got struct {
		Secret       string
		Codes        []string
		Downloaded   []string
		Unlabeled    []string
		Focused      string
		Errors       []string
		DownloadName string
		Nameless     []string
		Devices      browserDevices
		StepUp       struct {
			PageURL, Message string
			Direct           struct{ URL, Body string }
			Proof            *struct {
				Secure   bool
				HTTPOnly bool `json:"httpOnly"`
				SameSite string
				Path     string
			}
		}
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("browser output: %v\n%s", err, out)
	}
	t.Logf("screenshots in %s", artifacts)
	if len(got.Errors) > 0 {
		t.Errorf("console errors (CSP violations show here): %v", got.Errors)
	}
	if len(got.Unlabeled) > 0 {
		t.Errorf("inputs without a label: %v", got.Unlabeled)
	}
	if len(got.Nameless) > 0 {
		t.Errorf("buttons without an accessible name: %v", got.Nameless)
	}
	if got.Focused != "enroll-start" {
		t.Errorf("the first Tab stop is %q, want the setup button", got.Focused)
	}
	got.Devices.check(t)
	// Step-up from the page: the held form post reached the app once, after
	// the code; the proof then let the second one straight through. The
	// page's address no longer holds the challenge id.
	if su := got.StepUp; strings.Contains(su.PageURL, "step-up=") || !strings.HasSuffix(su.PageURL, "/mfa/") || su.Message != "Confirmed." ||
		su.Proof == nil || !su.Proof.Secure || !su.Proof.HTTPOnly || su.Proof.SameSite != "Lax" || su.Proof.Path != "/" ||
		!strings.Contains(su.Direct.Body, `"changed":2`) {
		t.Errorf("step-up through the page: %+v", su)
	}
	e.app.mu.Lock()
	changes := e.app.changes
	e.app.mu.Unlock()
	if changes != 2 {
		t.Errorf("the app ran the password change %d times, want 2 (once after the code, once with the proof)", changes)
	}
	if len(got.Codes) != 10 || !slices.Equal(got.Codes, got.Downloaded) || got.DownloadName != "recovery-codes.txt" {
		t.Fatalf("codes %v, downloaded %q %v", got.Codes, got.DownloadName, got.Downloaded)
	}

	// The QR code as the browser drew it decodes to the setup link.
	zbar, err := exec.Command("zbarimg", "--quiet", "--raw", filepath.Join(artifacts, "qr.png")).Output()
	if err != nil {
		t.Fatalf("zbarimg: %v", err)
	}
	uri := strings.TrimSpace(string(zbar))
	if !strings.HasPrefix(uri, "otpauth://totp/") || !strings.Contains(uri, "secret="+got.Secret) {
		t.Fatalf("QR decodes to %q, secret shown %q", uri, got.Secret)
	}

	// Log in through the app with the second factor just set up.
	secret, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(got.Secret)
	if err != nil {
		t.Fatal(err)
	}
	p := totp.DefaultParams()
	res, body := e.login(t, "/login", `{"user":"`+user+`","password":"pw"}`, nil)
	if res.StatusCode != 401 || !strings.Contains(body, "mfa_required") {
		t.Fatalf("login without a code after enrolling on the page: %d %s", res.StatusCode, body)
	}
	res, body = e.login(t, "/login", `{"user":"`+user+`","password":"pw"}`,
		http.Header{"X-Totp-Code": {totp.Code(secret, p.Step(time.Now())+1, p)}})
	if res.StatusCode != 200 || !granted(res, body) {
		t.Fatalf("login with MFA: %d %s", res.StatusCode, body)
	}
	res, body = e.login(t, "/login", `{"user":"`+user+`","password":"pw"}`, http.Header{"X-Totp-Code": {got.Downloaded[3]}})
	if res.StatusCode != 200 || !granted(res, body) {
		t.Fatalf("login with a downloaded recovery code: %d %s", res.StatusCode, body)
	}
}

// browserDevices is what the browser script saw of trusted devices.
type browserDevices struct {
	TrustText, TrustMessage, TrustedHere string
	OtherTrust                           int
	Listed                               []struct {
		Label   string
		Current bool
		Times   int
		Revoke  string
	}
	AfterOthers, AfterRevoke int
	Cleared, Rotated         bool
	Trusted                  *struct {
		Value, SameSite, Path, Domain string
		Secure                        bool
		HTTPOnly                      bool `json:"httpOnly"`
	}
	TrustedLogin, OtherLogin, RevokedLogin, ReplayedLogin struct {
		Status  int
		Code    string
		Session bool
	}
}

func (d browserDevices) check(t *testing.T) {
	t.Helper()
	if d.TrustText != "Trust this browser for 30 days" || !strings.Contains(d.TrustMessage, "This browser is trusted until") || d.TrustedHere != "This browser" {
		t.Errorf("trusting on the page: button %q, message %q, marked %q", d.TrustText, d.TrustMessage, d.TrustedHere)
	}
	// Chromium keeps the __Host- cookie on http://127.0.0.1 (a potentially
	// trustworthy origin) with every attribute the gate set.
	if c := d.Trusted; c == nil || len(c.Value) != 43 || !c.Secure || !c.HTTPOnly || c.SameSite != "Lax" || c.Path != "/" || c.Domain != "127.0.0.1" {
		t.Fatalf("the browser's device cookie after trusting on the page: %+v", c)
	}
	if d.OtherTrust != 201 || len(d.Listed) != 2 {
		t.Fatalf("another browser trusted itself (%d); the page lists %+v, want two devices", d.OtherTrust, d.Listed)
	}
	for _, l := range d.Listed {
		want := l.Label != "Other browser/1.0" // this browser's is Chromium's own User-Agent
		if l.Current != want || l.Times != 3 || !strings.HasPrefix(l.Revoke, "Revoke ") || (l.Current && l.Revoke != "Revoke this browser") {
			t.Errorf("listed device %+v: want this browser marked current, its three dates and a named Revoke button", l)
		}
	}
	if l := d.TrustedLogin; l.Status != 200 || !l.Session || !d.Rotated {
		t.Errorf("login in the trusted browser without a code: %+v, token rotated %v; want 200 with the app's session and a new token", l, d.Rotated)
	}
	if l := d.OtherLogin; d.AfterOthers != 1 || l.Status != 401 || l.Code != "mfa_required" || l.Session {
		t.Errorf("after signing out every other device the page lists %d; the other browser's login %+v, want 401 mfa_required", d.AfterOthers, l)
	}
	if l := d.RevokedLogin; !d.Cleared || d.AfterRevoke != 0 || l.Status != 401 || l.Code != "mfa_required" || l.Session {
		t.Errorf("after revoking this browser: cookie cleared %v, %d listed, its next login %+v; want cleared, none, 401 mfa_required", d.Cleared, d.AfterRevoke, l)
	}
	if l := d.ReplayedLogin; l.Status != 401 || l.Code != "mfa_required" {
		t.Errorf("a login with the revoked browser's last token: %+v, want 401 mfa_required", l)
	}
}

// browserScript checks that headless Chromium and playwright-core are
// there, copies <pkg>/browser.mjs into .tools/npm (ES modules resolve
// packages from the script's directory) and returns it with a fresh
// .artifacts/<pkg> directory for its screenshots. The copy has a name of
// its own, removed after the test: .tools may be shared by checkouts whose
// scripts differ (worktrees), and a run must not take another's script.
func browserScript(t *testing.T, pkg string) (script, artifacts string) {
	t.Helper()
	npm, _ := filepath.Abs(filepath.Join("..", "..", ".tools", "npm"))
	if _, err := os.Stat(filepath.Join(npm, "node_modules", "playwright-core")); err != nil {
		t.Fatalf("playwright-core missing in .tools/npm: run `make test` (it installs .ci/npm): %v", err)
	}
	if _, err := os.Stat("/usr/bin/chromium"); err != nil {
		t.Fatal("no /usr/bin/chromium: `make test-deps` installs Debian's chromium")
	}
	artifacts, _ = filepath.Abs(filepath.Join("..", "..", ".artifacts", pkg))
	_ = os.RemoveAll(artifacts)
	src, err := os.ReadFile(filepath.Join("..", "..", pkg, "browser.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(npm, pkg+"-browser-*.mjs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(f.Name()) })
	if _, err := f.Write(src); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return f.Name(), artifacts
}
