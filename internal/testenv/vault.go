// Package testenv starts the real services totpgate's tests run against: a
// Vault dev server built from Go modules (test/vault), a Kubernetes API
// server with its etcd and Vault's Kubernetes auth plugin (test/k8s), and
// the PostgreSQL server named by TOTPGATE_TEST_POSTGRES_DSN.
//
// Missing services fail the test with the command that provides them; they
// are skipped only when the developer says so explicitly
// (TOTPGATE_SKIP_VAULT=1, TOTPGATE_SKIP_K8S=1), never silently, so CI
// cannot go green without them.
package testenv

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
	"github.com/totpgate/totpgate/vaultkeys"
)

// RootToken is the dev server's root token.
const RootToken = "totpgate-test-root"

// Vault is a running dev server.
type Vault struct {
	Addr      string // http://127.0.0.1:port
	UnsealKey string
	Client    *vault.Client // root token
	cmd       *exec.Cmd
	logs      *LockedBuffer
}

// VaultBinary is the path of the vault binary the tests use:
// $TOTPGATE_VAULT_BIN, else bin/vault at the module root (what `make
// vault` builds).
func VaultBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("TOTPGATE_VAULT_BIN"); p != "" {
		return p
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return filepath.Join(root, "bin", "vault")
}

// StartVault starts a fresh dev server with transit mounted at "transit"
// and AppRole enabled, and stops it when the test ends.
func StartVault(t testing.TB) *Vault {
	t.Helper()
	return startVault(t)
}

// startVault is StartVault with more arguments for the dev server.
func startVault(t testing.TB, args ...string) *Vault {
	t.Helper()
	bin := VaultBinary(t)
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("TOTPGATE_SKIP_VAULT") == "1" {
			t.Skip("TOTPGATE_SKIP_VAULT=1: Vault tests skipped")
		}
		t.Fatalf("testenv: no vault binary at %s: build it with `make vault` (make test does), or set TOTPGATE_VAULT_BIN", bin)
	}
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin, append([]string{"server", "-dev", "-dev-root-token-id=" + RootToken, "-dev-listen-address=" + addr, "-dev-no-store-token"}, args...)...)
	cmd.Env = []string{"HOME=" + t.TempDir(), "VAULT_LOG_LEVEL=warn", "PATH=" + os.Getenv("PATH")}
	logs := &LockedBuffer{}
	pr, pw := io.Pipe()
	cmd.Stdout = io.MultiWriter(logs, pw)
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start vault: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); pw.Close(); close(exited) }()
	v := &Vault{Addr: "http://" + addr, cmd: cmd, logs: logs}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT) // in case a test froze it
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("vault logs:\n%s", logs.String())
		}
	})
	unseal := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`Unseal Key: (\S+)`)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				unseal <- m[1]
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	select {
	case v.UnsealKey = <-unseal:
	case <-exited:
		t.Fatalf("testenv: vault exited at start:\n%s", logs.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("testenv: vault did not start:\n%s", logs.String())
	}
	cfg := vault.DefaultConfig()
	cfg.Address = v.Addr
	c, err := vault.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(RootToken)
	v.Client = c
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for {
		h, err := c.Sys().HealthWithContext(ctx)
		if err == nil && h.Initialized && !h.Sealed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: vault not ready: %v\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := c.Sys().MountWithContext(ctx, "transit", &vault.MountInput{Type: "transit"}); err != nil {
		t.Fatalf("testenv: mount transit: %v", err)
	}
	if err := c.Sys().EnableAuthWithOptionsWithContext(ctx, "approle", &vault.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatalf("testenv: enable approle: %v", err)
	}
	return v
}

// Write is Logical().Write with the root token, failing the test on error.
func (v *Vault) Write(t testing.TB, path string, data map[string]any) *vault.Secret {
	t.Helper()
	s, err := v.Client.Logical().Write(path, data)
	if err != nil {
		t.Fatalf("testenv: vault write %s: %v", path, err)
	}
	return s
}

// Policy is what totpgate needs on a transit key: encrypt, decrypt, rewrap,
// read, rotate and configure. Tests give it to non-root tokens.
func Policy(mount, key string) string {
	return fmt.Sprintf(`
path "%[1]s/encrypt/%[2]s" { capabilities = ["update"] }
path "%[1]s/decrypt/%[2]s" { capabilities = ["update"] }
path "%[1]s/rewrap/%[2]s" { capabilities = ["update"] }
path "%[1]s/keys/%[2]s" { capabilities = ["read", "create", "update"] }
path "%[1]s/keys/%[2]s/rotate" { capabilities = ["update"] }
path "%[1]s/keys/%[2]s/config" { capabilities = ["update"] }
`, mount, key)
}

// Seal seals the server: every transit call answers 503 until Unseal.
func (v *Vault) Seal(t testing.TB) {
	t.Helper()
	if err := v.Client.Sys().Seal(); err != nil {
		t.Fatalf("testenv: seal: %v", err)
	}
}

// Unseal unseals a sealed server with the dev unseal key.
func (v *Vault) Unseal(t testing.TB) {
	t.Helper()
	st, err := v.Client.Sys().Unseal(v.UnsealKey)
	if err != nil || st.Sealed {
		t.Fatalf("testenv: unseal: %v (sealed %v)", err, st != nil && st.Sealed)
	}
	// Mounts come back a moment after unsealing.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := v.Client.Logical().Read("sys/mounts/transit"); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("testenv: vault did not come back after unseal")
}

// Freeze stops the process (SIGSTOP): connections hang, as with a Vault
// that is overloaded or partitioned away. Thaw resumes it.
func (v *Vault) Freeze(t testing.TB) {
	t.Helper()
	if err := v.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// The signal takes effect when the kernel next schedules the process:
	// on a busy machine Vault could still answer a request sent right
	// after kill returns. Wait until it is really stopped (state T).
	stat := fmt.Sprintf("/proc/%d/stat", v.cmd.Process.Pid)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		b, err := os.ReadFile(stat)
		if err != nil {
			return // no /proc here: best effort
		}
		if i := strings.LastIndexByte(string(b), ')'); i > 0 && len(b) > i+2 && (b[i+2] == 'T' || b[i+2] == 't') {
			return
		}
	}
	t.Fatal("testenv: vault did not stop after SIGSTOP")
}

// Thaw resumes a frozen server.
func (v *Vault) Thaw(t testing.TB) {
	t.Helper()
	if err := v.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/totpgate/totpgate\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("module root not found above the working directory")
		}
		dir = parent
	}
}

// Keys opens the "totpgate" transit key of v (created if missing) with the
// root token and short timeouts, the keyring most Vault tests need.
func (v *Vault) Keys(t testing.TB) *vaultkeys.Keys {
	t.Helper()
	k, err := vaultkeys.Open(context.Background(), vaultkeys.Config{
		Address: v.Addr, Mount: "transit", KeyName: "totpgate", CreateKey: true, Timeout: 10 * time.Second,
		MaxRetries: 2, RetryWaitMin: 20 * time.Millisecond, RetryWaitMax: 200 * time.Millisecond,
		Auth: vaultkeys.Token{Value: RootToken},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Close() })
	return k
}
