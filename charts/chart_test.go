// Package charts holds the tests of the Helm chart in charts/totpgate: helm
// lint and helm template of every ci/*-values.yaml scenario, each rendered
// object decoded strictly into its Kubernetes type, the wiring the sidecar
// relies on, the generated totpgate config, and the values schema.
package charts

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"github.com/totpgate/totpgate/config"
)

const chart = "totpgate"

func helm(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("TOTPGATE_HELM")
	if bin == "" {
		bin = filepath.Join("..", ".tools", "bin", "helm")
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("TOTPGATE_SKIP_HELM") == "1" {
			t.Skip("TOTPGATE_SKIP_HELM=1")
		}
		t.Fatalf("no helm at %s: install it with `make helm` (make test does), or set TOTPGATE_HELM", bin)
	}
	return bin
}

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helm(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String() + errb.String(), err
	}
	return out.String(), nil
}

// render runs helm template with the given value files and --set pairs.
func render(t *testing.T, files []string, sets ...string) (string, error) {
	args := []string{"template", "rel", chart, "--kube-version", "1.30.0", "--namespace", "apps"}
	for _, f := range files {
		args = append(args, "-f", f)
	}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	return run(t, args...)
}

func scenarios(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chart, "ci", "*-values.yaml"))
	if err != nil || len(files) < 3 {
		t.Fatalf("ci scenarios: %v %v", files, err)
	}
	return files
}

func TestLint(t *testing.T) {
	t.Parallel()
	for _, f := range scenarios(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if out, err := run(t, "lint", "--strict", chart, "-f", f); err != nil {
				t.Fatalf("helm lint: %v\n%s", err, out)
			}
		})
	}
}

// Strictly decoded shapes of the Prometheus Operator objects (the module
// is not a dependency; these are the fields the chart sets).
type serviceMonitor struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   map[string]any `json:"metadata"`
	Spec       struct {
		Selector  map[string]map[string]string `json:"selector"`
		Endpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path"`
			Interval string `json:"interval"`
		} `json:"endpoints"`
	} `json:"spec"`
}

type prometheusRule struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   map[string]any `json:"metadata"`
	Spec       struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for,omitempty"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

type rendered struct {
	deployment *appsv1.Deployment
	services   []*corev1.Service
	configMaps map[string]*corev1.ConfigMap
	kinds      map[string]int
	monitor    *serviceMonitor
	rule       *prometheusRule
	policy     *networkingv1.NetworkPolicy
	testPod    *corev1.Pod
}

// decode splits helm's output and decodes each object strictly: an unknown
// field (a typo in a template) fails.
func decode(t *testing.T, out string) rendered {
	t.Helper()
	r := rendered{configMaps: map[string]*corev1.ConfigMap{}, kinds: map[string]int{}}
	for _, doc := range strings.Split(out, "\n---") {
		if strings.TrimSpace(strings.TrimPrefix(doc, "---")) == "" {
			continue
		}
		js, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatalf("yaml: %v\n%s", err, doc)
		}
		var meta struct{ Kind string }
		_ = json.Unmarshal(js, &meta)
		if meta.Kind == "" {
			continue // a comment-only document
		}
		r.kinds[meta.Kind]++
		var target any
		switch meta.Kind {
		case "Deployment":
			r.deployment = &appsv1.Deployment{}
			target = r.deployment
		case "Service":
			s := &corev1.Service{}
			r.services = append(r.services, s)
			target = s
		case "ConfigMap":
			c := &corev1.ConfigMap{}
			target = c
			defer func() { r.configMaps[c.Name] = c }()
		case "ServiceAccount":
			target = &corev1.ServiceAccount{}
		case "PersistentVolumeClaim":
			target = &corev1.PersistentVolumeClaim{}
		case "Pod":
			r.testPod = &corev1.Pod{}
			target = r.testPod
		case "PodDisruptionBudget":
			target = &policyv1.PodDisruptionBudget{}
		case "NetworkPolicy":
			r.policy = &networkingv1.NetworkPolicy{}
			target = r.policy
		case "ServiceMonitor":
			r.monitor = &serviceMonitor{}
			target = r.monitor
		case "PrometheusRule":
			r.rule = &prometheusRule{}
			target = r.rule
		default:
			t.Fatalf("unexpected kind %s", meta.Kind)
		}
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.DisallowUnknownFields()
		if err := dec.Decode(target); err != nil {
			t.Fatalf("%s does not decode strictly: %v\n%s", meta.Kind, err, doc)
		}
	}
	if r.deployment == nil {
		t.Fatal("no Deployment rendered")
	}
	return r
}

func container(t *testing.T, d *appsv1.Deployment, name string) corev1.Container {
	t.Helper()
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q", name)
	return corev1.Container{}
}

func TestTemplates(t *testing.T) {
	t.Parallel()
	for _, f := range scenarios(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			out, err := render(t, []string{f})
			if err != nil {
				t.Fatalf("helm template: %v\n%s", err, out)
			}
			r := decode(t, out)
			d := r.deployment
			side := container(t, d, "totpgate")
			app := container(t, d, "app")

			// The sidecar: probes on the admin port, restrictive security.
			sc := side.SecurityContext
			if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil ||
				len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("sidecar security context: %+v", sc)
			}
			for name, p := range map[string]*corev1.Probe{"liveness": side.LivenessProbe, "readiness": side.ReadinessProbe, "startup": side.StartupProbe} {
				if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.StrVal != "admin" {
					t.Errorf("%s probe not on the admin port: %+v", name, p)
				}
			}
			if side.ReadinessProbe.HTTPGet.Path != "/readyz" || side.LivenessProbe.HTTPGet.Path != "/healthz" {
				t.Errorf("probe paths: %s, %s", side.ReadinessProbe.HTTPGet.Path, side.LivenessProbe.HTTPGet.Path)
			}
			if side.Resources.Requests.Cpu().IsZero() || side.Resources.Limits.Memory().IsZero() {
				t.Errorf("sidecar resources: %+v", side.Resources)
			}
			// The app exposes no port: traffic reaches it only through the sidecar.
			if len(app.Ports) != 0 {
				t.Errorf("app container exposes ports %v", app.Ports)
			}
			ports := map[string]int32{}
			for _, p := range side.Ports {
				ports[p.Name] = p.ContainerPort
			}
			for _, s := range r.services {
				for _, p := range s.Spec.Ports {
					if _, ok := ports[p.TargetPort.StrVal]; !ok {
						t.Errorf("Service %s port %s targets %v, not a sidecar port", s.Name, p.Name, p.TargetPort)
					}
				}
			}
			if r.services[0].Spec.Ports[0].TargetPort.StrVal != "http" {
				t.Errorf("main Service does not target the sidecar's http port")
			}
			if d.Spec.Template.Annotations["checksum/config"] == "" {
				t.Error("no checksum/config annotation")
			}
			// On by default: only the sidecar port from anywhere, the admin
			// port from a named namespace, so an app bound to 0.0.0.0 is
			// not reachable around the gate.
			if p := r.policy; p == nil {
				t.Error("no NetworkPolicy rendered")
			} else {
				if len(p.Spec.Ingress) != 2 || len(p.Spec.Ingress[0].From) != 0 || len(p.Spec.Ingress[0].Ports) != 1 || p.Spec.Ingress[0].Ports[0].Port.StrVal != "http" {
					t.Errorf("NetworkPolicy does not open only the sidecar port to everyone: %+v", p.Spec.Ingress)
				}
				if len(p.Spec.Ingress) == 2 && (len(p.Spec.Ingress[1].From) != 1 || p.Spec.Ingress[1].From[0].NamespaceSelector == nil ||
					len(p.Spec.Ingress[1].From[0].NamespaceSelector.MatchLabels)+len(p.Spec.Ingress[1].From[0].NamespaceSelector.MatchExpressions) == 0) {
					t.Errorf("the admin port is open to every namespace: %+v", p.Spec.Ingress[1])
				}
			}
			// helm test checks the app port is closed through the Service.
			if r.testPod == nil || len(r.testPod.Spec.Containers) != 2 || r.testPod.Spec.Containers[1].Name != "app-port-closed" {
				t.Error("the helm test pod does not check that the app port is unreachable")
			}
			// No Secret is rendered: secrets are referenced, never inlined.
			if r.kinds["Secret"] != 0 {
				t.Error("the chart renders a Secret")
			}
			if strings.Contains(out, "BEGIN") || passwordSetting.MatchString(out) {
				t.Error("rendered output looks like it carries secret material")
			}

			// The generated config is accepted by totpgate itself.
			cm := r.configMaps["rel-totpgate"]
			if cm == nil {
				t.Fatalf("no config map; have %v", r.configMaps)
			}
			cfg := loadConfig(t, cm.Data["config.yaml"])
			if cfg.Upstream.URL != fmt.Sprintf("http://127.0.0.1:%d", 3000) {
				t.Errorf("upstream %s", cfg.Upstream.URL)
			}
		})
	}
}

// passwordSetting is a password given as a value (a route path such as
// /settings/password is not one).
var passwordSetting = regexp.MustCompile(`(?i)password["']?\s*[:=]`)

// loadConfig loads a rendered config.yaml as totpgate serve does and
// fails the test when totpgate would refuse it.
func loadConfig(t *testing.T, yaml string) config.Config {
	t.Helper()
	file := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	l := config.NewLoader(fs)
	if err := fs.Parse([]string{"--config", file}); err != nil {
		t.Fatal(err)
	}
	cfg, err := l.Load(func(string) string { return "" })
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		t.Fatalf("totpgate rejects the chart's config: %v\n%s", err, yaml)
	}
	return cfg
}

// The chart's values for trusted devices, the session credential and
// step-up routes reach totpgate's configuration as written.
func TestStepUpAndDevicesScenario(t *testing.T) {
	t.Parallel()
	out, err := render(t, []string{filepath.Join(chart, "ci", "stepup-values.yaml")})
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	cfg := loadConfig(t, decode(t, out).configMaps["rel-totpgate"].Data["config.yaml"])
	if cfg.MFA.TrustedDeviceTTL != 168*time.Hour {
		t.Errorf("mfa.trusted_device_ttl = %v, want 168h", cfg.MFA.TrustedDeviceTTL)
	}
	if len(cfg.Session.Credentials) != 1 || cfg.Session.Credentials[0] != "cookie:connect.sid" {
		t.Errorf("session.credentials = %v", cfg.Session.Credentials)
	}
	if r := cfg.StepUp.Routes; len(r) != 1 || r[0].Path != "/settings/password" || len(r[0].Methods) != 1 || r[0].Methods[0] != "POST" || r[0].MaxAge != 5*time.Minute {
		t.Errorf("step_up.routes = %+v", r)
	}
	// The defaults keep the documented default and add no step-up.
	out, err = render(t, nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	def := loadConfig(t, decode(t, out).configMaps["rel-totpgate"].Data["config.yaml"])
	if def.MFA.TrustedDeviceTTL != 720*time.Hour || len(def.StepUp.Routes) != 0 {
		t.Errorf("defaults: trusted_device_ttl %v, step_up.routes %v", def.MFA.TrustedDeviceTTL, def.StepUp.Routes)
	}
}

func TestProductionScenario(t *testing.T) {
	t.Parallel()
	out, err := render(t, []string{filepath.Join(chart, "ci", "vault-postgres-values.yaml")})
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	r := decode(t, out)
	if *r.deployment.Spec.Replicas != 3 || r.kinds["PodDisruptionBudget"] != 1 || r.kinds["NetworkPolicy"] != 1 || r.kinds["PersistentVolumeClaim"] != 0 {
		t.Fatalf("kinds %v", r.kinds)
	}
	if r.monitor == nil || r.monitor.Spec.Endpoints[0].Port != "admin" || r.monitor.Spec.Endpoints[0].Path != "/metrics" {
		t.Fatalf("service monitor %+v", r.monitor)
	}
	if r.rule == nil || len(r.rule.Spec.Groups) == 0 || len(r.rule.Spec.Groups[0].Rules) < 5 {
		t.Fatalf("prometheus rule %+v", r.rule)
	}
	if _, ok := r.configMaps["rel-totpgate-dashboard"]; !ok {
		t.Fatal("no dashboard ConfigMap")
	}
	spec := r.deployment.Spec.Template.Spec
	if spec.AutomountServiceAccountToken == nil || !*spec.AutomountServiceAccountToken {
		t.Error("Vault Kubernetes auth needs the service-account token mounted")
	}
	cfg := r.configMaps["rel-totpgate"].Data["config.yaml"]
	for _, want := range []string{"driver: postgres", "dsn_file: /etc/totpgate/secrets/dsn", "backend: vault", "method: kubernetes", "token_file: /etc/totpgate/secrets/admin-token"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
}

func TestConfigChangeRollsPods(t *testing.T) {
	t.Parallel()
	a, err := render(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := render(t, nil, "mfa.issuer=Other")
	if err != nil {
		t.Fatal(err)
	}
	ca := decode(t, a).deployment.Spec.Template.Annotations["checksum/config"]
	cb := decode(t, b).deployment.Spec.Template.Annotations["checksum/config"]
	if ca == cb {
		t.Fatal("changing the config does not change checksum/config")
	}
}

func TestValuesAreChecked(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		sets []string
		want string
	}{
		{"wrong type", []string{"replicaCount=three"}, "replicaCount"},
		{"unknown key", []string{"sidecar.imagee.tag=x"}, "imagee"},
		{"bad enum", []string{"sidecar.logLevel=loud"}, "logLevel"},
		{"unknown driver", []string{"store.driver=mysql"}, "driver"},
		{"port out of range", []string{"sidecar.port=70000"}, "port"},
		{"replicas on sqlite", []string{"replicaCount=2"}, "store.driver postgres"},
		{"postgres without DSN", []string{"store.driver=postgres"}, "dsnSecret"},
		{"vault without address", []string{"keyring.backend=vault"}, "keyring.vault.address"},
		{"step-up route without max_age", []string{"stepUp.routes[0].path=/settings/password"}, "max_age"},
		{"trusted device TTL not a duration", []string{"mfa.trustedDeviceTTL=a month"}, "trustedDeviceTTL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := render(t, nil, tc.sets...)
			if err == nil || !strings.Contains(out, tc.want) {
				t.Fatalf("helm template %v: err %v, want an error naming %q:\n%s", tc.sets, err, tc.want, out)
			}
		})
	}
}
