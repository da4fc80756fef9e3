package main

import (
	"bytes"
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/totpgate/totpgate/audit"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/*.golden")

// scrape reads the sidecar's /metrics and returns it raw and as a
// Gatherer for testutil.GatherAndCompare.
func scrape(t *testing.T, s *sidecar) (string, prometheus.Gatherer) {
	t.Helper()
	res, err := http.Get(s.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return string(raw), prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		out := make([]*dto.MetricFamily, 0, len(families))
		for _, mf := range families {
			out = append(out, mf)
		}
		slices.SortFunc(out, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
		return out, nil
	})
}

func compareGolden(t *testing.T, g prometheus.Gatherer, name string, metricNames ...string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *updateGolden {
		var buf bytes.Buffer
		mfs, err := g.Gather()
		if err != nil {
			t.Fatal(err)
		}
		enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, mf := range mfs {
			for _, n := range metricNames {
				if mf.GetName() == n {
					if err := enc.Encode(mf); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := testutil.GatherAndCompare(g, bytes.NewReader(want), metricNames...); err != nil {
		t.Fatal(err)
	}
}

// A brute-force run: four wrong codes, the fifth locks, the correct code
// is then refused too. The metrics show each step; nothing in /metrics or
// the audit log names the user, a code or a secret.
func TestMetricsAfterBruteForce(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, "TOTPGATE_ADMIN_TOKEN="+adminToken, "TOTPGATE_API_RATE_PER_SECOND=1000", "TOTPGATE_API_RATE_BURST=1000", "TOTPGATE_SERVER_STATE_METRICS_MAX_AGE=0s")
	user := "victim-7f3a9c"
	code, recovery := e.enroll(t, user)
	res, body := e.login(t, "/login", `{"user":"someone","password":"wrong"}`, nil) // the app refuses
	if res.StatusCode != 401 {
		t.Fatalf("bad password: %d %s", res.StatusCode, body)
	}
	res, _ = e.login(t, "/login", `{"user":"nomfa","password":"pw"}`, nil)
	if res.StatusCode != 200 {
		t.Fatal("login without MFA refused")
	}
	var codes []string
	for _, wrong := range []string{"111111", "222222", "333333", "444444", "555555"} {
		codes = append(codes, wrong)
		res, body := e.login(t, "/login", `{"user":"`+user+`","password":"pw"}`, http.Header{"X-Totp-Code": {wrong}})
		if res.StatusCode == 200 {
			t.Fatalf("wrong code passed: %s", body)
		}
	}
	right := code(0)
	res, body = e.login(t, "/login", `{"user":"`+user+`","password":"pw"}`, http.Header{"X-Totp-Code": {right}})
	if res.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("correct code while locked: %d %s", res.StatusCode, body)
	}
	raw, g := scrape(t, e.s)
	compareGolden(t, g, "metrics_bruteforce",
		"totpgate_login_interceptions_total", "totpgate_lockouts_started_total", "totpgate_enrollments_total",
		"totpgate_users", "totpgate_recovery_codes_used_total")

	// Nothing identifying or secret leaks into /metrics or the logs.
	secrets := append([]string{user, right}, recovery...)
	for _, s := range secrets {
		if strings.Contains(raw, s) {
			t.Errorf("/metrics contains %q", s)
		}
	}
	logs := e.s.logs.String()
	for _, s := range append(recovery, right) {
		if strings.Contains(logs, s) {
			t.Errorf("logs contain a code or recovery code")
		}
	}
	for _, c := range codes {
		if strings.Contains(logs, c) {
			t.Errorf("logs contain a submitted code")
		}
	}
}

// After a rotation and a rewrap the stored-secret gauges move from the old
// version to the new one.
func TestMetricsAfterRotation(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, "TOTPGATE_ADMIN_TOKEN="+adminToken, "TOTPGATE_API_RATE_PER_SECOND=1000", "TOTPGATE_API_RATE_BURST=1000", "TOTPGATE_SERVER_STATE_METRICS_MAX_AGE=0s")
	for _, u := range []string{"a", "b", "c"} {
		e.enroll(t, u)
	}
	_, g := scrape(t, e.s)
	compareGolden(t, g, "metrics_before_rotation", "totpgate_stored_secrets", "totpgate_users")
	if status, st := e.admin(t, "POST", "/admin/keys/rotate", ""); status != 200 {
		t.Fatalf("rotate: %d %v", status, st)
	}
	if status, j := e.admin(t, "POST", "/admin/keys/rewrap", ""); status != 202 {
		t.Fatalf("rewrap: %d %v", status, j)
	}
	for {
		status, j := e.admin(t, "GET", "/admin/keys/rewrap", "")
		if status == 200 && j["state"] == "succeeded" {
			break
		}
		if status != 200 || j["state"] == "failed" {
			t.Fatalf("rewrap: %d %v", status, j)
		}
	}
	_, g = scrape(t, e.s)
	compareGolden(t, g, "metrics_after_rotation", "totpgate_stored_secrets", "totpgate_rewrap_secrets_total",
		"totpgate_rewrap_remaining_secrets", "totpgate_key_admin_operations_total")
}

// The webhook gets signed events from the real process, and a receiver
// that accepts connections but never answers does not slow logins.
func TestWebhookFromTheSidecar(t *testing.T) {
	t.Parallel()
	const hookSecret = "webhook-secret-0123456789"
	got := make(chan string, 100)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		sig := r.Header.Get(audit.SignatureHeader)
		ts, _, _ := strings.Cut(strings.TrimPrefix(sig, "t="), ",")
		unix, _ := strconv.ParseInt(ts, 10, 64)
		if sig == "" || sig != audit.Sign([]byte(hookSecret), time.Unix(unix, 0), body) {
			t.Errorf("bad signature %q", sig)
		}
		got <- r.Header.Get(audit.EventHeader)
	}))
	t.Cleanup(recv.Close)
	e := newLoginEnv(t, "TOTPGATE_AUDIT_WEBHOOK_URL="+recv.URL, "TOTPGATE_AUDIT_WEBHOOK_SECRET="+hookSecret)
	e.enroll(t, "alice")
	seen := map[string]bool{}
	for deadline := time.After(10 * time.Second); !seen["enroll_confirmed"]; {
		select {
		case ev := <-got:
			seen[ev] = true
		case <-deadline:
			t.Fatalf("webhook events: %v", seen)
		}
	}

	// Dead receiver: logins cost the same as with no webhook at all.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	median := func(e *loginEnv) time.Duration {
		var lat []time.Duration
		for range 200 {
			start := time.Now()
			res, _ := e.login(t, "/login", `{"user":"nomfa","password":"pw"}`, nil)
			lat = append(lat, time.Since(start))
			if res.StatusCode != 200 {
				t.Fatalf("login: %d", res.StatusCode)
			}
		}
		slices.Sort(lat)
		return lat[len(lat)/2]
	}
	dead := newLoginEnv(t, "TOTPGATE_AUDIT_WEBHOOK_URL=http://"+l.Addr().String(), "TOTPGATE_AUDIT_WEBHOOK_SECRET="+hookSecret, "TOTPGATE_AUDIT_WEBHOOK_QUEUE=10")
	none := newLoginEnv(t)
	withDead, without := median(dead), median(none)
	t.Logf("login p50 with a dead webhook receiver %v, without a webhook %v", withDead, without)
	raw, _ := scrape(t, dead.s)
	if !strings.Contains(raw, `totpgate_audit_webhook_events_total{result="dropped"}`) || strings.Contains(raw, `totpgate_audit_webhook_events_total{result="dropped"} 0`) {
		t.Fatalf("queue overflow not counted:\n%s", grepLines(raw, "webhook"))
	}
	// A login through a blocked webhook must not wait for it: the bound is
	// loose (scheduling noise), a blocking Record would add the 5 s timeout.
	if withDead > without+250*time.Millisecond {
		t.Fatalf("a dead webhook receiver slows logins: p50 %v vs %v", withDead, without)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
