package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/totpgate/totpgate/internal/testenv"
	"github.com/totpgate/totpgate/keyring"
	"github.com/totpgate/totpgate/mfa"
	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/sqlite"
	"github.com/totpgate/totpgate/totp"
	"github.com/totpgate/totpgate/vaultkeys"
)

const adminToken = "an-admin-token-of-some-length"

// vaultEnv is the sidecar environment for Vault as the keyring, with the
// API rate limit lifted (every test client shares 127.0.0.1).
func vaultEnv(v *testenv.Vault, extra ...string) []string {
	return append([]string{
		"TOTPGATE_KEYRING_BACKEND=vault",
		"TOTPGATE_KEYRING_VAULT_ADDRESS=" + v.Addr,
		"TOTPGATE_KEYRING_VAULT_AUTH_TOKEN=" + testenv.RootToken,
		"TOTPGATE_KEYRING_VAULT_CREATE_KEY=true",
		"TOTPGATE_ADMIN_TOKEN=" + adminToken,
		"TOTPGATE_API_RATE_PER_SECOND=100000",
		"TOTPGATE_API_RATE_BURST=100000",
	}, extra...)
}

// storedCiphertexts reads every ciphertext the sidecar stored, straight
// from its database file.
func storedCiphertexts(t *testing.T, dir string) map[string]string {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "totpgate.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := map[string]string{}
	rows, err := db.Query(`SELECT id, ciphertext FROM users UNION ALL SELECT 'setting:' || key, CAST(value AS TEXT) FROM settings`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, ct string
		if err := rows.Scan(&id, &ct); err != nil {
			t.Fatal(err)
		}
		out[id] = ct
	}
	return out
}

func TestVaultKeyringBindsSecretsToUsers(t *testing.T) {
	t.Parallel()
	v := testenv.StartVault(t)
	dir := t.TempDir()
	e := newLoginEnvIn(t, dir, vaultEnv(v)...)
	aliceCode, _ := e.enroll(t, "alice")
	bobCode, _ := e.enroll(t, "bob")
	res, body := e.login(t, "/login", `{"user":"alice","password":"pw"}`, http.Header{"X-Totp-Code": {aliceCode(0)}})
	if res.StatusCode != 200 || !granted(res, body) {
		t.Fatalf("login with Vault as keyring: %d %s", res.StatusCode, body)
	}
	cts := storedCiphertexts(t, dir)
	if len(cts) != 3 {
		t.Fatalf("stored %d secrets, want alice, bob and the recovery key", len(cts))
	}
	for id, ct := range cts {
		if !strings.HasPrefix(ct, "vault:v1:") {
			t.Fatalf("%s is stored as %.12q..., want a vault:v1: ciphertext", id, ct)
		}
	}

	// Copy alice's ciphertext into bob's row: bob's login must not pass
	// with a code for alice's secret, nor with his own.
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "totpgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`PRAGMA busy_timeout = 5000; UPDATE users SET ciphertext = ? WHERE id = 'bob'`, cts["alice"]); err != nil {
		t.Fatal(err)
	}
	for name, code := range map[string]string{"alice's code": aliceCode(1), "bob's code": bobCode(1)} {
		res, body := e.login(t, "/login", `{"user":"bob","password":"pw"}`, http.Header{"X-Totp-Code": {code}})
		if granted(res, body) || res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, `"mfa_unavailable"`) {
			t.Fatalf("bob with a moved ciphertext and %s: %d %s", name, res.StatusCode, body)
		}
	}
}

func TestVaultUnavailableFailsClosedAndRecovers(t *testing.T) {
	t.Parallel()
	v := testenv.StartVault(t)
	e := newLoginEnvIn(t, t.TempDir(), vaultEnv(v, "TOTPGATE_KEYRING_VAULT_TIMEOUT=1s")...)
	// One user per phase: each phase needs a code no earlier login spent.
	codes := map[string]func(int64) string{}
	for _, u := range []string{"alice", "bob", "carol"} {
		codes[u], _ = e.enroll(t, u)
	}
	login := func(user string) (*http.Response, string) {
		return e.login(t, "/login", `{"user":"`+user+`","password":"pw"}`, http.Header{"X-Totp-Code": {codes[user](0)}})
	}
	// loginOK retries until user gets in: refusals while Vault comes back
	// are not counted as failures, so the same code works once it is back.
	loginOK := func(t *testing.T, user string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			res, body := login(user)
			if res.StatusCode == 200 && granted(res, body) {
				return
			}
			if res.StatusCode != http.StatusServiceUnavailable || time.Now().After(deadline) {
				t.Fatalf("login of %s did not recover: %d %s", user, res.StatusCode, body)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	loginOK(t, "alice")
	outage := func(t *testing.T, user string, down, up func(testing.TB)) {
		down(t)
		start := time.Now()
		res, body := login(user)
		took := time.Since(start)
		// More refusals than the lockout allows: an outage must not be
		// charged to the user as failed attempts.
		for range 6 {
			if r, b := login(user); r.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("login while Vault is down: %d %s", r.StatusCode, b)
			}
		}
		if status, u := e.admin(t, "GET", "/admin/users/"+user, ""); status != 200 || u["failures"] != float64(0) {
			t.Fatalf("after refusals during the outage: %d %v", status, u)
		}
		if res.StatusCode != http.StatusServiceUnavailable || granted(res, body) || !strings.Contains(body, `"mfa_unavailable"`) ||
			res.Header.Get("Content-Type") != "application/problem+json" || res.Header.Get("Retry-After") == "" {
			t.Fatalf("login while Vault is down: %d %v %s", res.StatusCode, res.Header, body)
		}
		// 1 s timeout: generous slack for a loaded machine, but far below
		// Vault's own 60 s default a missing timeout would show.
		if took > 5*time.Second {
			t.Fatalf("refusal took %v with a 1s timeout", took)
		}
		// Pass-through and users without MFA are unaffected.
		res, body = e.login(t, "/login", `{"user":"nomfa","password":"pw"}`, nil)
		if res.StatusCode != 200 || !granted(res, body) {
			t.Fatalf("login without MFA while Vault is down: %d %s", res.StatusCode, body)
		}
		page, err := http.Get(e.s.main + "/some/page")
		if err != nil || page.StatusCode != 200 {
			t.Fatalf("pass-through while Vault is down: %v %v", err, page)
		}
		page.Body.Close()
		ready, err := http.Get(e.s.admin + "/readyz")
		if err != nil || ready.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("readyz while Vault is down: %v %v", err, ready)
		}
		ready.Body.Close()
		up(t)
		loginOK(t, user)
	}
	t.Run("sealed", func(t *testing.T) { outage(t, "bob", v.Seal, v.Unseal) })
	t.Run("not answering", func(t *testing.T) { outage(t, "carol", v.Freeze, v.Thaw) })
}

// Rotation under load: users log in continuously while the key is rotated
// twice, every secret is rewrapped after each rotation, and the minimum
// decryption version is raised. No login that should pass may fail.
func TestVaultRotationUnderLoginLoad(t *testing.T) {
	t.Parallel()
	v := testenv.StartVault(t)
	dir := t.TempDir()
	e := newLoginEnvIn(t, dir, vaultEnv(v)...)
	const users = 240
	type user struct {
		name string
		code func(int64) string
		last int64 // last step used, so every login offers a fresh code
	}
	all := make([]*user, users)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < users; i += 8 {
				name := fmt.Sprintf("load-%03d", i)
				code, _ := e.enroll(t, name)
				all[i] = &user{name: name, code: code}
			}
		})
	}
	wg.Wait()
	for i, u := range all {
		if u == nil {
			t.Fatalf("user %d was not enrolled", i)
		}
	}

	var passed, failed, duringRewrap atomic.Int64
	var rewrapping atomic.Bool
	var failures sync.Map
	stop := make(chan struct{})
	p := totp.DefaultParams()
	for w := range 4 {
		wg.Go(func() {
			for i := w; ; i = (i + 4) % users {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond): // ~200 logins/s over 4 workers
				}
				u := all[i]
				// Each step allows a user two fresh codes (now and now+1,
				// inside the skew), so the load can run through the test.
				step := p.Step(time.Now())
				offset := int64(0)
				if u.last >= step {
					offset = 1
				}
				if u.last >= step+offset {
					continue
				}
				u.last = step + offset
				res, body, err := tryLogin(e.s.main, u.name, u.code(offset))
				if err != nil {
					failed.Add(1)
					failures.Store(u.name, err.Error())
					continue
				}
				if res.StatusCode == 200 && granted(res, body) {
					passed.Add(1)
					if rewrapping.Load() {
						duringRewrap.Add(1)
					}
					continue
				}
				// A step boundary between computing the offset and the
				// check can turn offset 1 into a code two steps ahead; only
				// count refusals of codes that were certainly current.
				if p.Step(time.Now()) == step {
					failed.Add(1)
					failures.Store(u.name, fmt.Sprintf("%d %s", res.StatusCode, body))
				}
			}
		})
	}

	rewrap := func() {
		t.Helper()
		rewrapping.Store(true)
		defer rewrapping.Store(false)
		status, job := e.admin(t, "POST", "/admin/keys/rewrap", `{"batch_size":20,"rate_per_second":200}`)
		if status != http.StatusAccepted {
			t.Fatalf("start rewrap: %d %v", status, job)
		}
		// A second start while it runs is refused.
		if status, p := e.admin(t, "POST", "/admin/keys/rewrap", ""); status != http.StatusConflict || p["code"] != "rewrap_running" {
			t.Errorf("second rewrap while one runs: %d %v", status, p)
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			status, j := e.admin(t, "GET", "/admin/keys/rewrap", "")
			if status == 200 && j["state"] == "succeeded" && j["id"] == job["id"] {
				if j["done"] != float64(users+1) || j["failed"] != float64(0) {
					t.Fatalf("rewrap finished with %v", j)
				}
				return
			}
			if status != 200 || j["state"] == "failed" || time.Now().After(deadline) {
				t.Fatalf("rewrap: %d %v", status, j)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	time.Sleep(500 * time.Millisecond)
	for want := 2; want <= 3; want++ {
		status, st := e.admin(t, "POST", "/admin/keys/rotate", "")
		if status != 200 || st["latest_version"] != float64(want) {
			t.Fatalf("rotate: %d %v", status, st)
		}
		if status, p := e.admin(t, "POST", "/admin/keys/min-decryption-version", fmt.Sprintf(`{"version":%d}`, want)); status != http.StatusConflict || p["code"] != "old_versions_remain" {
			t.Fatalf("raising the minimum before the rewrap: %d %v", status, p)
		}
		rewrap()
	}
	status, st := e.admin(t, "POST", "/admin/keys/min-decryption-version", `{"version":3}`)
	if status != 200 || st["min_decryption_version"] != float64(3) {
		t.Fatalf("raise min decryption version: %d %v", status, st)
	}
	time.Sleep(time.Second) // logins go on under the raised minimum
	close(stop)
	wg.Wait()

	failures.Range(func(k, v any) bool { t.Errorf("login of %s refused: %s", k, v); return true })
	if failed.Load() != 0 {
		t.Fatalf("%d of %d logins that should have passed failed", failed.Load(), failed.Load()+passed.Load())
	}
	if passed.Load() < 100 || duringRewrap.Load() == 0 {
		t.Fatalf("load too thin to prove anything: %d logins, %d during rewraps", passed.Load(), duringRewrap.Load())
	}
	t.Logf("%d logins passed, %d of them while a rewrap ran", passed.Load(), duringRewrap.Load())
	status, st = e.admin(t, "GET", "/admin/keys", "")
	byVersion, _ := st["secrets_by_version"].([]any)
	if status != 200 || st["secrets_total"] != float64(users+1) || len(byVersion) != 1 ||
		byVersion[0].(map[string]any)["version"] != float64(3) {
		t.Fatalf("status after rotation: %d %v", status, st)
	}
	for id, ct := range storedCiphertexts(t, dir) {
		if !strings.HasPrefix(ct, "vault:v3:") {
			t.Fatalf("%s still on %.9s", id, ct)
		}
	}
}

// tryLogin is loginEnv.login for goroutines other than the test's: it
// returns errors instead of failing the test.
func tryLogin(base, user, code string) (*http.Response, string, error) {
	req, _ := http.NewRequest("POST", base+"/login", strings.NewReader(`{"user":"`+user+`","password":"pw"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Totp-Code", code)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res, string(b), err
}

// runCLI runs `totpgate args...` in dir and returns its output.
func runCLI(t *testing.T, dir string, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := cliCommand(dir, env, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func cliCommand(dir string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0])
	cmd.Dir = dir
	encoded, _ := json.Marshal(args)
	cmd.Env = append([]string{"TOTPGATE_TEST_AS_MAIN=1", "TOTPGATE_TEST_ARGS=" + string(encoded), "HOME=" + dir}, env...)
	return cmd
}

// openSidecarStore opens the SQLite store a sidecar in dir uses.
func openSidecarStore(t *testing.T, dir string) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "totpgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// seedUsers enrolls n users straight through the mfa service on the
// sidecar's store and keyring, and returns each user's TOTP secret.
func seedUsers(t *testing.T, dir string, keys keyring.Keyring, n int) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	st := openSidecarStore(t, dir)
	defer st.Close()
	// One fixed instant for the whole seeding: it takes long enough under
	// load to cross TOTP steps, which would invalidate a precomputed code.
	seededAt := time.Now()
	svc, err := mfa.New(ctx, st, keys, mfa.DefaultConfig(), func() time.Time { return seededAt })
	if err != nil {
		t.Fatal(err)
	}
	secrets := make(map[string][]byte, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, n)
	p := totp.DefaultParams()
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				user := fmt.Sprintf("seed-%05d", i)
				en, err := svc.StartEnrollment(ctx, user, user)
				if err != nil {
					errs <- err
					return
				}
				secret, _ := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(en.Secret)
				if _, err := svc.ConfirmEnrollment(ctx, user, totp.Code(secret, p.Step(seededAt)-1, p)); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				secrets[user] = secret
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return secrets
}

func vaultKeys(t *testing.T, v *testenv.Vault) *vaultkeys.Keys { t.Helper(); return v.Keys(t) }

// checkSecrets decrypts every stored secret and compares it with what was
// enrolled: a lost row or a double-wrapped ciphertext fails here.
func checkSecrets(t *testing.T, dir string, keys keyring.Keyring, want map[string][]byte, prefix string) {
	t.Helper()
	stored := storedCiphertexts(t, dir)
	if len(stored) != len(want)+1 {
		t.Fatalf("%d stored secrets, want %d users and the recovery key", len(stored), len(want))
	}
	for user, secret := range want {
		ct, ok := stored[user]
		if !ok {
			t.Fatalf("%s lost", user)
		}
		if !strings.HasPrefix(ct, prefix) {
			t.Fatalf("%s on %.9s, want %s", user, ct, prefix)
		}
		pt, err := keys.Decrypt(context.Background(), store.BindingUser.BindTo(user), ct)
		if err != nil || !bytes.Equal(pt, secret) {
			t.Fatalf("%s decrypts to another secret or fails: %v", user, err)
		}
	}
	if pep := stored["setting:"+mfa.PepperSetting]; !strings.HasPrefix(pep, prefix) {
		t.Fatalf("recovery key on %.9s, want %s", pep, prefix)
	}
}

func TestRewrapCommandSurvivesSIGKILL(t *testing.T) {
	t.Parallel()
	v := testenv.StartVault(t)
	dir := t.TempDir()
	keys := vaultKeys(t, v)
	const users = 1000
	secrets := seedUsers(t, dir, keys, users)
	env := vaultEnv(v)

	if out, errOut, err := runCLI(t, dir, env, "keys", "rotate"); err != nil || !strings.Contains(out, "new secrets now use vault v2") {
		t.Fatalf("keys rotate: %v\n%s%s", err, out, errOut)
	}
	if out, _, err := runCLI(t, dir, env, "keys", "min-decryption-version", "2"); err == nil {
		t.Fatalf("raising the minimum with every secret on v1 succeeded:\n%s", out)
	}

	// Kill the rewrap halfway through.
	cmd := cliCommand(dir, env, "keys", "rewrap", "--batch-size", "25", "--rate", "400", "--lease", "10s")
	var progress bytes.Buffer
	cmd.Stderr = &progress
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "totpgate.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var moved int
		if err := db.QueryRow(`SELECT COUNT(*) FROM users WHERE key_version = 2`).Scan(&moved); err != nil {
			t.Fatal(err)
		}
		if moved >= users/3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rewrap made no progress:\n%s", progress.String())
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	var moved int
	if err := db.QueryRow(`SELECT COUNT(*) FROM users WHERE key_version = 2`).Scan(&moved); err != nil {
		t.Fatal(err)
	}
	if moved >= users {
		t.Fatalf("the rewrap finished before it was killed (%d moved); the test proves nothing", moved)
	}
	var state []byte
	if err := db.QueryRow(`SELECT state FROM jobs WHERE name = 'rewrap'`).Scan(&state); err != nil {
		t.Fatal(err)
	}
	var killed struct{ ID, State string }
	if err := json.Unmarshal(state, &killed); err != nil || killed.State != "running" {
		t.Fatalf("job after SIGKILL: %s, %v", state, err)
	}
	t.Logf("killed after %d of %d secrets", moved, users)

	// The dead job's lease still runs: a new rewrap says so and stops.
	if out, errOut, err := runCLI(t, dir, env, "keys", "rewrap"); err == nil || !strings.Contains(errOut, "already running") || !strings.Contains(errOut, killed.ID) {
		t.Fatalf("rewrap while the killed job's lease runs: %v\n%s%s", err, out, errOut)
	}
	// Nothing was lost: old and new ciphertexts both decrypt to the
	// enrolled secrets (v1 is still allowed).
	checkMixed := storedCiphertexts(t, dir)
	for user, secret := range secrets {
		pt, err := keys.Decrypt(context.Background(), store.BindingUser.BindTo(user), checkMixed[user])
		if err != nil || !bytes.Equal(pt, secret) {
			t.Fatalf("%s after the kill: %v", user, err)
		}
	}

	// Wait for the dead job's lease to run out (as saved in the store).
	var leaseUntil int64
	if err := db.QueryRow(`SELECT lease_until FROM jobs WHERE name = 'rewrap'`).Scan(&leaseUntil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(time.UnixMilli(leaseUntil)) + 200*time.Millisecond)
	out, errOut, err := runCLI(t, dir, env, "keys", "rewrap", "--min-decryption-version")
	if err != nil || !strings.Contains(out, "rewrap "+killed.ID+" succeeded") || !strings.Contains(out, fmt.Sprintf("%d of %d secrets moved to vault v2, 0 failed", users+1, users+1)) ||
		!strings.Contains(out, "minimum decryption version raised to 2") {
		t.Fatalf("resumed rewrap: %v\n%s%s", err, out, errOut)
	}
	checkSecrets(t, dir, keys, secrets, "vault:v2:")
	out, _, err = runCLI(t, dir, env, "keys", "status")
	if err != nil || !strings.Contains(out, "min decryption version   2") || !strings.Contains(out, fmt.Sprintf("vault v2    %d", users+1)) {
		t.Fatalf("keys status: %v\n%s", err, out)
	}

	// A sidecar on the same state logs a seeded user in.
	e := newLoginEnvIn(t, dir, env...)
	p := totp.DefaultParams()
	res, body := e.login(t, "/login", `{"user":"seed-00007","password":"pw"}`,
		http.Header{"X-Totp-Code": {totp.Code(secrets["seed-00007"], p.Step(time.Now()), p)}})
	if res.StatusCode != 200 || !granted(res, body) {
		t.Fatalf("login after the rewrap: %d %s", res.StatusCode, body)
	}
}

// seedBareUsers stores n active users the way versions before key
// namespaces did: each secret bound to the bare user id (binding 0).
func seedBareUsers(t *testing.T, dir string, keys keyring.Keyring, n int) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	st := openSidecarStore(t, dir)
	defer st.Close()
	p := totp.DefaultParams()
	now := time.Now()
	secrets := make(map[string][]byte, n)
	for i := range n {
		user := fmt.Sprintf("bare-%05d", i)
		secret, err := totp.GenerateSecret(20)
		if err != nil {
			t.Fatal(err)
		}
		ct, err := keys.Encrypt(ctx, user, secret)
		if err != nil {
			t.Fatal(err)
		}
		_, v, _ := keyring.ParseVersion(ct)
		if err := st.StartEnrollment(ctx, store.User{ID: user, State: store.StatePending, Ciphertext: ct, KeyVersion: v, Binding: store.BindingBare,
			Params:           store.TOTPParams{Algorithm: p.Algorithm, Digits: p.Digits, Period: p.Period, Skew: p.Skew},
			PendingExpiresAt: now.Add(time.Hour), UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
		if err := st.ConfirmEnrollment(ctx, user, ct, 0, nil, now); err != nil {
			t.Fatal(err)
		}
		secrets[user] = secret
	}
	return secrets
}

// TestUpgradeMovesSecretsIntoTheUserNamespace: a database written before
// key namespaces holds secrets bound to the bare user id (on Vault, the
// bare id is the derivation context). The sidecar keeps logging those
// users in; `keys status` counts them; `keys rewrap` rebinds every one to
// "user:" + id with no key rotation, losing none, while logins go on.
func TestUpgradeMovesSecretsIntoTheUserNamespace(t *testing.T) {
	t.Parallel()
	v := testenv.StartVault(t)
	dir := t.TempDir()
	keys := vaultKeys(t, v)
	const bare = 300
	secrets := seedBareUsers(t, dir, keys, bare)
	for user, secret := range seedUsers(t, dir, keys, 20) {
		secrets[user] = secret
	}
	env := vaultEnv(v)
	e := newLoginEnvIn(t, dir, env...)
	p := totp.DefaultParams()
	login := func(user string, step int64) {
		t.Helper()
		res, body := e.login(t, "/login", `{"user":"`+user+`","password":"pw"}`,
			http.Header{"X-Totp-Code": {totp.Code(secrets[user], step, p)}})
		if res.StatusCode != 200 || !granted(res, body) {
			t.Fatalf("login of %s: %d %s", user, res.StatusCode, body)
		}
	}
	login("bare-00042", p.Step(time.Now())) // bound to the bare id, still works

	out, errOut, err := runCLI(t, dir, env, "keys", "status")
	if err != nil || !strings.Contains(out, fmt.Sprintf("unnamespaced secrets     %d", bare)) {
		t.Fatalf("keys status before: %v\n%s%s", err, out, errOut)
	}
	out, errOut, err = runCLI(t, dir, env, "keys", "rewrap", "--batch-size", "64")
	if err != nil || !strings.Contains(out, fmt.Sprintf("%d of %d secrets moved to vault v1, 0 failed", bare, bare)) {
		t.Fatalf("keys rewrap: %v\n%s%s", err, out, errOut)
	}
	checkSecrets(t, dir, keys, secrets, "vault:v1:")
	for user := range secrets {
		if _, err := keys.Decrypt(context.Background(), user, storedCiphertexts(t, dir)[user]); err == nil {
			t.Fatalf("%s still opens under the bare id after the rewrap", user)
		}
		break
	}
	out, _, err = runCLI(t, dir, env, "keys", "status")
	if err != nil || strings.Contains(out, "unnamespaced") {
		t.Fatalf("keys status after: %v\n%s", err, out)
	}
	login("bare-00042", p.Step(time.Now())+1) // the next step: the first is spent
	login("bare-00299", p.Step(time.Now()))
}

// A pod may restart while Vault is down: the sidecar still starts and
// passes the app's traffic, refuses second-factor work with 503 and is
// not ready, and picks Vault up by itself when it comes back.
func TestSidecarStartsWhileVaultIsDown(t *testing.T) {
	t.Parallel()
	v := testenv.StartVault(t)
	v.Seal(t)
	e := newLoginEnvIn(t, t.TempDir(), vaultEnv(v, "TOTPGATE_KEYRING_VAULT_TIMEOUT=1s")...)
	if !strings.Contains(e.s.logs.String(), "vault not reachable at start") {
		t.Fatal("no warning that Vault was unreachable at start")
	}
	res, body := e.login(t, "/login", `{"user":"nomfa","password":"pw"}`, nil)
	if res.StatusCode != 200 || !granted(res, body) {
		t.Fatalf("login without MFA while Vault is down: %d %s", res.StatusCode, body)
	}
	ready, err := http.Get(e.s.admin + "/readyz")
	if err != nil || ready.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readyz while Vault is down: %v %v", err, ready)
	}
	ready.Body.Close()
	en, err := e.c.StartEnrollmentWithResponse(context.Background(), session("alice"))
	if err != nil || en.StatusCode() != http.StatusServiceUnavailable {
		t.Fatalf("enrollment while Vault is down: %v %d %s", err, en.StatusCode(), en.Body)
	}
	v.Unseal(t)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		ready, err := http.Get(e.s.admin + "/readyz")
		if err == nil && ready.StatusCode == 200 {
			ready.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after Vault came back: %v %v", err, ready)
		}
	}
	code, recovery := e.enroll(t, "alice")
	if len(recovery) == 0 {
		t.Fatal("no recovery codes after a late recovery-key load")
	}
	res, body = e.login(t, "/login", `{"user":"alice","password":"pw"}`, http.Header{"X-Totp-Code": {code(0)}})
	if res.StatusCode != 200 || !granted(res, body) {
		t.Fatalf("login after Vault came back: %d %s", res.StatusCode, body)
	}
	res, body = e.login(t, "/login", `{"user":"alice","password":"pw","totp_code":"`+recovery[0]+`"}`, nil)
	if res.StatusCode != 200 || !granted(res, body) {
		t.Fatalf("recovery code after Vault came back: %d %s", res.StatusCode, body)
	}
}

// Vault's Kubernetes auth end to end: the auth plugin Vault 1.19.5 pins,
// built as an external plugin (the test Vault is a minimal build without
// it), reviews tokens with a real API server, and the real sidecar logs in
// with a token the API server issued for its service account.
func TestVaultKubernetesAuth(t *testing.T) {
	t.Parallel()
	k := testenv.StartKube(t)
	v := testenv.StartVaultWithKubernetesAuth(t, k)
	for _, sa := range []string{"totpgate", "stranger", "leaver"} {
		k.ServiceAccount(t, "apps", sa)
	}
	v.Write(t, "sys/policies/acl/totpgate", map[string]any{"policy": testenv.Policy("transit", "totpgate")})
	v.Write(t, "auth/kubernetes/role/totpgate", map[string]any{
		"bound_service_account_names":      []string{"totpgate", "leaver"},
		"bound_service_account_namespaces": []string{"apps"},
		"audience":                         "vault",
		"token_policies":                   []string{"totpgate"},
		"token_ttl":                        "10m",
	})
	token := func(sa string) string { return k.ServiceAccountToken(t, "apps", sa, "vault") }
	good := token("totpgate")
	forged := resign(t, good)

	t.Run("refused", func(t *testing.T) {
		tests := []struct{ name, jwt string }{
			{"service account the role does not bind", token("stranger")},
			{"signed by another key", forged},
			{"issued for another audience", k.ServiceAccountToken(t, "apps", "totpgate", "not-vault")},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				if status, meta := v.KubernetesLogin(t, "totpgate", tc.jwt); status != http.StatusForbidden {
					t.Fatalf("login: %d %v, want 403", status, meta)
				}
			})
		}
		if status, meta := v.KubernetesLogin(t, "totpgate", good); status != http.StatusOK || meta["service_account_name"] != "totpgate" {
			t.Fatalf("the same role refuses the sidecar's own token: %d %v", status, meta)
		}
	})

	t.Run("deleted service account", func(t *testing.T) {
		jwt := token("leaver")
		if status, _ := v.KubernetesLogin(t, "totpgate", jwt); status != http.StatusOK {
			t.Fatalf("login before the deletion: %d", status)
		}
		if status, body, err := k.Do(context.Background(), http.MethodDelete, "/api/v1/namespaces/apps/serviceaccounts/leaver", nil); err != nil || status != http.StatusOK {
			t.Fatalf("delete service account: %v %d %s", err, status, body)
		}
		// The API server caches a successful review for about 10 s, so
		// the refusal comes within that, not at once.
		deadline := time.Now().Add(60 * time.Second)
		for {
			status, _ := v.KubernetesLogin(t, "totpgate", jwt)
			if status == http.StatusForbidden {
				break
			}
			if status != http.StatusOK || time.Now().After(deadline) {
				t.Fatalf("token of a deleted service account: %d", status)
			}
			time.Sleep(250 * time.Millisecond)
		}
	})

	t.Run("sidecar", func(t *testing.T) {
		dir := t.TempDir()
		tokenFile := filepath.Join(dir, "token")
		env := []string{
			"TOTPGATE_KEYRING_BACKEND=vault",
			"TOTPGATE_KEYRING_VAULT_ADDRESS=" + v.Addr,
			"TOTPGATE_KEYRING_VAULT_AUTH_METHOD=kubernetes",
			"TOTPGATE_KEYRING_VAULT_AUTH_ROLE=totpgate",
			"TOTPGATE_KEYRING_VAULT_AUTH_SERVICE_ACCOUNT_TOKEN_FILE=" + tokenFile,
			"TOTPGATE_KEYRING_VAULT_CREATE_KEY=true",
			"TOTPGATE_ADMIN_TOKEN=" + adminToken,
		}
		// A refused login is a configuration error, not an outage: the
		// sidecar does not start, says why, and does not log the token.
		if err := os.WriteFile(tokenFile, []byte(forged+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := cliCommand(dir, env, "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:9")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		timer := time.AfterFunc(60*time.Second, func() { _ = cmd.Process.Kill() })
		err := cmd.Wait()
		timer.Stop()
		logs := stderr.String()
		if err == nil || !strings.Contains(logs, "login (kubernetes)") || !strings.Contains(logs, "permission denied") {
			t.Fatalf("sidecar with a forged token: %v\n%s", err, logs)
		}
		if strings.Contains(logs, forged) || strings.Contains(logs, strings.Split(forged, ".")[2]) {
			t.Fatal("the sidecar logged the service-account token")
		}

		// The token the API server issued: the sidecar logs in, creates
		// the transit key and protects a user with it.
		if err := os.WriteFile(tokenFile, []byte(good+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		e := newLoginEnvIn(t, dir, env...)
		code, _ := e.enroll(t, "alice")
		res, body := e.login(t, "/login", `{"user":"alice","password":"pw"}`, http.Header{"X-Totp-Code": {code(0)}})
		if res.StatusCode != 200 || !granted(res, body) {
			t.Fatalf("login with the sidecar on Kubernetes auth: %d %s", res.StatusCode, body)
		}
		if ct := storedCiphertexts(t, dir)["alice"]; !strings.HasPrefix(ct, "vault:v1:") {
			t.Fatalf("alice's secret is stored as %.12q..., want a vault:v1: ciphertext", ct)
		}
		// Its Vault token came from the Kubernetes login, for its own
		// service account: it was given no other credential.
		if !kubernetesTokenOf(t, v, "totpgate") {
			t.Fatal("no Vault token from auth/kubernetes for service account totpgate")
		}
	})
}

// kubernetesTokenOf reports whether Vault holds a token issued by
// auth/kubernetes/login for the service account apps/sa.
func kubernetesTokenOf(t *testing.T, v *testenv.Vault, sa string) bool {
	t.Helper()
	list, err := v.Client.Logical().List("auth/token/accessors")
	if err != nil || list == nil {
		t.Fatalf("list token accessors: %v", err)
	}
	keys, _ := list.Data["keys"].([]any)
	for _, a := range keys {
		s, err := v.Client.Logical().Write("auth/token/lookup-accessor", map[string]any{"accessor": a})
		if err != nil || s == nil {
			continue
		}
		meta, _ := s.Data["meta"].(map[string]any)
		if s.Data["path"] == "auth/kubernetes/login" && meta["service_account_name"] == sa && meta["service_account_namespace"] == "apps" {
			return true
		}
	}
	return false
}

// resign signs jwt's header and claims again with a key of the same kind
// (ES256) that the API server does not know: the same token in every
// other respect, which only the signature check can refuse.
func resign(t *testing.T, jwt string) string {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %d parts", len(parts))
	}
	header, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil || !strings.Contains(string(header), `"ES256"`) {
		t.Fatalf("token header %s: %v, want ES256 (the test API server's key is P-256)", header, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
}
