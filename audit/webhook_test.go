package audit_test

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/totpgate/totpgate/audit"
)

var secret = []byte("a-webhook-secret-of-32-bytes....")

func webhook(t *testing.T, url string, queue int) (*audit.Webhook, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	w, err := audit.NewWebhook(audit.WebhookConfig{
		URL: url, Secret: secret, QueueSize: queue, MaxAttempts: 4, Timeout: 2 * time.Second,
		RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond,
	}, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { w.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return w, reg
}

func count(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "totpgate_audit_webhook_events_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	return -1
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
	}
}

// verify checks a delivery the way a receiver should.
func verify(r *http.Request, body []byte) bool {
	sig := r.Header.Get(audit.SignatureHeader)
	ts, _, ok := strings.Cut(strings.TrimPrefix(sig, "t="), ",")
	if !ok {
		return false
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return false
	}
	want := audit.Sign(secret, time.Unix(unix, 0), body)
	return hmac.Equal([]byte(sig), []byte(want)) && time.Since(time.Unix(unix, 0)) < time.Minute
}

func TestWebhookSignsAndRetries(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	var mu sync.Mutex
	var got []audit.Payload
	var deliveries = map[string]int{}
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !verify(r, body) {
			t.Errorf("signature does not verify: %s", r.Header.Get(audit.SignatureHeader))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		mu.Lock()
		deliveries[r.Header.Get(audit.DeliveryHeader)]++
		mu.Unlock()
		if calls.Add(1) <= 2 { // two failures, then success
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		var p audit.Payload
		_ = json.Unmarshal(body, &p)
		mu.Lock()
		got = append(got, p)
		mu.Unlock()
	}))
	t.Cleanup(recv.Close)
	w, reg := webhook(t, recv.URL, 10)
	w.Record(context.Background(), audit.Event{Name: audit.LockoutStarted, UserID: "alice", Route: "/login", Outcome: "login", RequestID: "r1"})
	eventually(t, "delivery", func() bool { return count(t, reg, "delivered") == 1 })
	mu.Lock()
	defer mu.Unlock()
	if calls.Load() != 3 || len(got) != 1 || got[0].Event != "lockout_started" || got[0].UserID != "alice" || got[0].SchemaVersion != 1 {
		t.Fatalf("calls %d, payloads %+v", calls.Load(), got)
	}
	if len(deliveries) != 1 {
		t.Fatalf("retries must keep one delivery id: %v", deliveries)
	}
}

func TestWebhookGivesUpOn4xx(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusBadRequest)
	}))
	t.Cleanup(recv.Close)
	w, reg := webhook(t, recv.URL, 10)
	w.Record(context.Background(), audit.Event{Name: audit.LoginFailed})
	eventually(t, "failure", func() bool { return count(t, reg, "failed") == 1 })
	if calls.Load() != 1 {
		t.Fatalf("a 4xx was retried: %d calls", calls.Load())
	}
}

// A receiver that never answers must not slow Record (the login path), and
// what does not fit the queue is counted as dropped.
func TestWebhookDeadReceiverNeverBlocks(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() { // accept and never answer
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	w, reg := webhook(t, "http://"+l.Addr().String(), 100)
	const events = 10_000
	var slowest time.Duration
	start := time.Now()
	for range events {
		s := time.Now()
		w.Record(context.Background(), audit.Event{Name: audit.LoginFailed, UserID: "u"})
		slowest = max(slowest, time.Since(s))
	}
	total := time.Since(start)
	t.Logf("%d events recorded in %v against a dead receiver, slowest Record %v", events, total, slowest)
	dropped := count(t, reg, "dropped")
	// 100 wait in the queue and at most one is being delivered.
	if dropped < events-101 || dropped > events-100 {
		t.Fatalf("dropped %v of %d with a queue of 100", dropped, events)
	}
	if n := testutil.CollectAndCount(reg, "totpgate_audit_webhook_queue_events"); n != 1 {
		t.Fatalf("queue gauge missing")
	}
}
