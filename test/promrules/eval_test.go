package promrules_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/rules"
)

// target is the scrape target all series of a scenario come from, as the
// Prometheus Operator labels it.
var target = map[string]string{
	"namespace": "auth", "pod": "totpgate-5c9d7-x2k4p", "service": "totpgate-admin",
	"container": "totpgate", "endpoint": "admin", "job": "totpgate-admin", "instance": "totpgate-admin:9090",
}

// scenario is a run of scrapes, one every step, and the alerts it must
// raise. Every alert the rules file has is evaluated in every scenario:
// those not in fire must stay inactive throughout (never even pending).
type scenario struct {
	name   string
	source string // "golden" (built from the goldens) or "synthetic"
	step   time.Duration
	steps  int
	start  int                     // the step at which the story's events begin
	scrape func(step int) []series // what /metrics shows at that step
	// fire maps each alert that must fire to how long after start it may
	// fire at the earliest (its for: plus what the story needs).
	fire map[string]time.Duration
}

// outcome is what one alert did in a scenario.
type outcome struct {
	active     bool          // pending or firing at some step
	fired      bool          // firing at some step
	firedAfter time.Duration // since the scenario's start, first firing
	summary    string        // the description of the first alert that fired
}

// loadCommand writes the scrapes as a promqltest "load" command (the
// input_series format of promtool test rules). A series that leaves the
// scrape gets a stale marker, as Prometheus's scraper writes one.
func loadCommand(sc scenario) string {
	vals := map[string][]string{}
	for i := range sc.steps {
		seen := map[string]bool{}
		for _, s := range sc.scrape(i) {
			desc := seriesDesc(s)
			if seen[desc] {
				panic("scenario " + sc.name + ": series twice in one scrape: " + desc)
			}
			seen[desc] = true
			for len(vals[desc]) < i {
				vals[desc] = append(vals[desc], "_")
			}
			vals[desc] = append(vals[desc], strconv.FormatFloat(s.value, 'g', -1, 64))
		}
		for desc, v := range vals {
			if !seen[desc] {
				if last := v[len(v)-1]; last == "_" || last == "stale" {
					vals[desc] = append(v, "_")
				} else {
					vals[desc] = append(v, "stale")
				}
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "load %s\n", sc.step)
	for _, desc := range slices.Sorted(maps.Keys(vals)) {
		fmt.Fprintf(&b, "  %s %s\n", desc, strings.Join(vals[desc], " "))
	}
	return b.String()
}

// seriesDesc is the series in PromQL notation, target labels added.
func seriesDesc(s series) string {
	all := maps.Clone(target)
	maps.Copy(all, s.labels)
	parts := make([]string, 0, len(all))
	for _, k := range slices.Sorted(maps.Keys(all)) {
		parts = append(parts, k+"="+strconv.Quote(all[k]))
	}
	return s.name + "{" + strings.Join(parts, ", ") + "}"
}

// alertingRules builds the rules as the rule manager does from a parsed
// file; each scenario gets fresh ones, since a rule keeps alert state.
func alertingRules(groups *rulefmt.RuleGroups) ([]*rules.AlertingRule, error) {
	var out []*rules.AlertingRule
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			expr, err := promqlParser.ParseExpr(r.Expr)
			if err != nil {
				return nil, fmt.Errorf("alert %s: %w", r.Alert, err)
			}
			out = append(out, rules.NewAlertingRule(r.Alert, expr, time.Duration(r.For), time.Duration(r.KeepFiringFor),
				labels.FromMap(r.Labels), labels.FromMap(r.Annotations), labels.EmptyLabels(), "", true,
				slog.New(slog.DiscardHandler)))
		}
	}
	return out, nil
}

var labelRef = regexp.MustCompile(`\$labels\.([A-Za-z_][A-Za-z0-9_]*)`)

// evaluate loads the scenario into a TSDB, then evaluates every rule at
// every step as a rule group with that interval does. Besides the
// outcomes it reports templates that fail to expand on a real alert and
// $labels.x references to a label the alert does not carry (the
// expression aggregated it away: the text would say nothing).
func evaluate(t *testing.T, sc scenario, groups *rulefmt.RuleGroups) (map[string]outcome, error) {
	t.Helper()
	rs, err := alertingRules(groups)
	if err != nil {
		return nil, err
	}
	storage := promqltest.LoadedStorage(t, loadCommand(sc))
	engine := promql.NewEngine(promql.EngineOpts{
		MaxSamples: 1_000_000,
		Timeout:    time.Minute,
		Parser:     promqlParser,
	})
	t.Cleanup(func() { _ = engine.Close() })
	query := rules.EngineQueryFunc(engine, storage)

	out := map[string]outcome{}
	var errs []error
	t0 := time.Unix(0, 0).UTC()
	start := t0.Add(time.Duration(sc.start) * sc.step)
	for i := range sc.steps {
		ts := t0.Add(time.Duration(i) * sc.step)
		for _, r := range rs {
			if _, err := r.Eval(context.Background(), 0, ts, query, nil, 0); err != nil {
				return nil, fmt.Errorf("alert %s at %s: %w", r.Name(), ts.Sub(t0), err)
			}
			o := out[r.Name()]
			for _, a := range r.ActiveAlerts() {
				o.active = true
				if a.State != rules.StateFiring || o.fired {
					continue
				}
				o.fired, o.firedAfter, o.summary = true, ts.Sub(start), a.Annotations.Get("description")
				errs = append(errs, checkExpanded(r, a)...)
			}
			out[r.Name()] = o
		}
	}
	return out, errors.Join(errs...)
}

func checkExpanded(r *rules.AlertingRule, a *rules.Alert) []error {
	var errs []error
	uses := func(l labels.Label) {
		for _, m := range labelRef.FindAllStringSubmatch(l.Value, -1) {
			if a.Labels.Get(m[1]) == "" {
				errs = append(errs, fmt.Errorf("alert %s: %s uses $labels.%s, which the alert does not carry (labels %s)", r.Name(), l.Name, m[1], a.Labels))
			}
		}
	}
	r.Labels().Range(uses)
	r.Annotations().Range(uses)
	a.Annotations.Range(func(l labels.Label) {
		if strings.Contains(l.Value, "<error expanding template") {
			errs = append(errs, fmt.Errorf("alert %s: annotation %s: %s", r.Name(), l.Name, l.Value))
		}
	})
	return errs
}

// check compares the outcomes with what the scenario says must happen.
func (sc scenario) check(out map[string]outcome) []error {
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(sc.fire)) {
		if _, ok := out[name]; !ok {
			errs = append(errs, fmt.Errorf("%s: the rules have no alert %s", sc.name, name))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(out)) {
		o := out[name]
		earliest, want := sc.fire[name]
		switch {
		case want && !o.fired:
			errs = append(errs, fmt.Errorf("%s: %s did not fire", sc.name, name))
		case want && o.firedAfter < earliest:
			errs = append(errs, fmt.Errorf("%s: %s fired %s after the start, before %s", sc.name, name, o.firedAfter, earliest))
		case !want && o.active:
			errs = append(errs, fmt.Errorf("%s: %s went pending or firing (fired: %v)", sc.name, name, o.fired))
		}
	}
	return errs
}
