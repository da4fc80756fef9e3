package vaultkeys_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/totpgate/totpgate/internal/testenv"
	"github.com/totpgate/totpgate/keyring"
	"github.com/totpgate/totpgate/vaultkeys"
)

func config(v *testenv.Vault, auth vaultkeys.Auth) vaultkeys.Config {
	return vaultkeys.Config{
		Address: v.Addr, Mount: "transit", KeyName: "totpgate", CreateKey: true,
		Timeout: 2 * time.Second, MaxRetries: 2, RetryWaitMin: 20 * time.Millisecond, RetryWaitMax: 100 * time.Millisecond,
		Auth: auth,
	}
}

func open(t *testing.T, cfg vaultkeys.Config) *vaultkeys.Keys {
	t.Helper()
	k, err := vaultkeys.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = k.Close() })
	return k
}

// policyToken makes a token limited to totpgate's policy, so the tests
// prove the documented policy is enough.
func policyToken(t *testing.T, v *testenv.Vault, extra map[string]any) string {
	t.Helper()
	v.Write(t, "sys/policies/acl/totpgate", map[string]any{"policy": testenv.Policy("transit", "totpgate")})
	body := map[string]any{"policies": []string{"totpgate"}, "no_default_policy": false}
	for k, val := range extra {
		body[k] = val
	}
	return v.Write(t, "auth/token/create", body).Auth.ClientToken
}

func TestKeysAgainstVault(t *testing.T) {
	t.Parallel()
	v := testenv.StartVault(t)
	k := open(t, config(v, vaultkeys.Token{Value: policyToken(t, v, nil)}))
	ctx := context.Background()
	secret := []byte("0123456789abcdefghij")

	ct, err := k.Encrypt(ctx, "alice", secret)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ct, "vault:v1:") || strings.Contains(ct, string(secret)) {
		t.Fatalf("ciphertext %q: want vault:v1: and no plaintext", ct)
	}

	t.Run("round trip", func(t *testing.T) {
		pt, err := k.Decrypt(ctx, "alice", ct)
		if err != nil || string(pt) != string(secret) {
			t.Fatalf("Decrypt = %q, %v", pt, err)
		}
	})
	t.Run("bound to the user", func(t *testing.T) {
		_, err := k.Decrypt(ctx, "mallory", ct)
		if !errors.Is(err, keyring.ErrDecrypt) {
			t.Fatalf("Decrypt as another user: %v, want ErrDecrypt", err)
		}
		if strings.Contains(err.Error(), ct) {
			t.Fatalf("error echoes the ciphertext: %v", err)
		}
	})
	t.Run("refuses local ciphertexts and empty context", func(t *testing.T) {
		if _, err := k.Decrypt(ctx, "alice", "local:v1:AAAA"); !errors.Is(err, keyring.ErrMalformed) {
			t.Fatalf("local ciphertext: %v", err)
		}
		if _, err := k.Decrypt(ctx, "", ct); err == nil {
			t.Fatal("empty bindTo accepted")
		}
		if _, err := k.Encrypt(ctx, "", secret); err == nil {
			t.Fatal("empty bindTo accepted for Encrypt")
		}
	})

	st, err := k.Rotate(ctx)
	if err != nil || st.LatestVersion != 2 || st.Backend != keyring.BackendVault || st.KeyName != "totpgate" {
		t.Fatalf("Rotate = %+v, %v", st, err)
	}
	ct2, err := k.Encrypt(ctx, "bob", secret)
	if err != nil || !strings.HasPrefix(ct2, "vault:v2:") {
		t.Fatalf("Encrypt after rotate = %q, %v", ct2, err)
	}

	t.Run("rewrap batch with failing items", func(t *testing.T) {
		items := []keyring.Item{
			{BindTo: "alice", Ciphertext: ct},
			{BindTo: "mallory", Ciphertext: ct}, // wrong context
			{BindTo: "bob", Ciphertext: ct2},    // already latest
			{BindTo: "carol", Ciphertext: "local:v1:AAAA"},
		}
		res, err := k.Rewrap(ctx, items)
		if err != nil {
			t.Fatal(err)
		}
		if res[0].Err != nil || res[0].Version != 2 || !strings.HasPrefix(res[0].Ciphertext, "vault:v2:") {
			t.Fatalf("item 0: %+v", res[0])
		}
		if pt, err := k.Decrypt(ctx, "alice", res[0].Ciphertext); err != nil || string(pt) != string(secret) {
			t.Fatalf("rewrapped item does not decrypt: %v", err)
		}
		if !errors.Is(res[1].Err, keyring.ErrDecrypt) {
			t.Fatalf("item 1 (wrong context): %+v", res[1])
		}
		if res[2].Err != nil || res[2].Version != 2 {
			t.Fatalf("item 2: %+v", res[2])
		}
		if !errors.Is(res[3].Err, keyring.ErrMalformed) {
			t.Fatalf("item 3: %+v", res[3])
		}
	})
	t.Run("rewrap a batch as large as the job sends", func(t *testing.T) {
		// A large answer is still streaming when the call returns: it must
		// be read under a context that is still alive.
		items := make([]keyring.Item, 1000)
		for i := range items {
			bind := fmt.Sprintf("user-%04d", i)
			c, err := k.Encrypt(ctx, bind, secret)
			if err != nil {
				t.Fatal(err)
			}
			items[i] = keyring.Item{BindTo: bind, Ciphertext: c}
		}
		res, err := k.Rewrap(ctx, items)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if r.Err != nil || r.Version != 2 {
				t.Fatalf("item %d: %+v", i, r)
			}
		}
		if pt, err := k.Decrypt(ctx, items[999].BindTo, res[999].Ciphertext); err != nil || string(pt) != string(secret) {
			t.Fatalf("last rewrapped item does not decrypt: %v", err)
		}
	})
	t.Run("rewrap batch where every item fails", func(t *testing.T) {
		res, err := k.Rewrap(ctx, []keyring.Item{{BindTo: "x", Ciphertext: ct}, {BindTo: "y", Ciphertext: ct2}})
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if !errors.Is(r.Err, keyring.ErrDecrypt) {
				t.Fatalf("item %d: %+v", i, r)
			}
		}
	})
	t.Run("min decryption version", func(t *testing.T) {
		if _, err := k.SetMinDecryptionVersion(ctx, 3); !errors.Is(err, keyring.ErrInvalidMinVersion) {
			t.Fatalf("above latest: %v", err)
		}
		st, err := k.SetMinDecryptionVersion(ctx, 2)
		if err != nil || st.MinDecryptionVersion != 2 {
			t.Fatalf("SetMinDecryptionVersion(2) = %+v, %v", st, err)
		}
		if _, err := k.Decrypt(ctx, "alice", ct); !errors.Is(err, keyring.ErrVersionRetired) {
			t.Fatalf("retired version: %v", err)
		}
		if _, err := k.SetMinDecryptionVersion(ctx, 1); !errors.Is(err, keyring.ErrInvalidMinVersion) {
			t.Fatalf("below current minimum: %v", err)
		}
		if pt, err := k.Decrypt(ctx, "bob", ct2); err != nil || string(pt) != string(secret) {
			t.Fatalf("latest still decrypts: %v", err)
		}
	})
	if err := k.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func TestOpenChecksTheKey(t *testing.T) {
	t.Parallel()
	v := testenv.StartVault(t)
	root := vaultkeys.Token{Value: testenv.RootToken}
	ctx := context.Background()

	cfg := config(v, root)
	cfg.CreateKey = false
	if _, err := vaultkeys.Open(ctx, cfg); err == nil || !strings.Contains(err.Error(), "derived=true") {
		t.Fatalf("missing key without create_key: %v, want the command that creates it", err)
	}
	v.Write(t, "transit/keys/plain", map[string]any{"type": "aes256-gcm96"})
	cfg.KeyName = "plain"
	if _, err := vaultkeys.Open(ctx, cfg); err == nil || !strings.Contains(err.Error(), "not derived") {
		t.Fatalf("non-derived key: %v", err)
	}
	v.Write(t, "transit/keys/signing", map[string]any{"type": "ed25519", "derived": true})
	cfg.KeyName = "signing"
	if _, err := vaultkeys.Open(ctx, cfg); err == nil || !strings.Contains(err.Error(), "ed25519") {
		t.Fatalf("signing key: %v", err)
	}
	bad := config(v, vaultkeys.Token{Value: "not-a-token"})
	if _, err := vaultkeys.Open(ctx, bad); err == nil || !strings.Contains(err.Error(), "login") {
		t.Fatalf("bad token: %v", err)
	}
	if err := (vaultkeys.Config{}).Validate(); err == nil || strings.Count(err.Error(), "\n") < 3 {
		t.Fatalf("Validate of an empty config should list every problem: %v", err)
	}
}

func TestAppRoleAndRenewal(t *testing.T) {
	t.Parallel()
	v := testenv.StartVault(t)
	ctx := context.Background()
	v.Write(t, "sys/policies/acl/totpgate", map[string]any{"policy": testenv.Policy("transit", "totpgate")})
	// Tokens live 2 s and at most 4 s: the session must renew, then log in
	// again, or the calls below fail.
	v.Write(t, "auth/approle/role/totpgate", map[string]any{
		"token_policies": []string{"totpgate"}, "token_ttl": "2s", "token_max_ttl": "4s",
	})
	roleID, err := v.Client.Logical().Read("auth/approle/role/totpgate/role-id")
	if err != nil {
		t.Fatal(err)
	}
	secretID := v.Write(t, "auth/approle/role/totpgate/secret-id", nil).Data["secret_id"].(string)
	sidFile := filepath.Join(t.TempDir(), "secret-id")
	if err := os.WriteFile(sidFile, []byte(secretID+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	k := open(t, config(v, vaultkeys.AppRole{Mount: "approle", RoleID: roleID.Data["role_id"].(string), SecretIDFile: sidFile}))
	ct, err := k.Encrypt(ctx, "alice", []byte("s"))
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(9 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		if _, err := k.Decrypt(ctx, "alice", ct); err != nil {
			t.Fatalf("decrypt %v after start: %v", time.Until(end), err)
		}
	}
	if err := k.Ping(ctx); err != nil {
		t.Fatalf("Ping after several token lifetimes: %v", err)
	}
}

func TestTokenRenewalAndTokenFile(t *testing.T) {
	t.Parallel()
	v := testenv.StartVault(t)
	ctx := context.Background()

	t.Run("short TTL token is renewed", func(t *testing.T) {
		tok := policyToken(t, v, map[string]any{"ttl": "2s", "renewable": true})
		k := open(t, config(v, vaultkeys.Token{Value: tok}))
		ct, err := k.Encrypt(ctx, "alice", []byte("s"))
		if err != nil {
			t.Fatal(err)
		}
		for end := time.Now().Add(6 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
			if _, err := k.Decrypt(ctx, "alice", ct); err != nil {
				t.Fatalf("decrypt with a renewed token: %v", err)
			}
		}
	})
	t.Run("token file is re-read", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "token")
		first := policyToken(t, v, nil)
		if err := os.WriteFile(file, []byte(first), 0o600); err != nil {
			t.Fatal(err)
		}
		k := open(t, config(v, vaultkeys.Token{File: file, PollInterval: 50 * time.Millisecond}))
		ct, err := k.Encrypt(ctx, "alice", []byte("s"))
		if err != nil {
			t.Fatal(err)
		}
		// A Vault Agent writes a new token, then the old one is revoked.
		if err := os.WriteFile(file, []byte(policyToken(t, v, nil)), 0o600); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		v.Write(t, "auth/token/revoke", map[string]any{"token": first})
		if _, err := k.Decrypt(ctx, "alice", ct); err != nil {
			t.Fatalf("decrypt after the token file changed: %v", err)
		}
	})
}

// countingProxy sits between the client and Vault and counts requests per
// path, so the retry policy can be observed on the wire.
func countingProxy(t *testing.T, target string, override func(w http.ResponseWriter, r *http.Request) bool) (string, *atomic.Int64) {
	t.Helper()
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/transit/decrypt/") {
			n.Add(1)
			if override != nil && override(w, r) {
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &n
}

func TestRetryPolicy(t *testing.T) {
	t.Parallel()
	v := testenv.StartVault(t)
	ctx := context.Background()
	var fail atomic.Int64 // answer 5xx/429 this many more times
	var status atomic.Int64
	addr, count := countingProxy(t, v.Addr, func(w http.ResponseWriter, r *http.Request) bool {
		if fail.Add(-1) >= 0 {
			w.WriteHeader(int(status.Load()))
			return true
		}
		return false
	})
	cfg := config(v, vaultkeys.Token{Value: testenv.RootToken})
	cfg.Address = addr
	k := open(t, cfg)
	ct, err := k.Encrypt(ctx, "alice", []byte("s"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		status    int
		failures  int64
		bindTo    string
		wantCalls int64
		wantErr   error
	}{
		{"4xx is not retried", 0, 0, "mallory", 1, keyring.ErrDecrypt},
		{"503 then success", http.StatusServiceUnavailable, 1, "alice", 2, nil},
		{"429 then success", http.StatusTooManyRequests, 2, "alice", 3, nil},
		{"5xx beyond the retries", http.StatusBadGateway, 10, "alice", 3, keyring.ErrUnavailable},
		{"501 is not retried", http.StatusNotImplemented, 1, "alice", 1, keyring.ErrUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status.Store(int64(tc.status))
			fail.Store(tc.failures)
			count.Store(0)
			_, err := k.Decrypt(ctx, tc.bindTo, ct)
			if !errors.Is(err, tc.wantErr) && (tc.wantErr != nil || err != nil) {
				t.Fatalf("Decrypt: %v, want %v", err, tc.wantErr)
			}
			if got := count.Load(); got != tc.wantCalls {
				t.Fatalf("requests = %d, want %d", got, tc.wantCalls)
			}
			fail.Store(0)
		})
	}
}

func TestFailsClosedAndRecovers(t *testing.T) {
	t.Parallel()
	v := testenv.StartVault(t)
	ctx := context.Background()
	cfg := config(v, vaultkeys.Token{Value: testenv.RootToken})
	cfg.Timeout = 500 * time.Millisecond
	k := open(t, cfg)
	ct, err := k.Encrypt(ctx, "alice", []byte("s"))
	if err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T) {
		t.Helper()
		start := time.Now()
		_, err := k.Decrypt(ctx, "alice", ct)
		if !errors.Is(err, keyring.ErrUnavailable) {
			t.Fatalf("Decrypt while Vault is down: %v, want ErrUnavailable", err)
		}
		// The bound is the configured timeout plus scheduling slack, not a
		// performance target.
		if took := time.Since(start); took > cfg.Timeout+2*time.Second {
			t.Fatalf("failing took %v, timeout is %v", took, cfg.Timeout)
		}
		if err := k.Ping(ctx); err == nil {
			t.Fatal("Ping reports ready while Vault is down")
		}
	}
	recovered := func(t *testing.T) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			_, err := k.Decrypt(ctx, "alice", ct)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("not recovered: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	t.Run("sealed", func(t *testing.T) {
		v.Seal(t)
		check(t)
		v.Unseal(t)
		recovered(t)
	})
	t.Run("not answering", func(t *testing.T) {
		v.Freeze(t)
		check(t)
		v.Thaw(t)
		recovered(t)
	})
}

// The Kubernetes method against the real plugin and API server is
// cmd/totpgate's TestVaultKubernetesAuth; here only what needs neither: a
// missing token file is refused before anything is sent.
func TestKubernetesLoginWithoutTokenFile(t *testing.T) {
	t.Parallel()
	client, err := vault.NewClient(&vault.Config{Address: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = vaultkeys.Kubernetes{Mount: "k8s", Role: "r", TokenFile: filepath.Join(t.TempDir(), "missing")}.Login(context.Background(), client)
	if err == nil || !strings.Contains(err.Error(), "service account token") {
		t.Fatalf("a missing service-account token: %v", err)
	}
}
