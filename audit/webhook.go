package audit

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/totpgate/totpgate/internal/backoff"
	"github.com/totpgate/totpgate/internal/setting"
)

// Webhook headers. The signature follows the common "t=<unix>,v1=<hex>"
// scheme: HMAC-SHA256 with the shared secret over "<t>.<body>", so a
// receiver can check both who sent it and when (reject old timestamps to
// stop replays), and dedupe retries by delivery id.
const (
	SignatureHeader = "X-Totpgate-Signature"
	DeliveryHeader  = "X-Totpgate-Delivery"
	EventHeader     = "X-Totpgate-Event"
)

// Payload is the JSON body of a webhook delivery: the audit event in the
// schema of the log line.
type Payload struct {
	SchemaVersion int       `json:"audit_v"`
	Event         string    `json:"event"`
	Time          time.Time `json:"time"`
	UserID        string    `json:"user_id,omitempty"`
	ClientIP      string    `json:"client_ip,omitempty"`
	Route         string    `json:"route,omitempty"`
	Outcome       string    `json:"outcome,omitempty"`
	RequestID     string    `json:"request_id,omitempty"`
}

// Sign returns the signature header value for body at t.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts))
	mac.Write([]byte("."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// WebhookConfig configures a Webhook.
type WebhookConfig struct {
	URL         string
	Secret      []byte
	QueueSize   int           // events waiting; beyond it events are dropped and counted
	MaxAttempts int           // per event, first try included
	Timeout     time.Duration // per attempt
	RetryMin    time.Duration // backoff bounds
	RetryMax    time.Duration
	Client      *http.Client // nil: a client with Timeout
	Logger      *slog.Logger
	Now         func() time.Time
}

// SettingErrors checks the settings a configuration file gives under
// audit.webhook_ (not the retry waits, client, logger or clock): every
// problem.
func (c WebhookConfig) SettingErrors() setting.Errors {
	var errs setting.Errors
	add := errs.Add
	if !setting.IsHTTPURL(c.URL) {
		add("url", "%q must be an http(s) URL", c.URL)
	}
	if len(c.Secret) < 16 {
		add("secret", "must be at least 16 bytes")
	}
	if c.QueueSize < 1 {
		add("queue", "must be at least 1")
	}
	if c.MaxAttempts < 1 {
		add("max_attempts", "must be at least 1")
	}
	if c.Timeout <= 0 {
		add("timeout", "must be positive")
	}
	return errs
}

// Validate reports every problem at once.
func (c WebhookConfig) Validate() error {
	var errs []error
	for _, e := range c.SettingErrors() {
		errs = append(errs, fmt.Errorf("audit webhook: %w", e))
	}
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		errs = append(errs, errors.New("audit webhook: retry waits must be positive (retry max >= min)"))
	}
	return errors.Join(errs...)
}

// Webhook POSTs every event to a URL from a bounded queue. Record never
// blocks: when the queue is full the event is dropped and counted, so a
// slow or dead receiver cannot slow a login.
type Webhook struct {
	cfg       WebhookConfig
	queue     chan Payload
	client    *http.Client
	log       *slog.Logger
	results   *prometheus.CounterVec
	queueSize prometheus.GaugeFunc
}

var _ Recorder = (*Webhook)(nil)

// NewWebhook registers the webhook metrics on reg. Call Run to deliver.
func NewWebhook(cfg WebhookConfig, reg prometheus.Registerer) (*Webhook, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	w := &Webhook{cfg: cfg, queue: make(chan Payload, cfg.QueueSize), client: cfg.Client, log: cfg.Logger}
	if w.client == nil {
		w.client = &http.Client{Timeout: cfg.Timeout}
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	w.results = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "totpgate_audit_webhook_events_total",
		Help: "Audit events for the webhook, by result: delivered, failed (gave up after the retries or a 4xx), dropped (queue full).",
	}, []string{"result"})
	for _, r := range []string{"delivered", "failed", "dropped"} {
		w.results.WithLabelValues(r)
	}
	w.queueSize = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "totpgate_audit_webhook_queue_events",
		Help: "Audit events waiting for the webhook.",
	}, func() float64 { return float64(len(w.queue)) })
	reg.MustRegister(w.results, w.queueSize)
	return w, nil
}

// Record implements Recorder without blocking.
func (w *Webhook) Record(_ context.Context, e Event) {
	p := Payload{SchemaVersion: SchemaVersion, Event: e.Name, Time: w.cfg.Now().UTC(), UserID: e.UserID,
		ClientIP: e.ClientIP, Route: e.Route, Outcome: e.Outcome, RequestID: e.RequestID}
	select {
	case w.queue <- p:
	default:
		w.results.WithLabelValues("dropped").Inc()
	}
}

// Run delivers queued events until ctx ends.
func (w *Webhook) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-w.queue:
			w.deliver(ctx, p)
		}
	}
}

func (w *Webhook) deliver(ctx context.Context, p Payload) {
	body, err := json.Marshal(p)
	if err != nil {
		w.results.WithLabelValues("failed").Inc()
		return
	}
	id := make([]byte, 12)
	_, _ = rand.Read(id)
	delivery := hex.EncodeToString(id)
	for attempt := 1; ; attempt++ {
		retry, err := w.post(ctx, body, delivery, p.Event)
		if err == nil {
			w.results.WithLabelValues("delivered").Inc()
			return
		}
		if !retry || attempt >= w.cfg.MaxAttempts || ctx.Err() != nil {
			w.results.WithLabelValues("failed").Inc()
			w.log.Warn("audit webhook delivery failed", "event", p.Event, "delivery", delivery, "attempts", attempt, "error", err.Error())
			return
		}
		if backoff.Sleep(ctx, backoff.Policy{Min: w.cfg.RetryMin, Max: w.cfg.RetryMax}.Wait(attempt)) != nil {
			w.results.WithLabelValues("failed").Inc()
			return
		}
	}
}

// post sends one attempt; retry says whether another may succeed.
func (w *Webhook) post(ctx context.Context, body []byte, delivery, event string) (retry bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(SignatureHeader, Sign(w.cfg.Secret, w.cfg.Now(), body))
	req.Header.Set(DeliveryHeader, delivery)
	req.Header.Set(EventHeader, event)
	res, err := w.client.Do(req)
	if err != nil {
		return true, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	res.Body.Close()
	switch {
	case res.StatusCode >= 200 && res.StatusCode < 300:
		return false, nil
	case res.StatusCode == http.StatusTooManyRequests || res.StatusCode >= 500:
		return true, fmt.Errorf("receiver answered %d", res.StatusCode)
	default:
		return false, fmt.Errorf("receiver answered %d", res.StatusCode)
	}
}
