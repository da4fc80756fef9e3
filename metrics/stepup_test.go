package metrics_test

import (
	"context"
	"strings"
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
	// Every event of the configured route, not_found and error of the
	// unknown one: no label value nobody configured.
	want := `
# HELP totpgate_step_up_events_total Requests to step-up routes and their completions (POST {prefix}/step-up), by configured route (unknown: a completion whose challenge was not found) and event: required (held, challenge issued), passed_code, passed_recovery_code (sent to the app), invalid, replay_refused, locked, not_found, error (completion refused), refused_enrollment_required, refused_too_large, refused_unavailable, refused_busy, refused_bad_request, refused_rate_limited (refused, nothing held), upstream_unavailable (passed, but the app could not be reached; not sent again).
# TYPE totpgate_step_up_events_total counter
totpgate_step_up_events_total{event="error",route="/settings/password"} 0
totpgate_step_up_events_total{event="error",route="unknown"} 1
totpgate_step_up_events_total{event="invalid",route="/settings/password"} 1
totpgate_step_up_events_total{event="locked",route="/settings/password"} 0
totpgate_step_up_events_total{event="not_found",route="/settings/password"} 0
totpgate_step_up_events_total{event="not_found",route="unknown"} 1
totpgate_step_up_events_total{event="passed_code",route="/settings/password"} 1
totpgate_step_up_events_total{event="passed_recovery_code",route="/settings/password"} 1
totpgate_step_up_events_total{event="refused_bad_request",route="/settings/password"} 0
totpgate_step_up_events_total{event="refused_busy",route="/settings/password"} 0
totpgate_step_up_events_total{event="refused_enrollment_required",route="/settings/password"} 0
totpgate_step_up_events_total{event="refused_rate_limited",route="/settings/password"} 0
totpgate_step_up_events_total{event="refused_too_large",route="/settings/password"} 1
totpgate_step_up_events_total{event="refused_unavailable",route="/settings/password"} 0
totpgate_step_up_events_total{event="replay_refused",route="/settings/password"} 0
totpgate_step_up_events_total{event="required",route="/settings/password"} 2
totpgate_step_up_events_total{event="upstream_unavailable",route="/settings/password"} 1
# HELP totpgate_recovery_codes_used_total Recovery codes spent, by flow: login, challenge, step_up, api.
# TYPE totpgate_recovery_codes_used_total counter
totpgate_recovery_codes_used_total{flow="api"} 0
totpgate_recovery_codes_used_total{flow="challenge"} 0
totpgate_recovery_codes_used_total{flow="login"} 0
totpgate_recovery_codes_used_total{flow="step_up"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "totpgate_step_up_events_total", "totpgate_recovery_codes_used_total"); err != nil {
		t.Fatal(err)
	}
}
