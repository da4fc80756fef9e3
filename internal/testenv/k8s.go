package testenv

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
)

// KubeVersion is the version test/k8s builds; the Makefile stamps it into
// the binary, so the server reports it (helm compares the chart's
// kubeVersion with it).
const KubeVersion = "v1.37.2"

// Kube is a running Kubernetes API server backed by its own etcd, both
// built from Go modules in test/k8s. It has no kubelet and no controller
// manager: objects are stored and validated, admission and RBAC apply,
// tokens are issued and reviewed, but no pod ever runs.
type Kube struct {
	URL        string // https://127.0.0.1:port
	CAPEM      []byte // the CA that signed the server's certificate
	Token      string // bearer token of the admin (group system:masters)
	Kubeconfig string // file naming URL, CA and admin token, for helm
	// ServiceAccountIssuer is the iss of the service-account tokens the
	// server issues.
	ServiceAccountIssuer string
	client               *http.Client
}

// KubeBinaries are the paths of kube-apiserver and etcd:
// $TOTPGATE_KUBE_APISERVER and $TOTPGATE_ETCD, else bin/kube-apiserver and
// bin/etcd at the module root (what `make k8s` builds).
func KubeBinaries(t testing.TB) (apiserver, etcd string) {
	t.Helper()
	return binary(t, "TOTPGATE_KUBE_APISERVER", "kube-apiserver"), binary(t, "TOTPGATE_ETCD", "etcd")
}

// VaultPluginDir is the directory holding Vault's Kubernetes auth plugin:
// $TOTPGATE_VAULT_PLUGIN_DIR, else bin/vault-plugins at the module root.
func VaultPluginDir(t testing.TB) string {
	t.Helper()
	return binary(t, "TOTPGATE_VAULT_PLUGIN_DIR", "vault-plugins")
}

// VaultKubernetesPlugin is the plugin's name in Vault's catalog: Vault's
// dev server registers each file of -dev-plugin-dir under its file name.
const VaultKubernetesPlugin = "vault-plugin-auth-kubernetes"

func binary(t testing.TB, env, name string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return filepath.Join(root, "bin", name)
}

// requireKube fails the test when a file the Kubernetes tests need is
// missing. TOTPGATE_SKIP_K8S=1 skips instead, but never in CI (CI=true):
// there the tests must run.
func requireKube(t testing.TB, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			continue
		}
		if os.Getenv("TOTPGATE_SKIP_K8S") == "1" && os.Getenv("CI") != "true" {
			t.Skipf("TOTPGATE_SKIP_K8S=1: Kubernetes tests skipped (no %s)", p)
		}
		t.Fatalf("testenv: no %s: build it with `make k8s` (make test does), or set TOTPGATE_KUBE_APISERVER, TOTPGATE_ETCD and TOTPGATE_VAULT_PLUGIN_DIR", p)
	}
}

// StartKube starts etcd and kube-apiserver on free loopback ports, with
// certificates and a service-account signing key made here, and stops
// both when the test ends. The admin authenticates with a static token;
// authorization is RBAC, so other identities get only what they are bound
// to.
func StartKube(t testing.TB) *Kube {
	t.Helper()
	apiserverBin, etcdBin := KubeBinaries(t)
	requireKube(t, apiserverBin, etcdBin)
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		return p
	}
	caPEM, certPEM, keyPEM := servingCert(t)
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	saKeyDER, err := x509.MarshalECPrivateKey(saKey)
	if err != nil {
		t.Fatal(err)
	}
	k := &Kube{CAPEM: caPEM, Token: randomHex(t, 24), ServiceAccountIssuer: "https://kubernetes.default.svc.cluster.local"}

	etcdClient, etcdPeer := freePort(t), freePort(t)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdClient)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPeer)
	etcdExited := startProcess(t, "etcd", etcdBin,
		"--name=test", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=test="+peerURL,
		// The data is thrown away with the test: durability buys nothing.
		"--unsafe-no-fsync", "--log-level=error")

	port := freePort(t)
	k.URL = fmt.Sprintf("https://127.0.0.1:%d", port)
	apiExited := startProcess(t, "kube-apiserver", apiserverBin,
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", port),
		"--tls-cert-file="+write("server.crt", certPEM), "--tls-private-key-file="+write("server.key", keyPEM),
		"--token-auth-file="+write("tokens.csv", []byte(k.Token+",admin,admin,system:masters\n")),
		"--authorization-mode=RBAC",
		"--service-account-issuer="+k.ServiceAccountIssuer,
		"--service-account-key-file="+write("sa.key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: saKeyDER})),
		"--service-account-signing-key-file="+filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range=10.0.0.0/24",
		// No other control plane member and no kubelet: nothing to
		// reconcile the kubernetes service's endpoints to.
		"--endpoint-reconciler-type=none",
		"--profiling=false", "-v=0")

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	k.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	k.Kubeconfig = write("kubeconfig", k.kubeconfig(t))

	// readyz includes etcd and the post-start hooks, among them the one
	// that creates the bootstrap RBAC roles (system:auth-delegator).
	deadline := time.Now().Add(90 * time.Second)
	for {
		status, body, err := k.Do(context.Background(), http.MethodGet, "/readyz", nil)
		if err == nil && status == http.StatusOK {
			break
		}
		select {
		case <-etcdExited:
			t.Fatal("testenv: etcd exited at start")
		case <-apiExited:
			t.Fatal("testenv: kube-apiserver exited at start")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: kube-apiserver not ready: %v %d %s", err, status, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return k
}

// Do sends one request to the API server as the admin; body, if not nil,
// is sent as JSON.
func (k *Kube) Do(ctx context.Context, method, path string, body any) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, k.URL+path, r)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+k.Token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := k.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, b, err
}

// Create POSTs obj to path (a collection) and fails the test unless the
// server answers 201.
func (k *Kube) Create(t testing.TB, path string, obj any) []byte {
	t.Helper()
	status, body, err := k.Do(context.Background(), http.MethodPost, path, obj)
	if err != nil || status != http.StatusCreated {
		t.Fatalf("testenv: create %s: %v %d %s", path, err, status, body)
	}
	return body
}

// ServiceAccount creates a service account (and its namespace, if new).
func (k *Kube) ServiceAccount(t testing.TB, namespace, name string) {
	t.Helper()
	status, body, err := k.Do(context.Background(), http.MethodPost, "/api/v1/namespaces",
		map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": namespace}})
	if err != nil || (status != http.StatusCreated && status != http.StatusConflict) {
		t.Fatalf("testenv: create namespace %s: %v %d %s", namespace, err, status, body)
	}
	k.Create(t, "/api/v1/namespaces/"+namespace+"/serviceaccounts",
		map[string]any{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": name}})
}

// ServiceAccountToken asks the server for a token of the service account
// (the TokenRequest API the kubelet uses for projected tokens), valid for
// the given audiences for ten minutes.
func (k *Kube) ServiceAccountToken(t testing.TB, namespace, name string, audiences ...string) string {
	t.Helper()
	body := k.Create(t, "/api/v1/namespaces/"+namespace+"/serviceaccounts/"+name+"/token", map[string]any{
		"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
		"spec": map[string]any{"audiences": audiences, "expirationSeconds": 600},
	})
	var tr struct {
		Status struct {
			Token string `json:"token"`
		} `json:"status"`
	}
	if err := json.Unmarshal(body, &tr); err != nil || tr.Status.Token == "" {
		t.Fatalf("testenv: token of %s/%s: %v %s", namespace, name, err, body)
	}
	return tr.Status.Token
}

// kubeconfig is a client config for the admin. JSON is YAML, which is what
// client-go reads.
func (k *Kube) kubeconfig(t testing.TB) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"apiVersion": "v1", "kind": "Config", "current-context": "test",
		"clusters": []any{map[string]any{"name": "test", "cluster": map[string]any{
			"server": k.URL, "certificate-authority-data": k.CAPEM,
		}}},
		"users":    []any{map[string]any{"name": "admin", "user": map[string]any{"token": k.Token}}},
		"contexts": []any{map[string]any{"name": "test", "context": map[string]any{"cluster": "test", "user": "admin"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// startProcess runs a server until the test ends, and shows its output if
// the test failed. The channel closes when the process exits.
func startProcess(t testing.TB, name, bin string, args ...string) <-chan struct{} {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH")}
	logs := &LockedBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("%s logs:\n%s", name, tail(logs.String(), 8000))
		}
	})
	return exited
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// servingCert makes a CA and a certificate it signs for the API server on
// loopback.
func servingCert(t testing.TB) (caPEM, certPEM, keyPEM []byte) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "totpgate test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", b)
}

// StartVaultWithKubernetesAuth starts a dev server as StartVault does, with
// Vault's Kubernetes auth plugin (built by `make k8s`) enabled at
// auth/kubernetes and configured against k: it reviews tokens with its own
// service account (vault/token-reviewer), bound to system:auth-delegator
// as a Vault deployment's would be. Roles are left to the test.
func StartVaultWithKubernetesAuth(t testing.TB, k *Kube) *Vault {
	t.Helper()
	pluginDir := VaultPluginDir(t)
	requireKube(t, filepath.Join(pluginDir, VaultKubernetesPlugin))
	v := startVault(t, "-dev-plugin-dir="+pluginDir)
	k.ServiceAccount(t, "vault", "token-reviewer")
	k.Create(t, "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
		"metadata": map[string]any{"name": "vault-token-reviewer"},
		"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
		"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": "token-reviewer", "namespace": "vault"}},
	})
	// Ten minutes, the shortest the server issues: longer than any one
	// test's Vault lives.
	reviewer := k.ServiceAccountToken(t, "vault", "token-reviewer", k.ServiceAccountIssuer)
	ctx := context.Background()
	if err := v.Client.Sys().EnableAuthWithOptionsWithContext(ctx, "kubernetes", &vault.EnableAuthOptions{Type: VaultKubernetesPlugin}); err != nil {
		t.Fatalf("testenv: enable kubernetes auth: %v", err)
	}
	v.Write(t, "auth/kubernetes/config", map[string]any{
		"kubernetes_host":    k.URL,
		"kubernetes_ca_cert": string(k.CAPEM),
		"token_reviewer_jwt": reviewer,
		// Vault does not run in a pod here: no local service-account
		// token or CA to fall back to.
		"disable_local_ca_jwt": true,
	})
	return v
}

// KubernetesLogin is what Vault answers to a login at auth/kubernetes with
// jwt for role: the HTTP status and, when it logs in, the token's
// metadata. It goes through the HTTP API, not the client's error mapping,
// so a test sees the refusal itself.
func (v *Vault) KubernetesLogin(t testing.TB, role, jwt string) (int, map[string]string) {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"role": role, "jwt": jwt})
	res, err := http.Post(v.Addr+"/v1/auth/kubernetes/login", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatalf("testenv: kubernetes login: %v", err)
	}
	defer res.Body.Close()
	var out struct {
		Auth *struct {
			ClientToken string            `json:"client_token"`
			Metadata    map[string]string `json:"metadata"`
		} `json:"auth"`
	}
	_ = json.NewDecoder(res.Body).Decode(&out)
	if res.StatusCode == http.StatusOK && out.Auth != nil && out.Auth.ClientToken != "" {
		return res.StatusCode, out.Auth.Metadata
	}
	if res.StatusCode == http.StatusOK {
		return http.StatusInternalServerError, nil // 200 without a token is no login
	}
	return res.StatusCode, nil
}
