package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/totpgate/totpgate/api"
	"github.com/totpgate/totpgate/internal/testenv"
	"github.com/totpgate/totpgate/totp"
)

// adminCall is one call to the admin API with the admin token.
type adminCall struct {
	status int
	header http.Header
	body   []byte
}

// importAnswer is an import report or an import problem, as JSON.
type importAnswer struct {
	Code                         string
	DryRun                       bool `json:"dry_run"`
	Imported, Unchanged, Skipped int
	Lines                        []struct {
		Line          int
		UserID        string `json:"user_id"`
		Outcome       string
		Reason        string
		Detail        string
		RecoveryCodes []string `json:"recovery_codes"`
	}
	Errors []struct{ Field string }
}

func (c adminCall) decode(t *testing.T) importAnswer {
	t.Helper()
	var a importAnswer
	if err := json.Unmarshal(c.body, &a); err != nil {
		t.Fatalf("answer %d is not JSON: %v\n%s", c.status, err, c.body)
	}
	return a
}

func callAdmin(t *testing.T, s *sidecar, path, contentType string, body []byte) adminCall {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.admin+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", contentType)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return adminCall{status: res.StatusCode, header: res.Header, body: b}
}

func jsonBytes(v any) []byte { b, _ := json.Marshal(v); return b }

// importFile holds imp1 (otpauth URI of issuer Shop, SHA256, 8 digits,
// 60 s; secret b1), imp2 (CSV, the secret in lower case) and imp3 (an
// authenticator's migration export of secret s3), as importedUsersLogIn
// expects them.
func importFile(b1, b2 string, s3 []byte) string {
	return strings.Join([]string{
		"# users of the old app",
		"otpauth://totp/Shop:imp1?secret=" + b1 + "&issuer=Shop&algorithm=SHA256&digits=8&period=60",
		"imp2," + strings.ToLower(b2),
		migrationPayload("imp3", s3, false, false),
		"",
	}, "\n")
}

// recoveryCodes are the codes each imported user got, ten each.
func (a importAnswer) recoveryCodes(t *testing.T) map[string][]string {
	t.Helper()
	codes := map[string][]string{}
	for _, l := range a.Lines {
		if l.Outcome == "imported" {
			codes[l.UserID] = l.RecoveryCodes
		}
	}
	if len(codes) != 3 || len(codes["imp2"]) != 10 {
		t.Fatalf("recovery codes per imported user: %v", codes)
	}
	return codes
}

func randomSecret() ([]byte, string) {
	b := make([]byte, 20)
	rand.Read(b)
	return b, totp.EncodeSecret(b)
}

// POST /admin/secrets/import and /admin/secrets/export on the real binary:
// each format, per-user parameters kept (oathtool's SHA256/8/60 codes log
// the user in), bad lines refused with their numbers and reasons and
// nothing written, dry runs and misspelt options write nothing, reruns are
// unchanged, recovery codes come once, the export needs its
// acknowledgement and reads back, and no secret reaches the log.
func TestAdminImportExport(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("oathtool"); err != nil {
		t.Fatal("oathtool missing: `make test-deps` installs it")
	}
	e := newLoginEnv(t, "TOTPGATE_ADMIN_TOKEN="+adminToken)
	s := e.s
	_, b1 := randomSecret()
	_, b2 := randomSecret()
	s3, b3 := randomSecret()
	_, b4 := randomSecret()
	good := importFile(b1, b2, s3) + "otpauth://totp/GitHub:imp1?secret=" + b4 + "&issuer=GitHub\n"
	secrets := []string{b1, b2, strings.ToLower(b2), b3, b4, "JBSWY3DPEHPK3PXP"}
	noSecret := func(what string, b []byte) {
		t.Helper()
		for _, sec := range secrets {
			if bytes.Contains(b, []byte(sec)) {
				t.Fatalf("%s holds a secret:\n%s", what, b)
			}
		}
	}
	userStatus := func(user string) int {
		t.Helper()
		code, _ := e.admin(t, http.MethodGet, "/admin/users/"+user, "")
		return code
	}

	// Refused lines: numbered, with a reason code, and nothing written.
	bad := callAdmin(t, s, "/admin/secrets/import", "text/plain",
		[]byte("imp4,"+b1+"\nweak,JBSWY3DPEHPK3PXP\nthis is not a line\notpauth://hotp/x?secret="+b2+"\n"))
	noSecret("refusal", bad.body)
	got := bad.decode(t)
	var refused []string
	for _, l := range got.Lines {
		refused = append(refused, fmt.Sprintf("%d %s %s %s", l.Line, l.Outcome, l.Reason, l.UserID))
	}
	if want := []string{"2 refused weak_secret weak", "3 refused malformed ", "4 refused unsupported "}; bad.status != 422 || got.Code != "import_refused" || !slices.Equal(refused, want) {
		t.Fatalf("bad file: %d %q %q, want 422 import_refused %q\n%s", bad.status, got.Code, refused, want, bad.body)
	}
	if userStatus("imp4") != 404 {
		t.Fatal("a refused file imported its good line")
	}

	// A dry run (JSON body) checks everything and writes nothing.
	dry := callAdmin(t, s, "/admin/secrets/import", "application/json", jsonBytes(map[string]any{"data": good, "dry_run": true, "issuer": "Shop", "recovery_codes": true}))
	noSecret("dry run", dry.body)
	got = dry.decode(t)
	if dry.status != 200 || !got.DryRun || got.Imported != 3 || got.Skipped != 1 || len(got.Lines) != 4 ||
		got.Lines[0].Outcome != "would_import" || got.Lines[0].Line != 2 || got.Lines[3].Outcome != "skipped" || got.Lines[3].Reason != "other_issuer" || got.Lines[0].RecoveryCodes != nil {
		t.Fatalf("dry run: %d\n%s", dry.status, dry.body)
	}
	// A misspelt option is refused, not ignored (dry-run=true must not
	// import for real), and so is a query parameter beside a JSON body.
	typo := callAdmin(t, s, "/admin/secrets/import?dry-run=true&issuer=Shop", "text/plain", []byte(good))
	if got := typo.decode(t); typo.status != 400 || got.Code != "validation_failed" || len(got.Errors) != 1 || got.Errors[0].Field != "query.dry-run" {
		t.Fatalf("misspelt dry_run: %d\n%s", typo.status, typo.body)
	}
	mixed := callAdmin(t, s, "/admin/secrets/import?dry_run=true", "application/json", jsonBytes(map[string]any{"data": good}))
	if got := mixed.decode(t); mixed.status != 400 || got.Errors[0].Field != "query.dry_run" {
		t.Fatalf("query beside a JSON body: %d\n%s", mixed.status, mixed.body)
	}
	if unknown := callAdmin(t, s, "/admin/secrets/import", "application/json", jsonBytes(map[string]any{"data": good, "dryrun": true})); unknown.status != 400 {
		t.Fatalf("misspelt JSON option: %d\n%s", unknown.status, unknown.body)
	}
	if userStatus("imp1") != 404 {
		t.Fatal("a dry run or a refused option wrote imp1")
	}

	// The import (text/plain, options in the query), with recovery codes.
	imp := callAdmin(t, s, "/admin/secrets/import?issuer=Shop&recovery_codes=true", "text/plain", []byte(good))
	noSecret("import answer", imp.body)
	got = imp.decode(t)
	if imp.status != 200 || got.DryRun || got.Imported != 3 || got.Unchanged != 0 || imp.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("import: %d %v\n%s", imp.status, imp.header, imp.body)
	}
	codes := got.recoveryCodes(t)
	rerun := callAdmin(t, s, "/admin/secrets/import?issuer=Shop&recovery_codes=true", "text/plain; charset=utf-8", []byte(good))
	if got := rerun.decode(t); rerun.status != 200 || got.Imported != 0 || got.Unchanged != 3 || got.Lines[0].RecoveryCodes != nil {
		t.Fatalf("rerun: %d\n%s", rerun.status, rerun.body)
	}
	// Another secret for an imported user refuses the whole file.
	_, other := randomSecret()
	conflict := callAdmin(t, s, "/admin/secrets/import", "text/plain", []byte("imp5,"+b4+"\nimp2,"+other+"\n"))
	if got := conflict.decode(t); conflict.status != 422 || len(got.Lines) != 1 || got.Lines[0].Line != 2 || got.Lines[0].Reason != "conflict" || got.Lines[0].UserID != "imp2" {
		t.Fatalf("conflicting import: %d\n%s", conflict.status, conflict.body)
	}
	if userStatus("imp5") != 404 {
		t.Fatal("a refused import wrote imp5")
	}

	importedUsersLogIn(t, e, b1, s3, codes["imp2"][0])

	// The export only with its acknowledgement; what it answers reads back.
	for name, body := range map[string]string{
		"no body field": `{}`, "false": `{"i_understand_this_returns_secrets": false}`,
		"a string": `{"i_understand_this_returns_secrets": "yes"}`, "unknown field": `{"i_understand_this_returns_secrets": true, "all": true}`,
	} {
		if c := callAdmin(t, s, "/admin/secrets/export", "application/json", []byte(body)); c.status != 400 || c.decode(t).Code != "validation_failed" {
			t.Fatalf("export, %s: %d\n%s", name, c.status, c.body)
		}
	}
	export := func(format string) adminCall {
		t.Helper()
		return callAdmin(t, s, "/admin/secrets/export", "application/json", jsonBytes(map[string]any{"i_understand_this_returns_secrets": true, "format": format}))
	}
	readBack := func(c adminCall, want int) map[string]string {
		t.Helper()
		if c.status != 200 || c.header.Get("Cache-Control") != "no-store" || !strings.HasPrefix(c.header.Get("Content-Type"), "text/plain") {
			t.Fatalf("export: %d %v\n%s", c.status, c.header, c.body)
		}
		back, bad, _ := totp.ParseImport(bytes.NewReader(c.body), totp.DefaultParams(), "totpgate")
		out := map[string]string{}
		for _, r := range back {
			out[r.UserID] = totp.EncodeSecret(r.Secret) + " " + r.Params.Algorithm
		}
		if len(bad) > 0 || len(back) != want || out["imp1"] != b1+" SHA256" || out["imp2"] != b2+" SHA1" || out["imp3"] != b3+" SHA1" {
			t.Fatalf("the export does not read back: %v %v\n%s", bad, out, c.body)
		}
		return out
	}
	readBack(export("otpauth"), 3)
	// A user id an otpauth label cannot hold refuses that format whole;
	// CSV holds it.
	if c := callAdmin(t, s, "/admin/secrets/import", "text/plain", []byte(`"tenant:42",`+other+"\n")); c.status != 200 {
		t.Fatalf("import tenant:42: %d\n%s", c.status, c.body)
	}
	if c := export("otpauth"); c.status != 422 || c.decode(t).Code != "export_unrepresentable" || !strings.Contains(string(c.body), `tenant:42`) {
		t.Fatalf("otpauth export of tenant:42: %d\n%s", c.status, c.body)
	}
	if out := readBack(export("csv"), 4); out["tenant:42"] != other+" SHA1" {
		t.Fatalf("csv export of tenant:42: %v", out)
	}

	// Bounded: a body over the admin listener's bound is refused before
	// anything reads it.
	big := callAdmin(t, s, "/admin/secrets/import", "text/plain", bytes.Repeat([]byte("#\n"), api.MaxAdminBodyBytes/2+1))
	if got := big.decode(t); big.status != 413 || got.Code != "bad_request" {
		t.Fatalf("oversized import: %d\n%s", big.status, big.body)
	}
	req, _ := http.NewRequest(http.MethodPost, s.admin+"/admin/secrets/export", strings.NewReader(`{"i_understand_this_returns_secrets": true}`))
	req.Header.Set("Content-Type", "application/json")
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != 401 {
		t.Fatalf("export without the admin token: %v %v", res, err)
	} else {
		res.Body.Close()
	}

	// Audited, and nothing secret in the log.
	logs := s.logs.String()
	noSecret("the sidecar's log", []byte(logs))
	for _, want := range []string{`"event":"admin_import","user_id":"imp1"`, `"event":"admin_import","user_id":"","client_ip":"127.0.0.1","route":"AdminImportUsers","outcome":"refused"`,
		`"event":"admin_export","user_id":"","client_ip":"127.0.0.1","route":"AdminExportUsers","outcome":"csv 4"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s", want)
		}
	}
	if n := strings.Count(logs, `"event":"admin_import","user_id":"imp`); n != 3 {
		t.Errorf("%d admin_import events for users, want 3 (the dry run and the rerun changed nothing)", n)
	}
}

// The admin import on PostgreSQL and Vault transit (the store and keyring
// of a cluster): imported, rerun unchanged, logged in with the old
// authenticators' codes, exported back, no secret in the log.
func TestAdminImportOnPostgresAndVault(t *testing.T) {
	t.Parallel()
	v := testenv.StartVault(t)
	e := newLoginEnv(t, vaultEnv(v, "TOTPGATE_STORE_DRIVER=postgres", "TOTPGATE_STORE_DSN="+testenv.Postgres(t))...)
	_, b1 := randomSecret()
	_, b2 := randomSecret()
	s3, b3 := randomSecret()
	file := []byte(importFile(b1, b2, s3))
	imp := callAdmin(t, e.s, "/admin/secrets/import?issuer=Shop&recovery_codes=true", "text/plain", file)
	got := imp.decode(t)
	if imp.status != 200 || got.Imported != 3 {
		t.Fatalf("import: %d\n%s", imp.status, imp.body)
	}
	codes := got.recoveryCodes(t)
	if rerun := callAdmin(t, e.s, "/admin/secrets/import?issuer=Shop", "text/plain", file); rerun.status != 200 || rerun.decode(t).Unchanged != 3 {
		t.Fatalf("rerun: %d\n%s", rerun.status, rerun.body)
	}
	importedUsersLogIn(t, e, b1, s3, codes["imp2"][0])
	c := callAdmin(t, e.s, "/admin/secrets/export", "application/json", []byte(`{"i_understand_this_returns_secrets": true, "format": "csv"}`))
	back, bad, _ := totp.ParseImport(bytes.NewReader(c.body), totp.DefaultParams(), "*")
	if c.status != 200 || len(bad) > 0 || len(back) != 3 || totp.EncodeSecret(back[0].Secret) != b1 || back[0].Params.Period != 60 ||
		totp.EncodeSecret(back[1].Secret) != b2 || totp.EncodeSecret(back[2].Secret) != b3 {
		t.Fatalf("export: %d %v\n%s", c.status, bad, c.body)
	}
	logs := e.s.logs.String()
	for _, sec := range []string{b1, b2, strings.ToLower(b2), b3} {
		if strings.Contains(logs, sec) {
			t.Fatalf("the log holds a secret:\n%s", logs)
		}
	}
}

// `totpgate keys rewrap --via` hands the job to the running sidecar (on
// SQLite, its one writer) and follows it to the end; a wrong token is
// refused and says so.
func TestRewrapViaTheSidecar(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e := newLoginEnvIn(t, dir, "TOTPGATE_ADMIN_TOKEN="+adminToken)
	code, _ := e.enroll(t, "ann")
	for _, u := range []string{"ben", "cid"} {
		e.enroll(t, u)
	}
	if status, body := e.admin(t, "POST", "/admin/keys/rotate", ""); status != 200 {
		t.Fatalf("rotate: %d %v", status, body)
	}
	out, errOut, err := runCLI(t, dir, []string{"TOTPGATE_ADMIN_TOKEN=" + adminToken},
		"keys", "rewrap", "--via", e.s.admin, "--batch-size", "2", "--min-decryption-version")
	if err != nil {
		t.Fatalf("keys rewrap --via: %v\n%s\n%s", err, out, errOut)
	}
	// Four: the three users' secrets and the recovery-code key.
	if !regexp.MustCompile(`rewrap \S+ succeeded: 4 of 4 secrets moved to v2, 0 failed`).MatchString(out) || !strings.Contains(out, "minimum decryption version raised to 2") {
		t.Fatalf("keys rewrap --via printed:\n%s", out)
	}
	status, keys := e.admin(t, "GET", "/admin/keys", "")
	versions, _ := keys["secrets_by_version"].([]any)
	if status != 200 || len(versions) != 1 || keys["min_decryption_version"] != 2.0 {
		t.Fatalf("GET /admin/keys after the rewrap: %d %v", status, keys)
	}
	if v, _ := versions[0].(map[string]any); v["version"] != 2.0 || v["secrets"] != 4.0 {
		t.Fatalf("secrets per version after the rewrap: %v", versions)
	}
	// A login's code is checked against the secret as rewrapped.
	if res, body := e.login(t, "/login", `{"user":"ann","password":"pw"}`, http.Header{"X-Totp-Code": {code(0)}}); res.StatusCode != 200 {
		t.Fatalf("login after the rewrap: %d %s", res.StatusCode, body)
	}

	_, errOut, err = runCLI(t, dir, []string{"TOTPGATE_ADMIN_TOKEN=wrong-token-0123456789"}, "keys", "rewrap", "--via", e.s.admin)
	if err == nil || !strings.Contains(errOut, "401") {
		t.Fatalf("keys rewrap --via with a wrong token: err %v\n%s", err, errOut)
	}
	if strings.Contains(errOut, "wrong-token") || strings.Contains(errOut, adminToken) {
		t.Fatalf("the token was printed:\n%s", errOut)
	}
}
