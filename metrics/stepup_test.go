package metrics_test

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/totpgate/totpgate/audit"
	"github.com/totpgate/totpgate/metrics"
)

// Step-up events are counted under their configured route; a route nobody
// configured (a made-up path, the API operation of a completion whose
// challenge was not found) never becomes a label value.
func TestStepUpEventsHaveBoundedRoutes(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	rec := metrics.NewRecorder(reg, []string{"/login"}, []string{"/settings/password"})
	ctx := context.Background()
	for _, e := range []audit.Event{
		{Name: audit.StepUpRequired, Route: "/settings/password", Outcome: "challenge_issued"},
		{Name: audit.StepUpRequired, Route: "/settings/password", Outcome: "challenge_issued"},
		{Name: audit.StepUpPassed, Route: "/settings/password", Outcome: "totp"},
		{Name: audit.StepUpPassed, Route: "/settings/password", Outcome: "recovery_code"},
		{Name: audit.StepUpFailed, Route: "/settings/password", Outcome: "invalid_code"},
		{Name: audit.StepUpFailed, Route: "CompleteStepUp", Outcome: "challenge_not_found"},
		{Name: audit.StepUpFailed, Route: "/made/up/path", Outcome: "unavailable"},
		{Name: audit.StepUpRefused, Route: "/settings/password", Outcome: "too_large"},
		{Name: audit.StepUpRefused, Route: "/settings/password", Outcome: "upstream_unavailable"},
		{Name: audit.StepUpRefused, Route: "/settings/password", Outcome: "not-an-outcome"},
		{Name: audit.RecoveryCodeUsed, Route: "/settings/password", Outcome: "step_up"},
	} {
		rec.Record(ctx, e)
	}
	for _, tc := range []struct {
		route, event string
		want         float64
	}{
		{"/settings/password", "required", 2},
		{"/settings/password", "passed_code", 1},
		{"/settings/password", "passed_recovery_code", 1},
		{"/settings/password", "invalid", 1},
		{"/settings/password", "refused_too_large", 1},
		{"/settings/password", "upstream_unavailable", 1},
		{"/settings/password", "refused_enrollment_required", 0},
		{metrics.UnknownRoute, "not_found", 1},
		{metrics.UnknownRoute, "error", 1},
	} {
		if got := counterValue(t, reg, "totpgate_step_up_events_total", map[string]string{"route": tc.route, "event": tc.event}); got != tc.want {
			t.Errorf("step-up %s %s = %v, want %v", tc.route, tc.event, got, tc.want)
		}
	}
	n, err := testutil.GatherAndCount(reg, "totpgate_step_up_events_total")
	if err != nil {
		t.Fatal(err)
	}
	if n != 15+2 { // every event of the configured route, not_found and error of unknown: nothing else
		t.Errorf("%d step-up series, want 17 (a label value nobody configured appeared)", n)
	}
	if got := counterValue(t, reg, "totpgate_recovery_codes_used_total", map[string]string{"flow": "step_up"}); got != 1 {
		t.Errorf("recovery codes used in a step-up = %v, want 1", got)
	}
}

// counterValue is the value of the series of name with labels.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue series
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no series %s %v", name, labels)
	return 0
}
