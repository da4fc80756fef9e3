package main

import (
	"context"
	"encoding/base32"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/totpgate/totpgate/gen"
	"github.com/totpgate/totpgate/totp"
)

// appWithSessions is a real upstream app on loopback: GET /api/me answers
// the user named by the "session" cookie, or 401.
func appWithSessions(t *testing.T) *httptest.Server {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/me" {
			http.NotFound(w, r)
			return
		}
		c, err := r.Cookie("session")
		if err != nil || c.Value == "" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"id": c.Value, "email": c.Value + "@example.com"})
	}))
	t.Cleanup(up.Close)
	return up
}

func session(user string) gen.RequestEditorFn {
	return func(_ context.Context, req *http.Request) error {
		req.AddCookie(&http.Cookie{Name: "session", Value: user})
		return nil
	}
}

// The enrollment journey through the generated Go client against the real
// binary, a real app, SQLite on disk and the local keyring file.
func TestEnrollmentJourneyThroughGeneratedClient(t *testing.T) {
	t.Parallel()
	up := appWithSessions(t)
	s := startSidecar(t, []string{"TOTPGATE_ADMIN_TOKEN=an-admin-token-of-some-length", "TOTPGATE_IDENTITY_ACCOUNT_POINTER=/email"}, "--upstream", up.URL)
	ctx := context.Background()
	c, err := gen.NewClientWithResponses(s.main)
	if err != nil {
		t.Fatal(err)
	}
	alice := session("alice")

	st, err := c.GetStatusWithResponse(ctx)
	if err != nil || st.StatusCode() != http.StatusUnauthorized {
		t.Fatalf("status without a session: %v %v", st.StatusCode(), err)
	}
	st, err = c.GetStatusWithResponse(ctx, alice)
	if err != nil || st.JSON200 == nil || st.JSON200.State != gen.MfaStateNone || st.JSON200.UserId != "alice" {
		t.Fatalf("status before enrollment: %s %v", st.Body, err)
	}

	en, err := c.StartEnrollmentWithResponse(ctx, alice)
	if err != nil || en.JSON201 == nil {
		t.Fatalf("start enrollment: %d %s %v", en.StatusCode(), en.Body, err)
	}
	if cc := en.HTTPResponse.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("enrollment Cache-Control = %q", cc)
	}
	if !strings.HasPrefix(en.JSON201.OtpauthUri, "otpauth://totp/totpgate:alice@example.com?") || len(en.JSON201.QrPng) == 0 {
		t.Errorf("enrollment: uri %q, %d PNG bytes", en.JSON201.OtpauthUri, len(en.JSON201.QrPng))
	}
	secret, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(en.JSON201.Secret)
	if err != nil || len(secret) < 20 {
		t.Fatalf("secret: %d bytes, %v", len(secret), err)
	}
	p := totp.DefaultParams()
	code := func(offset int64) string { return totp.Code(secret, p.Step(time.Now())+offset, p) }

	bad, _ := c.ConfirmEnrollmentWithResponse(ctx, gen.CodeRequest{Code: "000000"}, alice)
	if bad.StatusCode() != http.StatusForbidden || bad.ApplicationproblemJSON403 == nil || bad.ApplicationproblemJSON403.Code != gen.ProblemCodeMfaInvalid {
		t.Fatalf("confirm with a wrong code: %d %s", bad.StatusCode(), bad.Body)
	}
	conf, err := c.ConfirmEnrollmentWithResponse(ctx, gen.CodeRequest{Code: code(0)}, alice)
	if err != nil || conf.JSON200 == nil || len(conf.JSON200.RecoveryCodes) != 10 {
		t.Fatalf("confirm: %d %s %v", conf.StatusCode(), conf.Body, err)
	}
	recovery := conf.JSON200.RecoveryCodes

	st, _ = c.GetStatusWithResponse(ctx, alice)
	if st.JSON200 == nil || st.JSON200.State != gen.MfaStateActive || st.JSON200.RecoveryCodesRemaining != 10 {
		t.Fatalf("status after confirm: %s", st.Body)
	}
	again, _ := c.StartEnrollmentWithResponse(ctx, alice)
	if again.StatusCode() != http.StatusConflict {
		t.Fatalf("enroll while active: %d", again.StatusCode())
	}
	// Bob cannot use Alice's recovery code.
	bobDisable, _ := c.DisableMfaWithResponse(ctx, gen.CodeRequest{Code: recovery[0]}, session("bob"))
	if bobDisable.StatusCode() != http.StatusConflict {
		t.Fatalf("bob disabling with alice's code: %d %s", bobDisable.StatusCode(), bobDisable.Body)
	}
	regen, _ := c.RegenerateRecoveryCodesWithResponse(ctx, gen.CodeRequest{Code: code(1)}, alice)
	if regen.JSON200 == nil || len(regen.JSON200.RecoveryCodes) != 10 {
		t.Fatalf("regenerate: %d %s", regen.StatusCode(), regen.Body)
	}
	old, _ := c.DisableMfaWithResponse(ctx, gen.CodeRequest{Code: recovery[0]}, alice)
	if old.StatusCode() != http.StatusForbidden {
		t.Fatalf("disable with a replaced recovery code: %d %s", old.StatusCode(), old.Body)
	}

	admin, _ := gen.NewClientWithResponses(s.admin)
	token := func(_ context.Context, req *http.Request) error {
		req.Header.Set("Authorization", "Bearer an-admin-token-of-some-length")
		return nil
	}
	au, err := admin.AdminGetUserWithResponse(ctx, "alice", token)
	if err != nil || au.JSON200 == nil || au.JSON200.Failures != 1 || au.JSON200.KeyVersion != 1 {
		t.Fatalf("admin get user: %d %s %v", au.StatusCode(), au.Body, err)
	}

	dis, _ := c.DisableMfaWithResponse(ctx, gen.CodeRequest{Code: regen.JSON200.RecoveryCodes[0]}, alice)
	if dis.StatusCode() != http.StatusNoContent {
		t.Fatalf("disable: %d %s", dis.StatusCode(), dis.Body)
	}
	if nf, _ := admin.AdminGetUserWithResponse(ctx, "alice", token); nf.StatusCode() != http.StatusNotFound {
		t.Fatalf("admin get user after disable: %d", nf.StatusCode())
	}

	// State lives in files created with mode 0600 in the working directory.
	for _, f := range []string{"totpgate.db", "totpgate-keyring.json"} {
		fi, err := os.Stat(filepath.Join(s.cmd.Dir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v", f, err, fi.Mode().Perm())
		}
	}
	// Every security event is one audit line; nothing secret in the logs.
	logs := s.logs.String()
	for _, ev := range []string{"enroll_started", "enroll_confirmed", "recovery_regenerated", "mfa_disabled"} {
		if !strings.Contains(logs, `"msg":"audit","audit_v":1,"event":"`+ev+`","user_id":"alice"`) {
			t.Errorf("no audit event %s for alice in:\n%s", ev, logs)
		}
	}
	for _, secretish := range append([]string{en.JSON201.Secret, code(0)}, recovery...) {
		if strings.Contains(logs, secretish) {
			t.Errorf("logs contain a secret or code")
		}
	}
}

// kill -9 between the steps of enrollment loses nothing and leaves no half
// state: a pending enrollment survives to be confirmed, a confirmed one stays
// active with all its recovery codes.
func TestCrashBetweenEnrollmentSteps(t *testing.T) {
	t.Parallel()
	up := appWithSessions(t)
	dir := t.TempDir()
	ctx := context.Background()
	alice := session("alice")
	client := func(s *sidecar) *gen.ClientWithResponses {
		c, err := gen.NewClientWithResponses(s.main)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	kill := func(s *sidecar) {
		if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-s.exited
	}

	s := startSidecarIn(t, dir, nil, "--upstream", up.URL)
	en, err := client(s).StartEnrollmentWithResponse(ctx, alice)
	if err != nil || en.JSON201 == nil {
		t.Fatalf("start: %s %v", en.Body, err)
	}
	kill(s)

	s = startSidecarIn(t, dir, nil, "--upstream", up.URL)
	st, _ := client(s).GetStatusWithResponse(ctx, alice)
	if st.JSON200 == nil || st.JSON200.State != gen.MfaStatePending {
		t.Fatalf("after kill -9 while pending: %s", st.Body)
	}
	secret, _ := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(en.JSON201.Secret)
	p := totp.DefaultParams()
	conf, _ := client(s).ConfirmEnrollmentWithResponse(ctx, gen.CodeRequest{Code: totp.Code(secret, p.Step(time.Now()), p)}, alice)
	if conf.JSON200 == nil {
		t.Fatalf("confirm after restart: %d %s", conf.StatusCode(), conf.Body)
	}
	kill(s)

	s = startSidecarIn(t, dir, nil, "--upstream", up.URL)
	st, _ = client(s).GetStatusWithResponse(ctx, alice)
	if st.JSON200 == nil || st.JSON200.State != gen.MfaStateActive || st.JSON200.RecoveryCodesRemaining != 10 {
		t.Fatalf("after kill -9 once active: %s", st.Body)
	}
	// A recovery code issued before the crash works after it.
	dis, _ := client(s).DisableMfaWithResponse(ctx, gen.CodeRequest{Code: conf.JSON200.RecoveryCodes[0]}, alice)
	if dis.StatusCode() != http.StatusNoContent {
		t.Fatalf("recovery code after restart: %d %s", dis.StatusCode(), dis.Body)
	}
}
