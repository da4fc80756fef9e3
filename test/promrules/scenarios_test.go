package promrules_test

import (
	"slices"
	"time"
)

// goldens are the scrapes of the real binary the scenarios are built from.
type goldens struct {
	bruteForce golden // after TestMetricsAfterBruteForce: 4 wrong codes, the 5th locks, 1 lockout
	before     golden // TestMetricsAfterRotation before rotating: 3 secrets on key version 1
	after      golden // the same after rotate and rewrap: 3 secrets on version 2, rewrap done
}

// scenarios tells, per alert, what the goldens can prove. Those built from
// goldens replay what the binary really exported; the synthetic ones stand
// in where no golden records the state an alert is about (see noGolden),
// with series shaped as docs/metrics.md describes them.
func scenarios(g goldens) []scenario {
	// The binary pre-creates every challenge outcome at 0
	// (metrics.NewRecorder), so its scrape has them; the brute-force
	// golden leaves that family out (the test compares the families the
	// one-call login moves). TotpgateBruteForce adds both families and
	// needs both present.
	bruteForce := append(slices.Clone(g.bruteForce), challengesAtZero()...)
	return []scenario{
		{
			// One person mistyping five codes and getting locked is no attack.
			name: "brute-force test once", source: "golden",
			step: 30 * time.Second, steps: 40, start: 10,
			scrape: func(i int) []series { return runs(bruteForce, min(1, runsSince(i, 10, 1))) },
		},
		{
			// The brute-force run against a new user every minute: one lockout a
			// minute, but only 4/60 wrong codes a second.
			name: "brute-force run every minute", source: "golden",
			step: time.Minute, steps: 30, start: 5,
			scrape: func(i int) []series { return runs(bruteForce, runsSince(i, 5, 1)) },
			// The sixth lockout (5m after the first) is more than 5 in 15m.
			fire: map[string]time.Duration{"TotpgateLockouts": 5 * time.Minute},
		},
		{
			// Ten runs every 30s: 40 wrong codes per 30s, 1.33 a second. A brute
			// force must not look like a second-factor outage: the error outcome
			// stays 0, so TotpgateSecondFactorErrors stays quiet.
			name: "brute-force run ten times every 30s", source: "golden",
			step: 30 * time.Second, steps: 40, start: 4,
			scrape: func(i int) []series { return runs(bruteForce, runsSince(i, 4, 10)) },
			// The 5m rate passes 1/s some 3.5m into the attack, then for: 5m.
			fire: map[string]time.Duration{"TotpgateBruteForce": 8 * time.Minute, "TotpgateLockouts": 0},
		},
		{
			// The rotation test as it ran: rotate and rewrap between two scrapes,
			// the version-1 series goes stale as version 2 appears.
			name: "rotation then rewrap", source: "golden",
			step: time.Minute, steps: 120, start: 30,
			scrape: func(i int) []series {
				if i < 30 {
					return g.before
				}
				return overlay(g.before, g.after)
			},
		},
		{
			// A rewrap that stopped half way: secrets on both versions (the
			// before and after goldens' stored secrets together) for over a day,
			// scraped and evaluated every 5m to keep the day short: the alert
			// reads one gauge.
			name: "rewrap left half done", source: "golden",
			step: 5 * time.Minute, steps: 12 + 12*24 + 6, start: 12,
			scrape: func(i int) []series {
				if i < 12 {
					return g.before
				}
				return append(overlay(g.before, g.after), named(g.before, "totpgate_stored_secrets")...)
			},
			fire: map[string]time.Duration{"TotpgateSecretsOnOldKeyVersions": 24 * time.Hour},
		},
		{
			// Known gap, kept visible: a rotation after which nothing writes a
			// secret leaves every secret on version 1, one version only, so the
			// alert (which compares the versions in use with each other, not
			// with the current key version, which no metric exports) stays quiet.
			// Should the alert learn the current version, this must fire. It
			// never even goes pending, so two hours show it would never fire.
			name: "rotation, no rewrap, no new secret (known gap)", source: "golden",
			step: time.Minute, steps: 120, start: 30,
			scrape: func(i int) []series {
				if i < 30 {
					return g.before
				}
				return overlay(g.before, named(g.after, "totpgate_key_admin_operations_total"))
			},
		},
		{
			// Vault stops answering: decrypts fail (a new series, as the binary
			// only pre-creates result="ok"), logins of enrolled users fail closed.
			name: "Vault unavailable", source: "synthetic",
			step: 30 * time.Second, steps: 30, start: 4,
			scrape: func(i int) []series {
				n := float64(max(0, i-4+1))
				out := []series{
					counter("totpgate_keyring_operations_total", 500+10*float64(i), "backend", "vault", "op", "decrypt", "result", "ok"),
					counter("totpgate_login_interceptions_total", 6*n, "outcome", "error", "route", "/login"),
				}
				if n > 0 {
					out = append(out, counter("totpgate_keyring_operations_total", 6*n, "backend", "vault", "op", "decrypt", "result", "unavailable"))
				}
				return out
			},
			fire: map[string]time.Duration{"TotpgateVaultErrors": 5 * time.Minute, "TotpgateSecondFactorErrors": 2 * time.Minute},
		},
		{
			// A rewrap that handled 20 secrets and then stopped moving.
			name: "rewrap stuck", source: "synthetic",
			step: 30 * time.Second, steps: 90, start: 4,
			scrape: func(i int) []series {
				running, remaining := 0.0, 100.0
				if i >= 4 {
					running = 1
				}
				if i >= 6 {
					remaining = 80
				}
				return []series{gauge("totpgate_rewrap_running", running), gauge("totpgate_rewrap_remaining_secrets", remaining)}
			},
			// delta() over 15m sees the drop for 15m, then for: 15m.
			fire: map[string]time.Duration{"TotpgateRewrapStalled": 30 * time.Minute},
		},
		{
			// A long rewrap that moves: no page, however long it runs.
			name: "rewrap progressing", source: "synthetic",
			step: 30 * time.Second, steps: 150, start: 4,
			scrape: func(i int) []series {
				running, remaining := 0.0, 1000.0
				if i >= 4 {
					running, remaining = 1, 1000-5*float64(i-3)
				}
				return []series{gauge("totpgate_rewrap_running", running), gauge("totpgate_rewrap_remaining_secrets", remaining)}
			},
		},
		{
			// The webhook receiver goes away: retries give up, the queue fills.
			// The binary pre-creates all three result series at 0.
			name: "webhook receiver down", source: "synthetic",
			step: 30 * time.Second, steps: 30, start: 10,
			scrape: func(i int) []series {
				failed := float64(max(0, i-10+1))
				return []series{
					counter("totpgate_audit_webhook_events_total", 3*float64(min(i, 10)), "result", "delivered"),
					counter("totpgate_audit_webhook_events_total", failed, "result", "failed"),
					counter("totpgate_audit_webhook_events_total", 0, "result", "dropped"),
				}
			},
			fire: map[string]time.Duration{"TotpgateAuditWebhookDropping": 0},
		},
	}
}

// challengesAtZero is the challenge family as a fresh process exports it.
func challengesAtZero() golden {
	var out golden
	for _, o := range []string{"passed_code", "passed_recovery_code", "invalid", "replay_refused", "locked", "not_found", "error"} {
		out = append(out, counter("totpgate_challenge_completions_total", 0, "outcome", o))
	}
	return out
}

// noGolden says, for each alert only a synthetic scenario fires, why no
// golden scrape can: the goldens record a brute force and a finished
// rotation on the local keyring, nothing else.
var noGolden = map[string]string{
	"TotpgateSecondFactorErrors":   "no golden has a login with outcome error (the store and Vault outage tests write none); the brute-force goldens prove it stays quiet during an attack",
	"TotpgateVaultErrors":          "the goldens come from the local keyring: no totpgate_keyring_operations_total{backend=\"vault\"} series",
	"TotpgateRewrapStalled":        "the rotation golden is taken after the rewrap succeeded: totpgate_rewrap_running is not in it and no golden shows a job that stops moving",
	"TotpgateAuditWebhookDropping": "no golden scrapes totpgate_audit_webhook_events_total (the webhook test checks deliveries, not /metrics)",
}

// runsSince is how many times the recorded run has happened by step i when
// it happens perStep times a step from step start on.
func runsSince(i, start int, perStep float64) float64 {
	return float64(max(0, i-start+1)) * perStep
}

// runs is the golden after n repetitions of what it recorded: counters
// times n (the process started at zero), gauges as they were.
func runs(g golden, n float64) []series {
	out := make([]series, len(g))
	for i, s := range g {
		out[i] = s
		if s.counter {
			out[i].value *= n
		}
	}
	return out
}

// overlay is base with each metric that top has replaced by top's series.
func overlay(base, top golden) []series {
	replaced := map[string]bool{}
	for _, s := range top {
		replaced[s.name] = true
	}
	var out []series
	for _, s := range base {
		if !replaced[s.name] {
			out = append(out, s)
		}
	}
	return append(out, top...)
}

func named(g golden, name string) golden {
	var out golden
	for _, s := range g {
		if s.name == name {
			out = append(out, s)
		}
	}
	return out
}

func counter(name string, v float64, kv ...string) series {
	return series{name: name, labels: pairs(kv), value: v, counter: true}
}

func gauge(name string, v float64, kv ...string) series {
	return series{name: name, labels: pairs(kv), value: v}
}

func pairs(kv []string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}
