package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Rewrap is the rewrap job's metrics; it implements rotation.Observer.
// A nil *Rewrap records nothing.
type Rewrap struct {
	secrets   *prometheus.CounterVec
	remaining prometheus.Gauge
	runningG  prometheus.Gauge
	batch     prometheus.Histogram
	yielded   prometheus.Counter
}

// NewRewrap registers the rewrap metrics on reg.
func NewRewrap(reg prometheus.Registerer) *Rewrap {
	m := &Rewrap{
		secrets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "totpgate_rewrap_secrets_total",
			Help: "Secrets handled by rewrap jobs: rewrapped (stored under the new version), changed (a login or re-enrollment replaced the row meanwhile; left alone), failed.",
		}, []string{"result"}),
		remaining: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "totpgate_rewrap_remaining_secrets",
			Help: "Secrets the current or last rewrap job has not handled yet.",
		}),
		runningG: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "totpgate_rewrap_running",
			Help: "1 while this process runs a rewrap job.",
		}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "totpgate_rewrap_batch_duration_seconds",
			Help:    "Time to rewrap and store one batch.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}),
		yielded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "totpgate_rewrap_yielded_seconds_total",
			Help: "Time rewrap jobs in this process waited for logins' second-factor checks before sending a batch to the keyring or a transaction to the store.",
		}),
	}
	for _, r := range []string{"rewrapped", "changed", "failed"} {
		m.secrets.WithLabelValues(r)
	}
	reg.MustRegister(m.secrets, m.remaining, m.runningG, m.batch, m.yielded)
	return m
}

// Count adds the outcome of one batch.
func (m *Rewrap) Count(rewrapped, changed, failed int) {
	if m == nil {
		return
	}
	m.secrets.WithLabelValues("rewrapped").Add(float64(rewrapped))
	m.secrets.WithLabelValues("changed").Add(float64(changed))
	m.secrets.WithLabelValues("failed").Add(float64(failed))
}

// Running says whether this process runs a job.
func (m *Rewrap) Running(on bool) {
	if m == nil {
		return
	}
	if on {
		m.runningG.Set(1)
	} else {
		m.runningG.Set(0)
	}
}

// BatchSeconds observes the time one batch took.
func (m *Rewrap) BatchSeconds(d time.Duration) {
	if m != nil {
		m.batch.Observe(d.Seconds())
	}
}

// Yielded adds time a job waited for foreground work.
func (m *Rewrap) Yielded(d time.Duration) {
	if m != nil {
		m.yielded.Add(d.Seconds())
	}
}

// Remaining sets the secrets the job has not handled yet.
func (m *Rewrap) Remaining(n int) {
	if m != nil {
		m.remaining.Set(float64(n))
	}
}
