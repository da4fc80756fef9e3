package metrics_test

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/totpgate/totpgate/audit"
	"github.com/totpgate/totpgate/metrics"
	"github.com/totpgate/totpgate/store"
)

var update = flag.Bool("update", false, "rewrite docs/metrics.md and golden files")

type fixedCounts struct{}

func (fixedCounts) CountByState(context.Context) (map[store.State]int, error) {
	return map[store.State]int{store.StateActive: 1}, nil
}

func (fixedCounts) CountByKey(context.Context) (map[store.KeyRef]int, error) {
	return map[store.KeyRef]int{{Backend: "local", Version: 1}: 1}, nil
}

// allMetrics registers every totpgate metric the sidecar registers.
func allMetrics(t *testing.T) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	metrics.NewBuildInfo(reg, "v0", "rev")
	metrics.NewRecorder(reg, []string{"/login"}, []string{"/settings/password"})
	metrics.NewKeyringMetrics(reg).Wrap(nil, "local")
	metrics.NewTransport(reg, http.DefaultTransport)
	metrics.NewState(reg, fixedCounts{}, time.Minute, time.Now)
	metrics.NewRewrap(reg)
	if _, err := audit.NewWebhook(audit.WebhookConfig{URL: "http://127.0.0.1:1", Secret: []byte("0123456789abcdef"), QueueSize: 1,
		MaxAttempts: 1, Timeout: time.Second, RetryMin: time.Second, RetryMax: time.Second}, reg); err != nil {
		t.Fatal(err)
	}
	return reg
}

// The metric reference in docs/metrics.md is generated from the registry,
// so it cannot drift from the code: `go test ./metrics -run Reference -update`.
func TestReferenceIsCurrent(t *testing.T) {
	reg := allMetrics(t)
	// Histograms and keyring series appear once observed.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := reference(mfs)
	const path = "../docs/metrics.md"
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != got {
		t.Fatalf("docs/metrics.md is stale; run go test ./metrics -run Reference -update")
	}
}

func reference(mfs []*dto.MetricFamily) string {
	var b strings.Builder
	b.WriteString("# Metrics\n\n")
	b.WriteString("Served on the admin listener at `/metrics`. Generated from the code by\n`go test ./metrics -run Reference -update`; a test fails when this file is stale.\n")
	b.WriteString("No label ever holds a user id, code, secret or client address. Go runtime\nand process metrics (`go_*`, `process_*`) are exported too.\n\n")
	b.WriteString("| Name | Type | Labels | Meaning |\n|---|---|---|---|\n")
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "totpgate_") {
			continue
		}
		labels := map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = true
			}
		}
		names := make([]string, 0, len(labels))
		for l := range labels {
			names = append(names, "`"+l+"`")
		}
		slices.Sort(names)
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", mf.GetName(), strings.ToLower(mf.GetType().String()), strings.Join(names, ", "), mf.GetHelp())
	}
	return b.String()
}
