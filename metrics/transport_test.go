package metrics_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/totpgate/totpgate/metrics"
)

// statusRoundTripper answers each request with the next status of its
// list, or, for 0, with an error (the app did not answer).
type statusRoundTripper struct{ statuses []int }

func (s *statusRoundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	code := s.statuses[0]
	s.statuses = s.statuses[1:]
	if code == 0 {
		return nil, errors.New("connection refused")
	}
	return &http.Response{StatusCode: code, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
}

// TestTransportCountsByClass checks that every answer lands in its status
// class, an answer outside 100..599 in 5xx, and a failed round trip in error.
func TestTransportCountsByClass(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	next := &statusRoundTripper{statuses: []int{200, 204, 101, 302, 404, 401, 503, 0, 0, 0, 999, 42}}
	tr := metrics.NewTransport(reg, next)
	for range len(next.statuses) {
		req, err := http.NewRequest(http.MethodGet, "http://app.invalid/", nil)
		if err != nil {
			t.Fatal(err)
		}
		if res, err := tr.RoundTrip(req); err == nil {
			res.Body.Close()
		}
	}
	want := `
# HELP totpgate_upstream_requests_total Requests sent to the app (pass-through, intercepted logins, identity lookups), by status class of its answer: 1xx..5xx, or error when it did not answer.
# TYPE totpgate_upstream_requests_total counter
totpgate_upstream_requests_total{class="1xx"} 1
totpgate_upstream_requests_total{class="2xx"} 2
totpgate_upstream_requests_total{class="3xx"} 1
totpgate_upstream_requests_total{class="4xx"} 2
totpgate_upstream_requests_total{class="5xx"} 3
totpgate_upstream_requests_total{class="error"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "totpgate_upstream_requests_total"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(reg, "totpgate_upstream_response_duration_seconds"); n != 1 {
		t.Fatalf("response duration histogram: %d series, want 1", n)
	}
}
