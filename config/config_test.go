package config_test

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/totpgate/totpgate/config"
)

func TestDefaultIsValid(t *testing.T) {
	t.Parallel()
	if err := config.Default().Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
}

func TestPrecedenceFileEnvFlag(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	writeFile(t, file, "listen: 127.0.0.1:1111\nupstream:\n  url: http://127.0.0.1:1\n  dial_timeout: 3s\ntrusted_proxies: [10.0.0.0/8]\napi:\n  prefix: /fromfile\n")
	env := map[string]string{
		"TOTPGATE_UPSTREAM_URL":           "http://127.0.0.1:2",
		"TOTPGATE_API_PREFIX":             "/fromenv",
		"TOTPGATE_TRUSTED_PROXIES":        "192.168.0.0/16, 127.0.0.1",
		"TOTPGATE_UPSTREAM_PRESERVE_HOST": "false",
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	l := config.NewLoader(fs)
	if err := fs.Parse([]string{"--config", file, "--upstream", "http://127.0.0.1:3"}); err != nil {
		t.Fatal(err)
	}
	c, err := l.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	checks := []struct{ name, got, want string }{
		{"listen from file", c.Listen, "127.0.0.1:1111"},
		{"upstream from flag beats env and file", c.Upstream.URL, "http://127.0.0.1:3"},
		{"prefix from env beats file", c.API.Prefix, "/fromenv"},
		{"list from env", strings.Join(c.TrustedProxies, "|"), "192.168.0.0/16|127.0.0.1"},
		{"duration from file", c.Upstream.DialTimeout.String(), (3 * time.Second).String()},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s: got %q, want %q", ck.name, ck.got, ck.want)
		}
	}
	if c.Upstream.PreserveHost {
		t.Error("preserve_host from env: got true, want false")
	}
}

func TestUnknownKeyInFileIsAnError(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "c.yaml")
	writeFile(t, file, "upstream:\n  urll: http://x\n")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	l := config.NewLoader(fs)
	if err := fs.Parse([]string{"--config", file}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Load(func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "urll") {
		t.Fatalf("Load() error = %v, want one naming the unknown key", err)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	c := config.Default()
	c.Listen = ""
	c.Upstream.URL = "ftp://x"
	c.Upstream.DialTimeout = 0
	c.TrustedProxies = []string{"not-a-cidr"}
	c.API.Prefix = "mfa/"
	c.Log.Level = "loud"
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate() = nil, want errors")
	}
	for _, want := range []string{"listen:", "upstream.url:", "upstream.dial_timeout:", "trusted_proxies:", "api.prefix:", "log.level:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() error lacks %q:\n%v", want, err)
		}
	}
}

func TestBadEnvValueNamesTheVariable(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	l := config.NewLoader(fs)
	_ = fs.Parse(nil)
	_, err := l.Load(func(k string) string {
		if k == "TOTPGATE_UPSTREAM_DIAL_TIMEOUT" {
			return "soon"
		}
		return ""
	})
	if err == nil || !strings.Contains(err.Error(), "TOTPGATE_UPSTREAM_DIAL_TIMEOUT") {
		t.Fatalf("Load() error = %v", err)
	}
}

func TestRedactedHidesSecrets(t *testing.T) {
	t.Parallel()
	c := config.Default()
	c.Admin.Token = "super-secret-admin-token"
	out := config.Redacted(c)
	if strings.Contains(out, c.Admin.Token) {
		t.Fatalf("Redacted leaked the admin token:\n%s", out)
	}
	if !strings.Contains(out, "admin.token=(set, hidden)") {
		t.Fatalf("Redacted does not say the token is set:\n%s", out)
	}
}

// The README's configuration table is generated; this keeps it current.
var update = flag.Bool("update", false, "rewrite the README's configuration reference")

func TestReadmeReferenceIsCurrent(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- config-reference:begin -->\n", "<!-- config-reference:end -->"
	s := string(b)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		t.Fatal("README.md lacks the config-reference markers")
	}
	want := config.Reference()
	if *update {
		if err := os.WriteFile("../README.md", []byte(s[:i+len(begin)]+want+s[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if got := s[i+len(begin) : j]; got != want {
		t.Errorf("README configuration reference is stale; run `go test ./config -run Readme -update`.\nwant:\n%s", want)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestVaultSettings(t *testing.T) {
	t.Parallel()
	load := func(t *testing.T, env map[string]string, args ...string) (config.Config, error) {
		t.Helper()
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		l := config.NewLoader(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		c, err := l.Load(func(k string) string { return env[k] })
		if err != nil {
			t.Fatal(err)
		}
		return c, c.Validate()
	}
	t.Run("VAULT_* environment fills empty settings", func(t *testing.T) {
		c, err := load(t, map[string]string{"VAULT_ADDR": "https://vault:8200", "VAULT_TOKEN": "s.x", "VAULT_CACERT": "/ca.pem", "TOTPGATE_KEYRING_BACKEND": "vault"})
		if err != nil {
			t.Fatal(err)
		}
		if v := c.Keyring.Vault; v.Address != "https://vault:8200" || v.Auth.Token != "s.x" || v.CACert != "/ca.pem" {
			t.Fatalf("vault settings = %+v", v)
		}
	})
	t.Run("explicit settings win over VAULT_*", func(t *testing.T) {
		c, err := load(t, map[string]string{"VAULT_ADDR": "https://vault:8200", "VAULT_TOKEN": "s.x"},
			"--keyring.backend", "vault", "--keyring.vault.address", "http://127.0.0.1:8200", "--keyring.vault.auth.token-file", "/t")
		if err != nil {
			t.Fatal(err)
		}
		if v := c.Keyring.Vault; v.Address != "http://127.0.0.1:8200" || v.Auth.Token != "" {
			t.Fatalf("vault settings = %+v; VAULT_TOKEN must not join a token file", v)
		}
	})
	t.Run("every problem at once", func(t *testing.T) {
		_, err := load(t, nil, "--keyring.backend", "vault", "--keyring.migrate-from", "vault", "--keyring.vault.mount", "/transit/",
			"--keyring.vault.key", "a/b", "--keyring.vault.timeout", "0s", "--keyring.vault.client-cert", "/c.pem", "--keyring.vault.auth.method", "approle")
		if err == nil {
			t.Fatal("Validate() = nil")
		}
		for _, want := range []string{"keyring.migrate_from", "keyring.vault.address", "keyring.vault.mount", "keyring.vault.key", "keyring.vault.timeout", "client_key", "role_id"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error lacks %q:\n%v", want, err)
			}
		}
	})
	t.Run("local backend ignores vault settings", func(t *testing.T) {
		if _, err := load(t, nil, "--keyring.vault.timeout", "0s"); err != nil {
			t.Fatalf("unused vault settings were validated: %v", err)
		}
	})
}
