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
func TestSelfServicePageInChromium(t *testing.T) {
	t.Parallel()
	script, artifacts := browserScript(t, "selfservice")

	e := newLoginEnv(t, "TOTPGATE_API_SELF_SERVICE=true")
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
	if got.Focused != "enroll-start" {
		t.Errorf("the first Tab stop is %q, want the setup button", got.Focused)
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

// browserScript checks that headless Chromium and playwright-core are
// there, copies <pkg>/browser.mjs into .tools/npm (ES modules resolve
// packages from the script's directory) and returns it with a fresh
// .artifacts/<pkg> directory for its screenshots.
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
	script = filepath.Join(npm, pkg+"-browser.mjs")
	if err := os.WriteFile(script, src, 0o644); err != nil {
		t.Fatal(err)
	}
	return script, artifacts
}
