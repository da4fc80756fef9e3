package promrules_test

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/rulefmt"
)

// fixture is what every test reads: the rules file, as text and as
// checked groups, the metric reference and the goldens.
type fixture struct {
	src    []byte
	k      known
	g      goldens
	groups *rulefmt.RuleGroups
}

// setup reads the fixture, failing when the goldens and the reference
// disagree or the shipped rules do not pass the checker.
func setup(t *testing.T) fixture {
	t.Helper()
	src, err := os.ReadFile(rulesPath)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := readReference(referencePath)
	if err != nil {
		t.Fatal(err)
	}
	k := known{ref: ref, values: labelValues{}}
	var g goldens
	for name, dst := range map[string]*golden{
		"metrics_bruteforce":      &g.bruteForce,
		"metrics_before_rotation": &g.before,
		"metrics_after_rotation":  &g.after,
	} {
		if *dst, err = readGolden(name); err != nil {
			t.Fatal(err)
		}
		if err := checkGolden(name, *dst, ref); err != nil {
			t.Fatal(err)
		}
		k.values.add(*dst)
	}
	groups, err := checkRules(src, k)
	if err != nil {
		t.Fatal(err)
	}
	return fixture{src: src, k: k, g: g, groups: groups}
}

// The shipped rules load in Prometheus and name only what the binary
// exports, with labels and label values it really has.
func TestAlertRulesCheck(t *testing.T) {
	t.Parallel()
	f := setup(t)
	if n := len(f.groups.Groups[0].Rules); n < 7 {
		t.Fatalf("%d alerts, want the 7 the README lists", n)
	}
}

// mutate returns src with old replaced by new, failing when old is not in
// it exactly once (a mutation that changes nothing proves nothing).
func mutate(t *testing.T, src []byte, old, new string) []byte {
	t.Helper()
	if n := strings.Count(string(src), old); n != 1 {
		t.Fatalf("mutation target %q found %d times", old, n)
	}
	return []byte(strings.Replace(string(src), old, new, 1))
}

// The checker rejects each kind of mistake, made to a copy of the rules.
func TestCheckerRejectsBrokenRules(t *testing.T) {
	t.Parallel()
	f := setup(t)
	for _, tc := range []struct{ name, old, new, want string }{
		{"metric the binary does not export", "increase(totpgate_lockouts_started_total[", "increase(totpgate_lockouts_total[",
			"metric totpgate_lockouts_total is not exported"},
		{"instant vector where a range is needed", "increase(totpgate_lockouts_started_total[15m])", "increase(totpgate_lockouts_started_total)",
			"expected type range vector"},
		{"syntax error", `(rate(totpgate_login_interceptions_total{outcome="error"}[5m])) > 0`, `(rate(totpgate_login_interceptions_total{outcome="error"}[5m]) > 0`,
			"could not parse expression"},
		{"unknown function", "delta(totpgate_rewrap_remaining_secrets", "deltas(totpgate_rewrap_remaining_secrets",
			"unknown function"},
		{"label the metric does not have", `{backend="vault", result!="ok"}`, `{backend="vault", status!="ok"}`,
			`has no label "status"`},
		{"label value that does not exist", `{outcome="error"}`, `{outcome="errors"}`,
			`value "errors"`},
		{"regex branch that does not exist", `{result=~"dropped|failed"}`, `{result=~"dropped|fail"}`,
			`value "fail"`},
		{"grouping by a label nothing carries", "max by (namespace, backend, version)", "max by (namespace, backend, versoin)",
			`label "versoin" is on no metric`},
		{"broken annotation template", "on {{ $labels.pod }}; someone", "on {{ $labels.pod }; someone",
			"template"},
		{"unknown field", "        for: 24h\n", "        for_: 24h\n",
			"not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := checkRules(mutate(t, f.src, tc.old, tc.new), f.k)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error with %q, got %v", tc.want, err)
			}
		})
	}
	t.Run("golden series the reference does not describe", func(t *testing.T) {
		t.Parallel()
		ref := maps.Clone(f.k.ref)
		delete(ref, "totpgate_users")
		g, err := readGolden("metrics_bruteforce")
		if err != nil {
			t.Fatal(err)
		}
		if err := checkGolden("metrics_bruteforce", g, ref); err == nil || !strings.Contains(err.Error(), "totpgate_users is not in docs/metrics.md") {
			t.Fatalf("got %v", err)
		}
	})
}

// Each alert does on series built from the goldens (and, where no golden
// can show the state, from synthetic series) what it is for.
func TestAlertsFireOnScenarios(t *testing.T) {
	t.Parallel()
	f := setup(t)
	for _, sc := range scenarios(f.g) {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			for i := range sc.steps {
				if err := f.k.checkScrape(sc.scrape(i)); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
			}
			out, err := evaluate(t, sc, f.groups)
			if err != nil {
				t.Fatal(err)
			}
			for _, err := range sc.check(out) {
				t.Error(err)
			}
			for _, name := range slices.Sorted(maps.Keys(out)) {
				if o := out[name]; o.fired {
					t.Logf("%s fired %s after the start: %s", name, o.firedAfter, o.summary)
				}
			}
		})
	}
}

// The evaluation catches what parsing cannot: mutated rules that still
// parse but no longer fire, fire too early, or describe a label they
// aggregated away.
func TestEvaluationRejectsBrokenRules(t *testing.T) {
	t.Parallel()
	f := setup(t)
	byName := map[string]scenario{}
	for _, sc := range scenarios(f.g) {
		byName[sc.name] = sc
	}
	for _, tc := range []struct{ name, scenario, old, new, want string }{
		{"threshold nobody reaches", "brute-force run every minute",
			"increase(totpgate_lockouts_started_total[15m])) > 5", "increase(totpgate_lockouts_started_total[15m])) > 500",
			"TotpgateLockouts did not fire"},
		{"for: dropped", "brute-force run ten times every 30s",
			"        for: 5m\n        labels:\n          severity: warning\n        annotations:\n          summary: Many wrong",
			"        labels:\n          severity: warning\n        annotations:\n          summary: Many wrong",
			"TotpgateBruteForce fired "},
		{"description names a label aggregated away", "brute-force run every minute",
			"sum by (namespace, pod) (increase(totpgate_lockouts_started_total", "sum by (namespace) (increase(totpgate_lockouts_started_total",
			"uses $labels.pod, which the alert does not carry"},
		{"alert that fires when it must not", "brute-force test once",
			"invalid|replay_refused\"}[5m])) + sum", "invalid|replay_refused\"}[5m])) * 1000 + sum",
			"TotpgateBruteForce went pending or firing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sc, ok := byName[tc.scenario]
			if !ok {
				t.Fatalf("no scenario %q", tc.scenario)
			}
			groups, err := checkRules(mutate(t, f.src, tc.old, tc.new), f.k)
			if err != nil {
				t.Fatal(err)
			}
			out, err := evaluate(t, sc, groups)
			errs := sc.check(out)
			if err != nil {
				errs = append(errs, err)
			}
			if got := errors.Join(errs...); got == nil || !strings.Contains(got.Error(), tc.want) {
				t.Fatalf("want an error with %q, got %v", tc.want, got)
			}
		})
	}
}

// Every alert fires in some scenario; one that only a synthetic scenario
// fires says in noGolden why no golden can.
func TestEveryAlertIsExercised(t *testing.T) {
	t.Parallel()
	f := setup(t)
	firedBy := map[string]map[string]bool{} // alert → sources
	for _, sc := range scenarios(f.g) {
		for name := range sc.fire {
			if firedBy[name] == nil {
				firedBy[name] = map[string]bool{}
			}
			firedBy[name][sc.source] = true
		}
	}
	inFile := map[string]bool{}
	for _, gr := range f.groups.Groups {
		for _, r := range gr.Rules {
			inFile[r.Alert] = true
			switch {
			case len(firedBy[r.Alert]) == 0:
				t.Errorf("%s: no scenario makes it fire", r.Alert)
			case firedBy[r.Alert]["golden"] && noGolden[r.Alert] != "":
				t.Errorf("%s: a golden scenario fires it; drop it from noGolden", r.Alert)
			case !firedBy[r.Alert]["golden"] && noGolden[r.Alert] == "":
				t.Errorf("%s: only synthetic scenarios fire it; say in noGolden why no golden can", r.Alert)
			}
		}
	}
	for name := range noGolden {
		if !inFile[name] {
			t.Errorf("noGolden names %s, which the rules do not have", name)
		}
	}
}

// checkScrape holds a scenario's scrape, synthetic series included, to
// what the binary can export.
func (k known) checkScrape(ss []series) error {
	if err := checkGolden("scenario", ss, k.ref); err != nil {
		return err
	}
	var errs []error
	for _, s := range ss {
		for l, v := range s.labels {
			if !k.values[s.name][l][v] && !containsWord(k.ref[s.name].meaning, v) {
				errs = append(errs, fmt.Errorf("%s{%s=%q}: value in no golden and not in the help text", s.name, l, v))
			}
		}
	}
	return errors.Join(errs...)
}
