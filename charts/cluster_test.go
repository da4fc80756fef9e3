package charts

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/totpgate/totpgate/internal/testenv"
)

// The chart on a real API server (kube-apiserver and etcd built by `make
// k8s`): every scenario is installed, upgraded with changed values and
// uninstalled, each step judged by the server's own validation, admission
// and defaulting, which catch what the values schema and helm template let
// through (an object name or a quantity the server refuses). There is no
// kubelet, so no pod ever runs: `helm test` and `--wait` are left out, and
// what a running pod would show is covered by the sidecar's own tests.

// helmOn runs helm against k, with helm's own state in a temporary home.
func helmOn(t *testing.T, k *testenv.Kube, args ...string) (string, error) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command(helm(t), append(args, "--kubeconfig", k.Kubeconfig)...)
	cmd.Env = append(os.Environ(), "HOME="+home, "HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"), "HELM_DATA_HOME="+filepath.Join(home, "data"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// resources maps each kind the chart renders to its REST collection.
var resources = map[string]string{
	"ConfigMap":             "/api/v1/namespaces/%s/configmaps",
	"Service":               "/api/v1/namespaces/%s/services",
	"ServiceAccount":        "/api/v1/namespaces/%s/serviceaccounts",
	"PersistentVolumeClaim": "/api/v1/namespaces/%s/persistentvolumeclaims",
	"Deployment":            "/apis/apps/v1/namespaces/%s/deployments",
	"PodDisruptionBudget":   "/apis/policy/v1/namespaces/%s/poddisruptionbudgets",
	"NetworkPolicy":         "/apis/networking.k8s.io/v1/namespaces/%s/networkpolicies",
	"ServiceMonitor":        "/apis/monitoring.coreos.com/v1/namespaces/%s/servicemonitors",
	"PrometheusRule":        "/apis/monitoring.coreos.com/v1/namespaces/%s/prometheusrules",
}

type object struct{ kind, name string }

// manifestObjects lists what a release's manifest holds (hooks, such as
// the test pod, are not in it).
func manifestObjects(t *testing.T, manifest string) []object {
	t.Helper()
	var objs []object
	for _, doc := range strings.Split(manifest, "\n---") {
		var m struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("manifest: %v\n%s", err, doc)
		}
		if m.Kind == "" {
			continue
		}
		if _, ok := resources[m.Kind]; !ok {
			t.Fatalf("the chart renders a %s, which this test does not know where to look for", m.Kind)
		}
		objs = append(objs, object{m.Kind, m.Metadata.Name})
	}
	if len(objs) == 0 {
		t.Fatalf("empty manifest:\n%s", manifest)
	}
	return objs
}

// get reads one object from the server: its status and, when found, the
// object as the server stored it.
func get(t *testing.T, k *testenv.Kube, ns string, o object) (int, map[string]any) {
	t.Helper()
	status, body, err := k.Do(context.Background(), http.MethodGet, fmt.Sprintf(resources[o.kind], ns)+"/"+o.name, nil)
	if err != nil {
		t.Fatalf("get %s/%s: %v", o.kind, o.name, err)
	}
	var m map[string]any
	if status == http.StatusOK {
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatal(err)
		}
	}
	return status, m
}

// dig follows keys through nested JSON objects.
func dig(m map[string]any, keys ...string) any {
	var v any = m
	for _, k := range keys {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[k]
	}
	return v
}

// installCRDs registers testdata/crds with the server and waits until it
// serves them.
func installCRDs(t *testing.T, k *testenv.Kube) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "crds", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("CRDs: %v %v", files, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var crd map[string]any
		if err := yaml.Unmarshal(b, &crd); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		k.Create(t, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
		name, _ := dig(crd, "metadata", "name").(string)
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			_, body, err := k.Do(context.Background(), http.MethodGet, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"+name, nil)
			if err == nil && bytes.Contains(body, []byte(`"type":"Established","status":"True"`)) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("CRD %s not established: %v %s", name, err, body)
			}
		}
	}
}

func TestChartOnAPIServer(t *testing.T) {
	t.Parallel()
	k := testenv.StartKube(t)
	installCRDs(t, k)
	if out, err := helmOn(t, k, "version", "--short"); err != nil {
		t.Fatalf("helm: %v\n%s", err, out)
	}
	t.Run("scenarios", func(t *testing.T) {
		for _, f := range scenarios(t) {
			ns := strings.TrimSuffix(filepath.Base(f), "-values.yaml")
			t.Run(ns, func(t *testing.T) {
				t.Parallel()
				installUpgradeUninstall(t, k, ns, f)
			})
		}
	})
	t.Run("server refuses", func(t *testing.T) {
		// Values the schema and the templates accept, so helm template
		// renders them, but the API server does not.
		tests := []struct {
			name string
			sets []string
			want string // in the server's refusal
		}{
			{"bad object name", []string{"fullnameOverride=Bad_Name"}, "RFC 1123"},
			{"bad memory quantity", []string{"sidecar.resources.limits.memory=lots"}, "quantities must match"},
			{"bad storage size", []string{"store.persistence.size=big"}, "quantities must match"},
			{"bad label value", []string{"podLabels.team=not a label"}, "a valid label must be"},
		}
		for i, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				if out, err := render(t, nil, tc.sets...); err != nil {
					t.Fatalf("helm template already refuses %v, so the server is not what is tested: %v\n%s", tc.sets, err, out)
				}
				ns := fmt.Sprintf("refused-%d", i)
				args := []string{"install", "rel", chart, "--namespace", ns, "--create-namespace"}
				for _, s := range tc.sets {
					args = append(args, "--set", s)
				}
				out, err := helmOn(t, k, args...)
				if err == nil || !strings.Contains(out, tc.want) {
					t.Fatalf("helm install %v: err %v, want the server's refusal naming %q:\n%s", tc.sets, err, tc.want, out)
				}
			})
		}
	})
}

// installUpgradeUninstall takes one scenario through a release's life in
// namespace ns, checking on the server after each step. Namespaces are
// never deleted: without a controller manager nothing would finalize them.
func installUpgradeUninstall(t *testing.T, k *testenv.Kube, ns, values string) {
	if out, err := helmOn(t, k, "install", "rel", chart, "--namespace", ns, "--create-namespace", "-f", values); err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	manifest, err := helmOn(t, k, "get", "manifest", "rel", "--namespace", ns)
	if err != nil {
		t.Fatalf("helm get manifest: %v\n%s", err, manifest)
	}
	objs := manifestObjects(t, manifest)
	var deploy object
	for _, o := range objs {
		if status, _ := get(t, k, ns, o); status != http.StatusOK {
			t.Fatalf("after install, %s/%s: %d", o.kind, o.name, status)
		}
		if o.kind == "Deployment" {
			deploy = o
		}
	}
	_, d := get(t, k, ns, deploy)
	checksum := dig(d, "spec", "template", "metadata", "annotations", "checksum/config")
	if checksum == nil || dig(d, "metadata", "generation") != float64(1) {
		t.Fatalf("installed Deployment: checksum %v, generation %v", checksum, dig(d, "metadata", "generation"))
	}

	// Changed values: a config change (the issuer) and a pod annotation.
	// The server must store the new pod template: a new checksum (pods
	// would roll), the annotation, a new generation.
	if out, err := helmOn(t, k, "upgrade", "rel", chart, "--namespace", ns, "-f", values,
		"--set", "mfa.issuer=Upgraded", "--set", "podAnnotations.totpgate-test/upgraded=yes"); err != nil {
		t.Fatalf("helm upgrade: %v\n%s", err, out)
	}
	_, d = get(t, k, ns, deploy)
	if c := dig(d, "spec", "template", "metadata", "annotations", "checksum/config"); c == nil || c == checksum {
		t.Errorf("upgrade kept checksum/config %v", c)
	}
	if a := dig(d, "spec", "template", "metadata", "annotations", "totpgate-test/upgraded"); a != "yes" || dig(d, "metadata", "generation") != float64(2) {
		t.Errorf("upgraded Deployment: annotation %v, generation %v", a, dig(d, "metadata", "generation"))
	}
	_, cm := get(t, k, ns, object{"ConfigMap", deploy.name})
	if cfg, _ := dig(cm, "data", "config.yaml").(string); !strings.Contains(cfg, "Upgraded") {
		t.Errorf("upgraded config:\n%s", cfg)
	}
	if out, err := helmOn(t, k, "history", "rel", "--namespace", ns); err != nil || !strings.Contains(out, "superseded") || !strings.Contains(out, "deployed") {
		t.Errorf("helm history after upgrade: %v\n%s", err, out)
	}

	if out, err := helmOn(t, k, "uninstall", "rel", "--namespace", ns); err != nil {
		t.Fatalf("helm uninstall: %v\n%s", err, out)
	}
	for _, o := range objs {
		status, _ := get(t, k, ns, o)
		// The SQLite volume carries helm.sh/resource-policy: keep (the
		// TOTP secrets live there); everything else goes.
		want := http.StatusNotFound
		if o.kind == "PersistentVolumeClaim" {
			want = http.StatusOK
		}
		if status != want {
			t.Errorf("after uninstall, %s/%s: %d, want %d", o.kind, o.name, status, want)
		}
	}
}
