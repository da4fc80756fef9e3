package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// `totpgate users get|reset|unlock` over the real admin API: output and
// exit codes a script can rely on, and no secret in either.
func TestUsersCommand(t *testing.T) {
	t.Parallel()
	const token = "an-admin-token-of-some-length"
	e := newLoginEnv(t, "TOTPGATE_ADMIN_TOKEN="+token, "TOTPGATE_MFA_MAX_FAILURES=1")
	e.enroll(t, "vera")
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cli := func(args ...string) (string, string, int) {
		t.Helper()
		out, errOut, err := runCLI(t, dir, nil, append(args, "--admin-url", e.s.admin, "--token-file", tokenFile)...)
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out, errOut, code
	}
	// Lock vera with one wrong code.
	e.login(t, "/login", `{"user":"vera","password":"pw"}`, http.Header{"X-Totp-Code": {"000000"}})

	out, _, code := cli("users", "get", "vera")
	var rec map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &rec) != nil || rec["user_id"] != "vera" || rec["state"] != "active" || rec["locked_until"] == nil {
		t.Fatalf("users get = %d %s", code, out)
	}
	if strings.Contains(strings.ToLower(out), "secret") || strings.Contains(out, "ciphertext") {
		t.Fatalf("users get printed secret material: %s", out)
	}
	if out, _, code := cli("users", "unlock", "vera"); code != 0 || out != "unlocked vera\n" {
		t.Fatalf("users unlock = %d %q", code, out)
	}
	if out, _ := cliGet(t, cli, "vera"); out["locked_until"] != nil {
		t.Fatalf("still locked after unlock: %v", out)
	}
	if out, _, code := cli("users", "reset", "vera"); code != 0 || out != "reset vera\n" {
		t.Fatalf("users reset = %d %q", code, out)
	}
	if _, errOut, code := cli("users", "get", "vera"); code != exitNotFound || !strings.Contains(errOut, "no MFA record") {
		t.Fatalf("users get after reset = %d %q, want exit %d", code, errOut, exitNotFound)
	}
	wrong := filepath.Join(dir, "wrong")
	os.WriteFile(wrong, []byte("not-the-admin-token-at-all"), 0o600)
	if _, _, code := runCLIExit(t, dir, "users", "get", "vera", "--admin-url", e.s.admin, "--token-file", wrong); code != exitUnauthorized {
		t.Fatalf("wrong token: exit %d, want %d", code, exitUnauthorized)
	}
	if _, _, code := runCLIExit(t, dir, "users", "frobnicate", "vera"); code != exitUsage {
		t.Fatalf("unknown operation: exit %d, want %d", code, exitUsage)
	}
}

func cliGet(t *testing.T, cli func(args ...string) (string, string, int), user string) (map[string]any, int) {
	t.Helper()
	out, _, code := cli("users", "get", user)
	var rec map[string]any
	json.Unmarshal([]byte(out), &rec)
	return rec, code
}

func runCLIExit(t *testing.T, dir string, args ...string) (string, string, int) {
	t.Helper()
	out, errOut, err := runCLI(t, dir, nil, args...)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out, errOut, ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return out, errOut, 0
}
