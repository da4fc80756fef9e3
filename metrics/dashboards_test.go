package metrics_test

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

var metricName = regexp.MustCompile(`\btotpgate_[a-z_]+\b`)

// known returns the metric names a scrape can show, histogram series
// included.
func known(t *testing.T) map[string]bool {
	t.Helper()
	mfs, err := allMetrics(t).Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, mf := range mfs {
		out[mf.GetName()] = true
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			out[mf.GetName()+s] = true
		}
	}
	return out
}

func checkNames(t *testing.T, where, expr string, names map[string]bool) {
	t.Helper()
	found := metricName.FindAllString(expr, -1)
	if len(found) == 0 {
		t.Errorf("%s: names no totpgate metric: %s", where, expr)
	}
	for _, n := range found {
		if !names[n] {
			t.Errorf("%s: metric %s does not exist", where, n)
		}
	}
}

func TestDashboardQueriesNameRealMetrics(t *testing.T) {
	names := known(t)
	b, err := os.ReadFile("../charts/totpgate/files/dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Panels) < 8 {
		t.Fatalf("dashboard has %d panels", len(d.Panels))
	}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			checkNames(t, "panel "+p.Title, tg.Expr, names)
			if strings.Count(tg.Expr, "(") != strings.Count(tg.Expr, ")") {
				t.Errorf("panel %q: unbalanced parentheses", p.Title)
			}
		}
	}
}

// TestAlertRules is the quick check of the rules file's shape and the
// metrics it names, inside the main module; test/promrules (a module of
// its own, run by make test) parses it with Prometheus's rule parser and
// evaluates every alert against the golden scrapes.
func TestAlertRules(t *testing.T) {
	names := known(t)
	b, err := os.ReadFile("../charts/totpgate/files/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Name  string
			Rules []struct {
				Alert       string
				Expr        string
				For         string
				Labels      map[string]string
				Annotations map[string]string
			}
		}
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || seen[r.Alert] {
				t.Errorf("rule without a unique alert name: %q", r.Alert)
			}
			seen[r.Alert] = true
			checkNames(t, "alert "+r.Alert, r.Expr, names)
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s needs severity, summary and description", r.Alert)
			}
			if strings.Count(r.Expr, "(") != strings.Count(r.Expr, ")") {
				t.Errorf("alert %s: unbalanced parentheses", r.Alert)
			}
		}
	}
	for _, want := range []string{"TotpgateBruteForce", "TotpgateLockouts", "TotpgateVaultErrors", "TotpgateSecretsOnOldKeyVersions"} {
		if !seen[want] {
			t.Errorf("missing alert %s", want)
		}
	}
}
