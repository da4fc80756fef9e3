package rotation_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/totpgate/totpgate/internal/foreground"
	"github.com/totpgate/totpgate/keyring"
	"github.com/totpgate/totpgate/metrics"
	"github.com/totpgate/totpgate/rotation"
	"github.com/totpgate/totpgate/store"
)

// unevenKeys is a real local keyring whose batch rewraps finish in a
// shuffled order (a random delay each), and fail as unavailable while
// broken names a user in the batch. It counts the batches in flight.
type unevenKeys struct {
	keyring.Keyring
	mu               sync.Mutex
	broken           string
	inFlight, peak   int
	finishedOutOfSeq bool
	lastFirst        string
}

func (k *unevenKeys) Rewrap(ctx context.Context, items []keyring.Item) ([]keyring.Result, error) {
	k.mu.Lock()
	k.inFlight++
	k.peak = max(k.peak, k.inFlight)
	broken := k.broken != "" && slices.ContainsFunc(items, func(it keyring.Item) bool { return it.BindTo == store.BindingUser.BindTo(k.broken) })
	k.mu.Unlock()
	defer func() {
		k.mu.Lock()
		k.inFlight--
		if items[0].BindTo < k.lastFirst {
			k.finishedOutOfSeq = true
		}
		k.lastFirst = items[0].BindTo
		k.mu.Unlock()
	}()
	time.Sleep(time.Duration(rand.IntN(4000)) * time.Microsecond)
	if broken {
		return nil, fmt.Errorf("test: %w", keyring.ErrUnavailable)
	}
	return k.Keyring.Rewrap(ctx, items)
}

func (k *unevenKeys) heal() { k.mu.Lock(); k.broken = ""; k.mu.Unlock() }

// TestRewrapPipelineKeepsOrderAndLosesNothing: with several batches in
// flight finishing in any order, every secret is moved, at most InFlight
// batches run at once, and a batch that keeps failing stops the job with
// its saved cursor before that batch, so the resumed job moves the rest.
func TestRewrapPipelineKeepsOrderAndLosesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("uneven", func(t *testing.T) {
		t.Parallel()
		keys := &unevenKeys{Keyring: localKeys(t)}
		e := newEnv(t, keys)
		e.seed(t, 600)
		m := newManager(t, e, nil, 0)
		if _, err := m.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
		job, err := m.Rewrap(ctx, rotation.Options{BatchSize: 10, InFlight: 6}, nil)
		if err != nil || job.State != rotation.StateSucceeded || job.Done != 601 {
			t.Fatalf("Rewrap = %+v, %v", job, err)
		}
		e.verify(t, "local", 2)
		if keys.peak < 2 || keys.peak > 6 {
			t.Fatalf("peak batches in flight = %d, want 2..6", keys.peak)
		}
		if !keys.finishedOutOfSeq {
			t.Fatal("every batch finished in page order; the test proves nothing about ordering")
		}
	})
	t.Run("a failing batch", func(t *testing.T) {
		t.Parallel()
		keys := &unevenKeys{Keyring: localKeys(t), broken: "user-00150"}
		e := newEnv(t, keys)
		e.seed(t, 300)
		m := newManager(t, e, nil, 0)
		if _, err := m.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
		job, err := m.Rewrap(ctx, rotation.Options{BatchSize: 10, InFlight: 4}, nil)
		if err == nil || job.State != rotation.StateFailed {
			t.Fatalf("Rewrap with a broken batch = %+v, %v", job, err)
		}
		if job.Cursor >= "user-00150" {
			t.Fatalf("saved cursor %q passes the batch that failed", job.Cursor)
		}
		for i := range 300 {
			user := fmt.Sprintf("user-%05d", i)
			if user > job.Cursor {
				break
			}
			if u, err := e.st.GetUser(ctx, user); err != nil || u.KeyVersion != 2 {
				t.Fatalf("%s is before the cursor %q but on v%d (%v)", user, job.Cursor, u.KeyVersion, err)
			}
		}
		// A failed job is not resumed: the next one counts what is left,
		// which is at least the broken batch, everything after it and the
		// recovery key (batches rewrapped after the broken one were never
		// stored).
		keys.heal()
		job, err = m.Rewrap(ctx, rotation.Options{BatchSize: 10, InFlight: 4}, nil)
		if err != nil || job.State != rotation.StateSucceeded || job.Total < 151 || job.Done != job.Total || job.Failed != 0 {
			t.Fatalf("next Rewrap = %+v, %v", job, err)
		}
		e.verify(t, "local", 2)
	})
}

// enteredYielder is a foreground.Gate that says when the job first waits
// on it.
type enteredYielder struct {
	*foreground.Gate
	once    sync.Once
	entered chan struct{}
}

func (y *enteredYielder) Yield(ctx context.Context) time.Duration {
	y.once.Do(func() { close(y.entered) })
	return y.Gate.Yield(ctx)
}

// countingKeys counts batch rewraps.
type countingKeys struct {
	keyring.Keyring
	rewraps atomic.Int64
}

func (k *countingKeys) Rewrap(ctx context.Context, items []keyring.Item) ([]keyring.Result, error) {
	k.rewraps.Add(1)
	return k.Keyring.Rewrap(ctx, items)
}

// TestRewrapYieldsToLogins: while a login's second factor is being
// checked the job sends nothing to the keyring; once it ends the job goes
// on, and a login that never ends slows the job down without stopping it.
func TestRewrapYieldsToLogins(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	run := func(t *testing.T, maxWait time.Duration, during func(keys *countingKeys, end func())) float64 {
		keys := &countingKeys{Keyring: localKeys(t)}
		e := newEnv(t, keys)
		e.seed(t, 250)
		reg := prometheus.NewRegistry()
		y := &enteredYielder{Gate: foreground.New(maxWait), entered: make(chan struct{})}
		end := y.Begin()
		m, err := rotation.New(rotation.Config{Store: e.st, Keys: keys, Metrics: metrics.NewRewrap(reg), Foreground: y,
			Settings: []rotation.EncryptedSetting{{Key: pepperKey, BindTo: pepperBind}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
		type outcome struct {
			job rotation.Job
			err error
		}
		done := make(chan outcome, 1)
		go func() {
			job, err := m.Rewrap(ctx, rotation.Options{BatchSize: 100, InFlight: 2}, nil)
			done <- outcome{job, err}
		}()
		<-y.entered
		during(keys, end)
		o := <-done
		if o.err != nil || o.job.State != rotation.StateSucceeded || o.job.Done != 251 {
			t.Fatalf("Rewrap = %+v, %v", o.job, o.err)
		}
		e.verify(t, "local", 2)
		return counterValue(t, reg, "totpgate_rewrap_yielded_seconds_total", "")
	}
	t.Run("waits while a login is checked", func(t *testing.T) {
		t.Parallel()
		yielded := run(t, time.Hour, func(keys *countingKeys, end func()) {
			time.Sleep(100 * time.Millisecond)
			if n := keys.rewraps.Load(); n != 0 {
				t.Errorf("%d batches went to the keyring while a login was checked", n)
			}
			end()
		})
		if yielded < 0.1 {
			t.Errorf("yielded %.3fs, want at least the 0.1s the login took", yielded)
		}
	})
	t.Run("a login that never ends only slows the job", func(t *testing.T) {
		t.Parallel()
		yielded := run(t, 5*time.Millisecond, func(*countingKeys, func()) {})
		// Three pages and three transactions at 5 ms each at least.
		if yielded < 0.03 {
			t.Errorf("yielded %.3fs, want at least 6 × 5ms", yielded)
		}
	})
}

// chunkedStore records the size of every SwapSecrets call and fails the
// second call once.
type chunkedStore struct {
	rotation.Store
	mu       sync.Mutex
	sizes    []int
	failOnce bool
}

func (s *chunkedStore) SwapSecrets(ctx context.Context, swaps []store.Swap) (int, error) {
	s.mu.Lock()
	s.sizes = append(s.sizes, len(swaps))
	fail := s.failOnce && len(s.sizes) == 2
	if fail {
		s.failOnce = false
	}
	s.mu.Unlock()
	if fail {
		return 0, fmt.Errorf("test: %w", store.ErrUnavailable)
	}
	return s.Store.SwapSecrets(ctx, swaps)
}

// TestRewrapSwapsInSmallTransactions: a page goes into the store in
// transactions of at most 100 rows, so a login's commit never waits
// behind a whole page; a transaction that fails is retried from where the
// page stopped, and every secret is counted once.
func TestRewrapSwapsInSmallTransactions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, localKeys(t))
	e.seed(t, 250)
	st := &chunkedStore{Store: e.st, failOnce: true}
	reg := prometheus.NewRegistry()
	m, err := rotation.New(rotation.Config{Store: st, Keys: e.keys, Metrics: metrics.NewRewrap(reg),
		Settings: []rotation.EncryptedSetting{{Key: pepperKey, BindTo: pepperBind}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	job, err := m.Rewrap(ctx, rotation.Options{BatchSize: 1000, InFlight: 1}, nil)
	if err != nil || job.State != rotation.StateSucceeded || job.Done != 251 {
		t.Fatalf("Rewrap = %+v, %v", job, err)
	}
	e.verify(t, "local", 2)
	// 250 users in one page: 100, then 100 that the store refuses, then
	// those 100 again and the last 50 (not the whole page again).
	if want := []int{100, 100, 100, 50}; !slices.Equal(st.sizes, want) {
		t.Errorf("swap transactions of %v rows, want %v", st.sizes, want)
	}
	if n := counterValue(t, reg, "totpgate_rewrap_secrets_total", "rewrapped"); n != 250 {
		t.Errorf("rewrapped counter = %v, want 250 (each user once)", n)
	}
}
