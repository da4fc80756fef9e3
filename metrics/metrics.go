// Package metrics defines totpgate's Prometheus metrics, all registered on an
// injected registry, named totpgate_<subsystem>_<name>_<unit>, and with
// bounded labels only: never a user id, code or address.
//
// Most counters are fed by the audit events (Recorder implements
// audit.Recorder), so metrics and the audit log cannot disagree. The rest
// come from decorators (Keyring, Transport) and a collector that reads the
// store's counts on scrape, cached so a scrape stays cheap.
package metrics

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/totpgate/totpgate/audit"
	"github.com/totpgate/totpgate/keyring"
	"github.com/totpgate/totpgate/store"
)

// Recorder turns audit events into counters.
type Recorder struct {
	logins     *prometheus.CounterVec
	challenges *prometheus.CounterVec
	enrollment *prometheus.CounterVec
	admin      *prometheus.CounterVec
	recovery   *prometheus.CounterVec
	lockouts   prometheus.Counter
	keyOps     *prometheus.CounterVec
	revoked    *prometheus.CounterVec
	devices    *prometheus.CounterVec
	stepUp     *prometheus.CounterVec
	// stepUpRoutes are the configured step-up paths: the only values of
	// the step-up route label besides UnknownRoute.
	stepUpRoutes map[string]bool
}

var _ audit.Recorder = (*Recorder)(nil)

// revokeReasons are the values of the reason label of revoked sessions.
var revokeReasons = []string{"out_of_attempts", "locked", "expired", "reset"}

// deviceEvents are the trusted-device events (audit.Device*) by the
// values of the event label, each with the values of its reason label.
var deviceEvents = map[string]struct {
	name    string
	reasons []string
}{
	audit.DeviceTrusted:       {"trusted", []string{"login", "challenge", "self_service"}},
	audit.DeviceUsed:          {"used", []string{"login"}},
	audit.DeviceRevoked:       {"revoked", []string{"user", "others", "replaced", "disabled", "recovery_regenerated", "reset", "lockout"}},
	audit.DeviceReuseDetected: {"reuse_detected", []string{"revoked"}},
}

// Login outcomes, the values of the outcome label.
var loginOutcomes = []string{
	"passed_no_mfa", "passed_code", "passed_recovery_code", "passed_trusted_device", "mfa_required", "invalid",
	"replay_refused", "locked", "enrollment_required", "upstream_rejected", "error",
	"passed_no_session", "refused", "bad_request",
}

// Step-up events, the values of the event label: the challenge issued, a
// completion passed or refused, and a request refused without holding.
var stepUpEvents = []string{
	"required", "passed_code", "passed_recovery_code", "invalid", "replay_refused", "locked", "not_found", "error",
	"refused_enrollment_required", "refused_too_large", "refused_unavailable", "refused_busy", "refused_bad_request", "refused_rate_limited",
	"upstream_unavailable",
}

// UnknownRoute is the step-up route label of a completion whose challenge
// was not found (no route is known).
const UnknownRoute = "unknown"

// NewRecorder registers the event counters on reg. routes are the
// configured login routes and stepUpRoutes the configured step-up paths,
// pre-created so every series exists from start.
func NewRecorder(reg prometheus.Registerer, routes, stepUpRoutes []string) *Recorder {
	r := &Recorder{
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "totpgate_login_interceptions_total",
			Help: "Logins through an intercepted route, by route and outcome: passed_no_mfa, passed_code, passed_recovery_code, passed_trusted_device (no code: a trusted device of the user), mfa_required (challenge issued), invalid, replay_refused, locked, enrollment_required, upstream_rejected (the app refused the password), error (second factor or app could not be checked; refused), passed_no_session (the answer carried nothing that could be a session), refused (an answer the gate could not read or attribute, too large, or too many logins at once), bad_request (a login request the gate could not read unambiguously).",
		}, []string{"route", "outcome"}),
		challenges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "totpgate_challenge_completions_total",
			Help: "Second calls of a login (POST {prefix}/challenge), by outcome: passed_code, passed_recovery_code, invalid, replay_refused, locked, not_found, error.",
		}, []string{"outcome"}),
		enrollment: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "totpgate_enrollments_total",
			Help: "Enrollment steps, by event: started, confirmed, failed (a wrong or expired confirmation).",
		}, []string{"event"}),
		admin: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "totpgate_mfa_changes_total",
			Help: "Changes to a user's second factor, by action: disabled (by the user), reset and unlocked (by an admin), recovery_regenerated.",
		}, []string{"action"}),
		recovery: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "totpgate_recovery_codes_used_total",
			Help: "Recovery codes spent, by flow: login, challenge, step_up, api.",
		}, []string{"flow"}),
		lockouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "totpgate_lockouts_started_total",
			Help: "Users locked after too many failed second-factor attempts.",
		}),
		revoked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "totpgate_sessions_revoked_total",
			Help: "Held app sessions ended at the app (login.revoke_path), by reason (out_of_attempts, locked, expired, reset) and result (ok, refused: the app answered 4xx, failed: no answer after the retries).",
		}, []string{"reason", "result"}),
		devices: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "totpgate_mfa_device_events_total",
			Help: "Trusted-device events, by event and reason: trusted (login, challenge, self_service: where the user asked to remember the device), used (login: a login passed on one), revoked (user, others, replaced, disabled, recovery_regenerated, reset, lockout; one per revocation, whatever the number of devices), reuse_detected (revoked: a rotated-away token came back and its device was revoked).",
		}, []string{"event", "reason"}),
		stepUp: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "totpgate_step_up_events_total",
			Help: "Requests to step-up routes and their completions (POST {prefix}/step-up), by configured route (unknown: a completion whose challenge was not found) and event: required (held, challenge issued), passed_code, passed_recovery_code (sent to the app), invalid, replay_refused, locked, not_found, error (completion refused), refused_enrollment_required, refused_too_large, refused_unavailable, refused_busy, refused_bad_request, refused_rate_limited (refused, nothing held), upstream_unavailable (passed, but the app could not be reached; not sent again).",
		}, []string{"route", "event"}),
		stepUpRoutes: map[string]bool{},
		keyOps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "totpgate_key_admin_operations_total",
			Help: "Key administration through the admin API, by action: rotated, min_version_raised, rewrap_started.",
		}, []string{"action"}),
	}
	for _, route := range routes {
		for _, o := range loginOutcomes {
			r.logins.WithLabelValues(route, o)
		}
	}
	for _, o := range []string{"passed_code", "passed_recovery_code", "invalid", "replay_refused", "locked", "not_found", "error"} {
		r.challenges.WithLabelValues(o)
	}
	for _, e := range []string{"started", "confirmed", "failed"} {
		r.enrollment.WithLabelValues(e)
	}
	for _, a := range []string{"disabled", "reset", "unlocked", "recovery_regenerated"} {
		r.admin.WithLabelValues(a)
	}
	for _, route := range stepUpRoutes {
		r.stepUpRoutes[route] = true
		for _, e := range stepUpEvents {
			r.stepUp.WithLabelValues(route, e)
		}
	}
	if len(stepUpRoutes) > 0 {
		for _, e := range []string{"not_found", "error"} {
			r.stepUp.WithLabelValues(UnknownRoute, e)
		}
	}
	for _, f := range []string{"login", "challenge", "step_up", "api"} {
		r.recovery.WithLabelValues(f)
	}
	for _, a := range []string{"rotated", "min_version_raised", "rewrap_started"} {
		r.keyOps.WithLabelValues(a)
	}
	for _, why := range revokeReasons {
		for _, res := range []string{"ok", "refused", "failed"} {
			r.revoked.WithLabelValues(why, res)
		}
	}
	for _, ev := range deviceEvents {
		for _, why := range ev.reasons {
			r.devices.WithLabelValues(ev.name, why)
		}
	}
	reg.MustRegister(r.logins, r.challenges, r.enrollment, r.admin, r.recovery, r.lockouts, r.keyOps, r.revoked, r.devices, r.stepUp)
	return r
}

// Record implements audit.Recorder. Events from the login gate carry the
// route path; events from the API carry the operation name.
func (r *Recorder) Record(_ context.Context, e audit.Event) {
	gate := strings.HasPrefix(e.Route, "/")
	switch e.Name {
	case audit.LoginPassed:
		outcome := map[string]string{"no_mfa": "passed_no_mfa", "no_session": "passed_no_session", "totp": "passed_code", "recovery_code": "passed_recovery_code",
			"trusted_device": "passed_trusted_device"}[e.Outcome]
		if outcome == "" {
			return
		}
		r.login(gate, e.Route, outcome)
	case audit.LoginMFARequired:
		if e.Outcome == "enrollment_required" {
			r.login(gate, e.Route, "enrollment_required")
		} else {
			r.login(gate, e.Route, "mfa_required")
		}
	case audit.LoginFailed:
		switch e.Outcome {
		case "replay_refused", "locked":
			r.login(gate, e.Route, e.Outcome)
		case "challenge_not_found":
			r.login(gate, e.Route, "not_found")
		case "unavailable":
			r.login(gate, e.Route, "error")
		default:
			r.login(gate, e.Route, "invalid")
		}
	case audit.LoginReplayRefused:
		r.login(gate, e.Route, "replay_refused")
	case audit.LoginLocked:
		r.login(gate, e.Route, "locked")
	case audit.LoginError:
		r.login(gate, e.Route, "error")
	case audit.LoginRefused:
		if e.Outcome == "bad_request" {
			r.login(gate, e.Route, "bad_request")
		} else {
			r.login(gate, e.Route, "refused")
		}
	case audit.LoginRejectedByApp:
		r.login(gate, e.Route, "upstream_rejected")
	case audit.LockoutStarted:
		r.lockouts.Inc()
	case audit.RecoveryCodeUsed:
		flow := e.Outcome
		if flow != "login" && flow != "challenge" && flow != "step_up" {
			flow = "api"
		}
		r.recovery.WithLabelValues(flow).Inc()
	case audit.EnrollStarted:
		r.enrollment.WithLabelValues("started").Inc()
	case audit.EnrollConfirmed:
		r.enrollment.WithLabelValues("confirmed").Inc()
	case audit.EnrollFailed:
		r.enrollment.WithLabelValues("failed").Inc()
	case audit.Disabled:
		if e.Outcome == "ok" {
			r.admin.WithLabelValues("disabled").Inc()
		}
	case audit.RecoveryRegenerated:
		if e.Outcome == "ok" {
			r.admin.WithLabelValues("recovery_regenerated").Inc()
		}
	case audit.AdminReset:
		r.admin.WithLabelValues("reset").Inc()
	case audit.AdminUnlock:
		r.admin.WithLabelValues("unlocked").Inc()
	case audit.KeyRotated:
		r.keyOps.WithLabelValues("rotated").Inc()
	case audit.KeyMinVersionRaised:
		r.keyOps.WithLabelValues("min_version_raised").Inc()
	case audit.RewrapStarted:
		r.keyOps.WithLabelValues("rewrap_started").Inc()
	case audit.SessionRevoked:
		if slices.Contains(revokeReasons, e.Route) {
			r.revoked.WithLabelValues(e.Route, e.Outcome).Inc()
		}
	case audit.DeviceTrusted, audit.DeviceUsed, audit.DeviceRevoked, audit.DeviceReuseDetected:
		if ev := deviceEvents[e.Name]; slices.Contains(ev.reasons, e.Outcome) {
			r.devices.WithLabelValues(ev.name, e.Outcome).Inc()
		}
	case audit.StepUpRequired, audit.StepUpPassed, audit.StepUpFailed, audit.StepUpRefused:
		r.stepUpEvent(e)
	}
}

// stepUpEvent counts a step-up event under its configured route; the
// label never takes a path nobody configured.
func (r *Recorder) stepUpEvent(e audit.Event) {
	var event string
	switch e.Name {
	case audit.StepUpRequired:
		event = "required"
	case audit.StepUpPassed:
		event = map[string]string{"totp": "passed_code", "recovery_code": "passed_recovery_code"}[e.Outcome]
	case audit.StepUpFailed:
		event = map[string]string{"invalid_code": "invalid", "replay_refused": "replay_refused", "locked": "locked",
			"challenge_not_found": "not_found", "unavailable": "error"}[e.Outcome]
		if event == "" {
			event = "error"
		}
	case audit.StepUpRefused:
		event = "refused_" + e.Outcome
		if e.Outcome == "upstream_unavailable" {
			event = e.Outcome
		}
	}
	if !slices.Contains(stepUpEvents, event) {
		return
	}
	route := e.Route
	if !r.stepUpRoutes[route] {
		route = UnknownRoute
	}
	r.stepUp.WithLabelValues(route, event).Inc()
}

func (r *Recorder) login(gate bool, route, outcome string) {
	if gate {
		r.logins.WithLabelValues(route, outcome).Inc()
		return
	}
	if route == "CompleteChallenge" {
		r.challenges.WithLabelValues(outcome).Inc()
	}
}

// Fanout sends each event to every recorder (log, metrics, webhook).
type Fanout []audit.Recorder

// Record implements audit.Recorder.
func (f Fanout) Record(ctx context.Context, e audit.Event) {
	for _, r := range f {
		r.Record(ctx, e)
	}
}

// Keyring wraps a keyring with per-operation counts and latencies.
type Keyring struct {
	keyring.Keyring
	backend string
	ops     *prometheus.CounterVec
	seconds *prometheus.HistogramVec
}

// KeyringMetrics are the keyring metrics; make them once per registry.
type KeyringMetrics struct {
	ops     *prometheus.CounterVec
	seconds *prometheus.HistogramVec
}

// NewKeyringMetrics registers the keyring metrics on reg.
func NewKeyringMetrics(reg prometheus.Registerer) *KeyringMetrics {
	m := &KeyringMetrics{
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "totpgate_keyring_operations_total",
			Help: "Keyring operations (Vault transit calls with the vault backend), by backend, op (encrypt, decrypt, rewrap, rotate, status, set_min_version, ping) and result (ok, unavailable, decrypt_failed, malformed, version_retired, unknown_version, error).",
		}, []string{"backend", "op", "result"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "totpgate_keyring_operation_duration_seconds",
			Help:    "Time of keyring operations, retries included, by backend and op.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"backend", "op"}),
	}
	reg.MustRegister(m.ops, m.seconds)
	return m
}

// Wrap instruments k, which belongs to backend ("local" or "vault").
func (m *KeyringMetrics) Wrap(k keyring.Keyring, backend string) *Keyring {
	for _, op := range []string{"encrypt", "decrypt", "rewrap", "rotate", "status", "set_min_version", "ping"} {
		m.seconds.WithLabelValues(backend, op)
		m.ops.WithLabelValues(backend, op, "ok")
	}
	return &Keyring{Keyring: k, backend: backend, ops: m.ops, seconds: m.seconds}
}

func (k *Keyring) observe(op string, start time.Time, err error) {
	k.seconds.WithLabelValues(k.backend, op).Observe(time.Since(start).Seconds())
	k.ops.WithLabelValues(k.backend, op, resultOf(err)).Inc()
}

func resultOf(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, keyring.ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "unavailable"
	case errors.Is(err, keyring.ErrDecrypt):
		return "decrypt_failed"
	case errors.Is(err, keyring.ErrMalformed):
		return "malformed"
	case errors.Is(err, keyring.ErrVersionRetired):
		return "version_retired"
	case errors.Is(err, keyring.ErrUnknownVersion):
		return "unknown_version"
	default:
		return "error"
	}
}

// Encrypt implements keyring.Keyring.
func (k *Keyring) Encrypt(ctx context.Context, bindTo string, plaintext []byte) (string, error) {
	start := time.Now()
	ct, err := k.Keyring.Encrypt(ctx, bindTo, plaintext)
	k.observe("encrypt", start, err)
	return ct, err
}

// Decrypt implements keyring.Keyring.
func (k *Keyring) Decrypt(ctx context.Context, bindTo, ciphertext string) ([]byte, error) {
	start := time.Now()
	pt, err := k.Keyring.Decrypt(ctx, bindTo, ciphertext)
	k.observe("decrypt", start, err)
	return pt, err
}

// Rewrap implements keyring.Keyring.
func (k *Keyring) Rewrap(ctx context.Context, items []keyring.Item) ([]keyring.Result, error) {
	start := time.Now()
	res, err := k.Keyring.Rewrap(ctx, items)
	k.observe("rewrap", start, err)
	return res, err
}

// Rotate implements keyring.Keyring.
func (k *Keyring) Rotate(ctx context.Context) (keyring.Status, error) {
	start := time.Now()
	st, err := k.Keyring.Rotate(ctx)
	k.observe("rotate", start, err)
	return st, err
}

// Status implements keyring.Keyring.
func (k *Keyring) Status(ctx context.Context) (keyring.Status, error) {
	start := time.Now()
	st, err := k.Keyring.Status(ctx)
	k.observe("status", start, err)
	return st, err
}

// SetMinDecryptionVersion implements keyring.Keyring.
func (k *Keyring) SetMinDecryptionVersion(ctx context.Context, v int) (keyring.Status, error) {
	start := time.Now()
	st, err := k.Keyring.SetMinDecryptionVersion(ctx, v)
	k.observe("set_min_version", start, err)
	return st, err
}

// Ping implements keyring.Keyring.
func (k *Keyring) Ping(ctx context.Context) error {
	start := time.Now()
	err := k.Keyring.Ping(ctx)
	k.observe("ping", start, err)
	return err
}

// Transport instruments the round trips to the app: latency to the
// response headers and answers by status class.
type Transport struct {
	next    http.RoundTripper
	seconds prometheus.Histogram
	// byClass holds the counters of 1xx..5xx (index 1..5) and error
	// (index 0), looked up once: a lookup by label values per request
	// costs a hash, a lock and a string concatenation.
	byClass [6]prometheus.Counter
}

// NewTransport registers the upstream metrics on reg and wraps next.
func NewTransport(reg prometheus.Registerer, next http.RoundTripper) *Transport {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "totpgate_upstream_requests_total",
		Help: "Requests sent to the app (pass-through, intercepted logins, identity lookups), by status class of its answer: 1xx..5xx, or error when it did not answer.",
	}, []string{"class"})
	t := &Transport{
		next: next,
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "totpgate_upstream_response_duration_seconds",
			Help:    "Time from sending a request to the app to its response headers.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
	}
	for i, c := range []string{"error", "1xx", "2xx", "3xx", "4xx", "5xx"} {
		t.byClass[i] = requests.WithLabelValues(c)
	}
	reg.MustRegister(t.seconds, requests)
	return t
}

// With returns a Transport that sends through next and counts into the
// same series as t (the pass-through's own client and the transport
// behind it are one upstream to the metrics).
func (t *Transport) With(next http.RoundTripper) *Transport {
	c := *t
	c.next = next
	return &c
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	res, err := t.next.RoundTrip(r)
	t.seconds.Observe(time.Since(start).Seconds())
	if err != nil {
		t.byClass[0].Inc()
		return res, err
	}
	class := 5 // a status outside 100..599 is counted as a server error
	if c := res.StatusCode / 100; c >= 1 && c <= 5 {
		class = c
	}
	t.byClass[class].Inc()
	return res, nil
}

// Counts is what the state collector reads from the store.
type Counts interface {
	CountByState(ctx context.Context) (map[store.State]int, error)
	CountByKey(ctx context.Context) (map[store.KeyRef]int, error)
}

// State reports users by MFA state and stored secrets by key version,
// read from the store at most once per maxAge, whatever the scrape rate.
type State struct {
	counts  Counts
	maxAge  time.Duration
	now     func() time.Time
	users   *prometheus.Desc
	secrets *prometheus.Desc
	errs    prometheus.Counter

	mu     sync.Mutex
	at     time.Time
	states map[store.State]int
	keys   map[store.KeyRef]int
}

// NewState registers the state collector on reg.
func NewState(reg prometheus.Registerer, c Counts, maxAge time.Duration, now func() time.Time) *State {
	s := &State{
		counts: c, maxAge: maxAge, now: now,
		users:   prometheus.NewDesc("totpgate_users", "Users with a second factor, by state (pending: enrollment not confirmed yet; active).", []string{"state"}, nil),
		secrets: prometheus.NewDesc("totpgate_stored_secrets", "Stored TOTP secrets by keyring backend and key version; after a rotation and rewrap only the newest version should remain.", []string{"backend", "version"}, nil),
		errs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "totpgate_state_refresh_errors_total",
			Help: "Failed reads of the user and secret counts from the store.",
		}),
	}
	reg.MustRegister(s, s.errs)
	return s
}

// Describe implements prometheus.Collector.
func (s *State) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.users
	ch <- s.secrets
}

// Collect implements prometheus.Collector.
func (s *State) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := s.now(); s.states == nil || now.Sub(s.at) >= s.maxAge {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		states, err1 := s.counts.CountByState(ctx)
		keys, err2 := s.counts.CountByKey(ctx)
		cancel()
		if err1 == nil && err2 == nil {
			s.states, s.keys, s.at = states, keys, now
		} else {
			s.errs.Inc() // keep the last good counts
		}
	}
	for _, st := range []store.State{store.StatePending, store.StateActive} {
		ch <- prometheus.MustNewConstMetric(s.users, prometheus.GaugeValue, float64(s.states[st]), string(st))
	}
	for k, n := range s.keys {
		ch <- prometheus.MustNewConstMetric(s.secrets, prometheus.GaugeValue, float64(n), k.Backend, strconv.Itoa(k.Version))
	}
}

// NewBuildInfo registers totpgate_build_info{version, revision} = 1.
func NewBuildInfo(reg prometheus.Registerer, version, revision string) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "totpgate_build_info",
		Help:        "Always 1; the labels name the running build.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision},
	})
	g.Set(1)
	reg.MustRegister(g)
}
