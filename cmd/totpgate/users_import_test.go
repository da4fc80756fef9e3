package main

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/totpgate/totpgate/gen"
	"github.com/totpgate/totpgate/totp"
)

// migrationPayload builds an authenticator app's export of one TOTP
// account (protobuf MigrationPayload, by hand).
func migrationPayload(name string, secret []byte, sha256, eightDigits bool) string {
	field := func(num int, b []byte) []byte { return append([]byte{byte(num<<3 | 2), byte(len(b))}, b...) }
	varint := func(num int, v byte) []byte { return []byte{byte(num << 3), v} }
	var p []byte
	p = append(p, field(1, secret)...)
	p = append(p, field(2, []byte("Shop:"+name))...)
	p = append(p, field(3, []byte("Shop"))...)
	alg, digits := byte(1), byte(1)
	if sha256 {
		alg = 2
	}
	if eightDigits {
		digits = 2
	}
	p = append(p, varint(4, alg)...)
	p = append(p, varint(5, digits)...)
	p = append(p, varint(6, 2)...) // TOTP
	payload := append(field(1, p), varint(2, 1)...)
	return "otpauth-migration://offline?data=" + strings.ReplaceAll(base64.StdEncoding.EncodeToString(payload), "+", "%2B")
}

// `totpgate users import`: existing TOTP users are turned on without
// re-enrollment, with their own parameters; bad files import nothing;
// reruns change nothing; no secret is ever printed.
func TestUsersImport(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("oathtool"); err != nil {
		t.Fatal("oathtool missing: `make test-deps` installs it")
	}
	dir := t.TempDir()
	secret := func() ([]byte, string) {
		b := make([]byte, 20)
		rand.Read(b)
		return b, totp.EncodeSecret(b)
	}
	_, b1 := secret()
	s2, b2 := secret()
	s3, _ := secret()
	good := importFile(b1, b2, s3)
	goodFile := filepath.Join(dir, "users.txt")
	os.WriteFile(goodFile, []byte(good), 0o600)
	badFile := filepath.Join(dir, "bad.txt")
	os.WriteFile(badFile, []byte("imp4,"+b1+"\nweak,JBSWY3DPEHPK3PXP\nthis is not a line\notpauth://hotp/x?secret="+b2+"\n"), 0o600)
	noSecret := func(out string) {
		t.Helper()
		for _, b := range []string{b1, b2, strings.ToLower(b2), "JBSWY3DPEHPK3PXP"} {
			if strings.Contains(out, b) {
				t.Fatalf("output holds a secret:\n%s", out)
			}
		}
	}

	out, errOut, code := runCLIExit(t, dir, "users", "import", badFile)
	noSecret(out + errOut)
	if code != exitRefused || !strings.Contains(errOut, "line 2: the secret has 80 bits") || !strings.Contains(errOut, "line 3:") || !strings.Contains(errOut, "line 4:") || strings.Contains(errOut, "line 1:") {
		t.Fatalf("bad file: exit %d\n%s", code, errOut)
	}
	// The file's entries are of issuer Shop: by default (mfa.issuer) they are skipped.
	out, errOut, code = runCLIExit(t, dir, "users", "import", goodFile, "--dry-run")
	if code != 0 || !strings.Contains(errOut, `skipped "imp1" of issuer "Shop"`) || !strings.Contains(out, "would import 1, unchanged 0") {
		t.Fatalf("another issuer's entries: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = runCLIExit(t, dir, "users", "import", goodFile, "--dry-run", "--issuer", "Shop")
	noSecret(out + errOut)
	if code != 0 || !strings.Contains(out, "would import 3, unchanged 0") {
		t.Fatalf("dry run: exit %d\n%s%s", code, out, errOut)
	}
	codesFile := filepath.Join(dir, "codes.txt")
	out, errOut, code = runCLIExit(t, dir, "users", "import", goodFile, "--issuer", "Shop", "--recovery-codes", codesFile)
	noSecret(out + errOut)
	if code != 0 || !strings.Contains(out, "imported 3, unchanged 0") || !strings.Contains(out, "line 2: imported imp1 (SHA256, 8 digits, 60 s)") {
		t.Fatalf("import (the dry run must have written nothing): exit %d\n%s%s", code, out, errOut)
	}
	codes, err := os.ReadFile(codesFile)
	st, _ := os.Stat(codesFile)
	if err != nil || strings.Count(string(codes), "\n") != 3 || st.Mode().Perm() != 0o600 {
		t.Fatalf("recovery codes file: %v %v\n%s", err, st.Mode(), codes)
	}
	out, _, code = runCLIExit(t, dir, "users", "import", goodFile, "--issuer", "Shop")
	if code != 0 || !strings.Contains(out, "imported 0, unchanged 3") {
		t.Fatalf("rerun: exit %d\n%s", code, out)
	}
	// Another secret for an imported user refuses the whole file.
	other, _ := secret()
	conflict := filepath.Join(dir, "conflict.txt")
	os.WriteFile(conflict, []byte("imp5,"+totp.EncodeSecret(s2)+"\nimp2,"+totp.EncodeSecret(other)+"\n"), 0o600)
	if _, errOut, code := runCLIExit(t, dir, "users", "import", conflict); code != exitRefused || !strings.Contains(errOut, `line 2: user "imp2" already has a different second factor`) {
		t.Fatalf("conflicting import: exit %d\n%s", code, errOut)
	}

	// The sidecar on the same state logs imported users in with codes their
	// old authenticator makes: oathtool for SHA256, 8 digits, 60 s.
	app := newLoginApp(t)
	s := startSidecarIn(t, dir, nil, "--upstream", app.URL)
	c, _ := gen.NewClientWithResponses(s.main)
	e := &loginEnv{s: s, app: app, c: c}
	importedUsersLogIn(t, e, b1, s3, strings.Fields(strings.Split(string(codes), "\n")[1])[1])
	noSecret(s.logs.String())

	// Leaving: export writes what import reads back, only with the flag.
	exported := filepath.Join(dir, "export.txt")
	if _, _, code := runCLIExit(t, dir, "users", "export", "--out", exported); code != exitUsage {
		t.Fatalf("export without the explicit flag: exit %d, want %d", code, exitUsage)
	}
	out, errOut, code = runCLIExit(t, dir, "users", "export", "--out", exported, "--i-understand-this-writes-secrets")
	noSecret(out + errOut)
	if code != 0 || !strings.Contains(out, "exported 3 users") {
		t.Fatalf("export: exit %d\n%s%s", code, out, errOut)
	}
	if st, _ := os.Stat(exported); st.Mode().Perm() != 0o600 {
		t.Fatalf("export file mode %v", st.Mode())
	}
	f, _ := os.Open(exported)
	back, bad, _ := totp.ParseImport(f, totp.DefaultParams(), "totpgate")
	f.Close()
	if len(bad) > 0 || len(back) != 3 || back[0].UserID != "imp1" || totp.EncodeSecret(back[0].Secret) != b1 ||
		back[0].Params.Algorithm != "SHA256" || back[0].Params.Digits != 8 || back[0].Params.Period != 60 || totp.EncodeSecret(back[1].Secret) != b2 {
		t.Fatalf("the export does not read back: %v %+v", bad, back)
	}
}

// importedUsersLogIn checks what an import of imp1 (otpauth URI, SHA256,
// 8 digits, 60 s, base32 secret b1), imp2 (recovery code given) and imp3
// (a migration export of secret s3) turned on: each logs in with what
// their old authenticator makes (oathtool for imp1) or the recovery code,
// and imp2 not without a code.
func importedUsersLogIn(t *testing.T, e *loginEnv, b1 string, s3 []byte, recovery string) {
	t.Helper()
	oath, err := exec.Command("oathtool", "--totp=sha256", "-d", "8", "-s", "60", "-b", b1).Output()
	if err != nil {
		t.Fatal(err)
	}
	if res, body := e.login(t, "/login", `{"user":"imp1","password":"pw"}`, http.Header{"X-Totp-Code": {strings.TrimSpace(string(oath))}}); res.StatusCode != 200 {
		t.Fatalf("imported SHA256/8/60 user with oathtool's code: %d %s", res.StatusCode, body)
	}
	p := totp.DefaultParams()
	if res, body := e.login(t, "/login", `{"user":"imp3","password":"pw"}`, http.Header{"X-Totp-Code": {totp.Code(s3, p.Step(time.Now()), p)}}); res.StatusCode != 200 {
		t.Fatalf("user from a migration export: %d %s", res.StatusCode, body)
	}
	if res, body := e.login(t, "/login", `{"user":"imp2","password":"pw"}`, http.Header{"X-Totp-Code": {recovery}}); res.StatusCode != 200 {
		t.Fatalf("imported user with a recovery code: %d %s", res.StatusCode, body)
	}
	if res, _ := e.login(t, "/login", `{"user":"imp2","password":"pw"}`, nil); res.StatusCode != 401 {
		t.Fatalf("imported user without a code: %d, want 401", res.StatusCode)
	}
}
