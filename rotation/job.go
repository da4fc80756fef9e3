package rotation

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/totpgate/totpgate/internal/backoff"
	"github.com/totpgate/totpgate/keyring"
	"github.com/totpgate/totpgate/store"
)

// Serve lets Start run jobs in the background under ctx until it ends, then
// waits for a running job to save its state.
func (m *Manager) Serve(ctx context.Context) {
	m.mu.Lock()
	m.base = ctx
	m.mu.Unlock()
	<-ctx.Done()
	m.wg.Wait()
}

// Start begins (or resumes) a rewrap in the background and answers its
// first state. ErrRunning when another process holds the lease.
func (m *Manager) Start(ctx context.Context, opts Options) (Job, error) {
	m.mu.Lock()
	base := m.base
	m.mu.Unlock()
	if base == nil || base.Err() != nil {
		return Job{}, errors.New("rotation: not serving background jobs")
	}
	r, err := m.begin(ctx, opts)
	if err != nil {
		return Job{}, err
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		_, _ = r.loop(base, nil)
	}()
	return r.job, nil
}

// Rewrap runs (or resumes) a rewrap to the end in the caller's goroutine,
// calling progress after every batch. ErrRunning when another process
// holds the lease.
func (m *Manager) Rewrap(ctx context.Context, opts Options, progress func(Job)) (Job, error) {
	r, err := m.begin(ctx, opts)
	if err != nil {
		return Job{}, err
	}
	return r.loop(ctx, progress)
}

type run struct {
	m        *Manager
	job      Job
	saved    Job // copy of job as last saved, readable under m.mu
	target   store.KeyRef
	inFlight int
}

// begin takes the lease and sets up the job: a fresh one, or the one an
// interrupted process left for the same target key.
func (m *Manager) begin(ctx context.Context, opts Options) (*run, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	// The lease is per process (a second acquire by the same owner
	// succeeds, so a process can heartbeat), so a second job inside this
	// process is refused here.
	m.mu.Lock()
	if a := m.active; a != nil {
		job := a.saved
		m.mu.Unlock()
		return nil, &RunningError{Job: job}
	}
	claim := &run{m: m}
	m.active = claim
	m.mu.Unlock()
	r, err := m.claim(ctx, opts, claim)
	if err != nil {
		m.release(claim)
		return nil, err
	}
	return r, nil
}

func (m *Manager) release(r *run) {
	m.mu.Lock()
	if m.active == r {
		m.active = nil
	}
	m.mu.Unlock()
}

func (m *Manager) claim(ctx context.Context, opts Options, r *run) (*run, error) {
	st, err := m.Status(ctx)
	if err != nil {
		return nil, err
	}
	target := store.KeyRef{Backend: st.Keys.Backend, Version: st.Keys.LatestVersion}
	now := m.cfg.Now()
	sj, ok, err := m.cfg.Store.AcquireJob(ctx, jobName, m.cfg.Owner, now, now.Add(m.cfg.Lease))
	if err != nil {
		return nil, fmt.Errorf("rotation: acquire lease: %w", err)
	}
	prev, err := decodeJob(sj)
	if err != nil {
		return nil, err
	}
	if !ok {
		prev.State = StateRunning
		return nil, &RunningError{Job: prev}
	}
	job := Job{
		ID: randomID(13), State: StateRunning, Target: target, Total: st.stale(target),
		BatchSize: opts.BatchSize, Rate: opts.Rate, StartedAt: now, Owner: m.cfg.Owner,
	}
	interrupted := prev.State == StateRunning || prev.State == StateCancelled
	if interrupted && prev.Target == target && prev.ID != "" {
		// Resume: keep the id, counts and cursor; rows before the cursor
		// are done (or failed and counted).
		job = prev
		job.State, job.Owner, job.BatchSize, job.Rate, job.Error = StateRunning, m.cfg.Owner, opts.BatchSize, opts.Rate, ""
		// The saved counts may lag the rows (they are saved about once a
		// second); what is no longer stale is done.
		job.Done = max(0, job.Total-st.stale(target))
		m.log.Info("resuming rewrap", "job", job.ID, "done", job.Done, "total", job.Total)
	} else {
		m.log.Info("starting rewrap", "job", job.ID, "target_backend", target.Backend, "target_version", target.Version, "total", job.Total)
	}
	r.job, r.target, r.inFlight = job, target, opts.InFlight
	if err := r.save(ctx, false); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *run) save(ctx context.Context, release bool) error {
	b, err := json.Marshal(r.job)
	if err != nil {
		return fmt.Errorf("rotation: encode job: %w", err)
	}
	until := r.m.cfg.Now().Add(r.m.cfg.Lease)
	if release {
		until = time.Time{}
	}
	if err := r.m.cfg.Store.UpdateJob(ctx, jobName, r.m.cfg.Owner, b, until); err != nil {
		return fmt.Errorf("rotation: save job: %w", err)
	}
	r.job.LeaseUntil = until
	r.m.mu.Lock()
	r.saved = r.job
	r.m.mu.Unlock()
	return nil
}

// batchRetries is how often a batch is retried when the keyring or store
// fails as a whole (Vault restarting, a failover) before the job fails.
const batchRetries = 5

// loop rewraps page after page, then the encrypted settings, and saves the
// final state. It answers the final job; its error is the job's failure.
func (r *run) loop(ctx context.Context, progress func(Job)) (Job, error) {
	m := r.m
	defer m.release(r)
	m.cfg.Metrics.Running(true)
	defer m.cfg.Metrics.Running(false)
	err := r.rows(ctx, progress)
	if err == nil {
		err = r.settings(ctx)
	}
	if err == nil {
		// Rows that a login or re-enrollment moved to the target after the
		// job counted them were never fetched: what is no longer stale is
		// done.
		if st, serr := m.Status(ctx); serr == nil {
			r.job.Done = max(r.job.Done, r.job.Total-st.stale(r.target))
		}
	}
	r.job.FinishedAt = m.cfg.Now()
	switch {
	case err == nil && r.job.Failed == 0:
		r.job.State = StateSucceeded
	case err == nil:
		r.job.State = StateFailed
		r.job.Error = fmt.Sprintf("%d secrets could not be rewrapped; see the log", r.job.Failed)
		err = errors.New("rotation: " + r.job.Error)
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		r.job.State = StateCancelled
		r.job.Error = "cancelled"
	default:
		r.job.State = StateFailed
		r.job.Error = shortError(err)
	}
	// Save even when ctx is cancelled: a cancelled job must say so, and
	// must free the lease for the next run.
	saveCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if serr := r.save(saveCtx, true); serr != nil {
		err = errors.Join(err, serr)
	}
	m.cfg.Metrics.Remaining(r.job.Remaining())
	if progress != nil {
		progress(r.job)
	}
	m.log.Info("rewrap finished", "job", r.job.ID, "state", r.job.State, "done", r.job.Done, "failed", r.job.Failed, "error", r.job.Error)
	return r.job, err
}

// shortError keeps the job's error readable in the API: the sentinel
// meaning, not a chain of wrapped internals.
func shortError(err error) string {
	switch {
	case errors.Is(err, keyring.ErrUnavailable):
		return "key backend unavailable"
	case errors.Is(err, store.ErrConflict):
		return "lease lost to another process"
	default:
		msg := err.Error()
		if i := strings.LastIndex(msg, ": "); i > 0 && len(msg) > 120 {
			msg = msg[i+2:]
		}
		return msg
	}
}

// fetched is one page with its rewrapped ciphertexts.
type fetched struct {
	page    []store.SecretRef
	results []keyring.Result
	err     error
}

// rows moves every stale row through three overlapping stages: a reader
// fetches pages in id order, up to InFlight pages are rewrapped by the
// keyring at once, and this goroutine swaps each page into the store in
// page order (so the saved cursor only ever covers pages that are done).
// The keyring is never idle waiting for the store's fsyncs, nor for the
// next page to be read.
func (r *run) rows(ctx context.Context, progress func(Job)) error {
	m := r.m
	ctx, cancel := context.WithCancel(ctx)
	order := make(chan chan fetched, r.inFlight)
	var wg sync.WaitGroup
	wg.Go(func() { r.fetch(ctx, r.job.Cursor, order) })
	defer func() {
		cancel()
		for pending := range order { // let the reader and rewraps finish
			<-pending
		}
		wg.Wait()
	}()
	lastSave := m.cfg.Now()
	saveEvery := min(time.Second, m.cfg.Lease/3)
	for pending := range order {
		f := <-pending
		if f.err != nil {
			return f.err
		}
		if len(f.page) == 0 {
			return nil
		}
		began := time.Now()
		if err := r.swap(ctx, f); err != nil {
			return err
		}
		m.cfg.Metrics.BatchSeconds(time.Since(began))
		r.job.Cursor = f.page[len(f.page)-1].UserID
		// The saved cursor and counts may lag a little: resuming skips rows
		// already at the target anyway, and recounts what is done.
		if now := m.cfg.Now(); now.Sub(lastSave) >= saveEvery {
			if err := r.save(ctx, false); err != nil {
				return err
			}
			lastSave = now
		}
		m.cfg.Metrics.Remaining(r.job.Remaining())
		if progress != nil {
			progress(r.job)
		}
	}
	return ctx.Err()
}

// fetch reads pages from cursor on and starts a rewrap of each, at most
// r.inFlight at once; it sends each page's answer channel to order in
// page order, so the swapper takes them in order whatever order the
// rewraps finish in. An empty page means the end; an error ends the
// stream after it. It paces itself to the job's rate.
func (r *run) fetch(ctx context.Context, cursor string, order chan<- chan fetched) {
	defer close(order)
	m := r.m
	start := m.cfg.Now()
	handled := 0 // secrets fetched in this run, for the rate limit
	slots := make(chan struct{}, r.inFlight)
	var rewraps sync.WaitGroup
	defer rewraps.Wait()
	// send queues one answer; false when the job is over.
	send := func(f fetched) bool {
		done := make(chan fetched, 1)
		done <- f
		select {
		case order <- done:
			return f.err == nil && len(f.page) > 0
		case <-ctx.Done():
			return false
		}
	}
	for {
		// The page is read while the keyring works on the ones before
		// (one page read ahead of the rewraps): with one batch in flight
		// the keyring would otherwise wait for every read.
		page, err := m.cfg.Store.SecretsPage(ctx, cursor, r.target, r.job.BatchSize)
		if err != nil {
			send(fetched{err: fmt.Errorf("rotation: list secrets: %w", err)})
			return
		}
		if len(page) == 0 {
			send(fetched{})
			return
		}
		if r.job.Rate > 0 {
			// Pace so that handled secrets never run ahead of rate*elapsed.
			due := start.Add(time.Duration(float64(handled) / float64(r.job.Rate) * float64(time.Second)))
			if wait := due.Sub(m.cfg.Now()); wait > 0 {
				select {
				case <-ctx.Done():
					send(fetched{err: ctx.Err()})
					return
				case <-time.After(wait):
				}
			}
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			send(fetched{err: ctx.Err()})
			return
		}
		r.yield(ctx)
		done := make(chan fetched, 1)
		select {
		case order <- done:
		case <-ctx.Done():
			return
		}
		rewraps.Go(func() {
			defer func() { <-slots }()
			var results []keyring.Result
			err := retry(ctx, batchRetries, func() error {
				var err error
				results, err = r.rewrapPage(ctx, page)
				return err
			}, m.log)
			done <- fetched{page: page, results: results, err: err}
		})
		handled += len(page)
		cursor = page[len(page)-1].UserID
	}
}

// rewrapPage answers the page's secrets under the target key and the
// namespaced binding, in page order: one batch rewrap for the secrets
// already namespaced, and for each one still under the bare binding a
// decrypt under that binding and an encrypt under store.BindingUser (a
// rewrap keeps the derivation context, so it cannot change the binding).
func (r *run) rewrapPage(ctx context.Context, page []store.SecretRef) ([]keyring.Result, error) {
	keys := r.m.cfg.Keys
	results := make([]keyring.Result, len(page))
	var items []keyring.Item
	var at []int // page index of each item
	for i, ref := range page {
		if ref.Binding == store.BindingBare {
			res, err := rebind(ctx, keys, ref)
			if err != nil {
				return nil, err
			}
			results[i] = res
			continue
		}
		items = append(items, keyring.Item{BindTo: ref.BindTo(), Ciphertext: ref.Ciphertext})
		at = append(at, i)
	}
	if len(items) == 0 {
		return results, nil
	}
	rewrapped, err := keys.Rewrap(ctx, items)
	if err != nil {
		return nil, fmt.Errorf("rotation: rewrap: %w", err)
	}
	if len(rewrapped) != len(items) {
		return nil, fmt.Errorf("rotation: rewrap: %d results for %d secrets", len(rewrapped), len(items))
	}
	for j, res := range rewrapped {
		results[at[j]] = res
	}
	return results, nil
}

// rebind moves one secret from the bare binding to the namespaced one.
// A secret that does not open is that secret's failure; a keyring that
// does not answer fails the batch (it is retried).
func rebind(ctx context.Context, keys Keys, ref store.SecretRef) (keyring.Result, error) {
	pt, err := keys.Decrypt(ctx, ref.BindTo(), ref.Ciphertext)
	if err != nil {
		if errors.Is(err, keyring.ErrUnavailable) || ctx.Err() != nil {
			return keyring.Result{}, fmt.Errorf("rotation: rebind: %w", err)
		}
		return keyring.Result{Err: err}, nil
	}
	defer clear(pt)
	ct, err := keys.Encrypt(ctx, store.BindingUser.BindTo(ref.UserID), pt)
	if err != nil {
		return keyring.Result{}, fmt.Errorf("rotation: rebind: %w", err)
	}
	_, version, err := keyring.ParseVersion(ct)
	if err != nil {
		return keyring.Result{}, fmt.Errorf("rotation: rebind: %w", err)
	}
	return keyring.Result{Ciphertext: ct, Version: version}, nil
}

// swap stores one rewrapped page with compare-and-swap on each row.
func (r *run) swap(ctx context.Context, f fetched) error {
	m := r.m
	swaps := make([]store.Swap, 0, len(f.page))
	for i, res := range f.results {
		if res.Err != nil {
			m.log.Warn("secret not rewrapped", "job", r.job.ID, "user", f.page[i].UserID, "error", res.Err.Error())
			continue
		}
		// Every secret leaves under the namespaced binding: rewrapped ones
		// had it already, bare ones were rebound.
		swaps = append(swaps, store.Swap{UserID: f.page[i].UserID, Old: f.page[i].Ciphertext, New: res.Ciphertext, Version: res.Version, Binding: store.BindingUser})
	}
	// In transactions of swapChunk rows: a login's commit waits for at most
	// one of them (SQLite has one writer; PostgreSQL locks the rows). Each
	// committed chunk is counted at once (its rows are at the target now
	// and no later page lists them again); the page has one retry budget,
	// taken up again from the first chunk not committed, so a failing
	// store holds the page no longer than when it was one transaction.
	pending := swaps
	err := retry(ctx, batchRetries, func() error {
		for len(pending) > 0 {
			chunk := pending[:min(swapChunk, len(pending))]
			r.yield(ctx)
			n, err := m.cfg.Store.SwapSecrets(ctx, chunk)
			if err != nil {
				return fmt.Errorf("rotation: store rewrapped secrets: %w", err)
			}
			// A row that changed meanwhile was re-enrolled or rewrapped by
			// a login path with the latest key: it is done, just not by us.
			r.job.Done += len(chunk)
			m.cfg.Metrics.Count(n, len(chunk)-n, 0)
			pending = pending[len(chunk):]
		}
		return nil
	}, m.log)
	if err != nil {
		return err
	}
	// Failures are counted once the page is through: a page stopped
	// midway is fetched again on resume, and its failures with it.
	failed := len(f.results) - len(swaps)
	r.job.Failed += failed
	m.cfg.Metrics.Count(0, 0, failed)
	return nil
}

// swapChunk is the most rows one store transaction of the job swaps in.
// 100 rows hold SQLite's writer for about a millisecond here
// (BenchmarkSwapSecrets), for one more commit per 100 secrets.
const swapChunk = 100

// yield steps aside while foreground work is in progress.
func (r *run) yield(ctx context.Context) {
	if y := r.m.cfg.Foreground; y != nil {
		if d := y.Yield(ctx); d > 0 {
			r.m.cfg.Metrics.Yielded(d)
		}
	}
}

func retry(ctx context.Context, attempts int, fn func() error, log *slog.Logger) error {
	for i := 1; ; i++ {
		err := fn()
		if err == nil || i == attempts || ctx.Err() != nil {
			return err
		}
		wait := backoff.Policy{Min: 200 * time.Millisecond, Max: 5 * time.Second}.Wait(i)
		log.Warn("rewrap batch failed; retrying", "attempt", i, "error", err.Error(), "retry_in", wait.String())
		if err := backoff.Sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// settings moves the encrypted settings to the target key.
func (r *run) settings(ctx context.Context) error {
	m := r.m
	settings, err := m.storedSettings(ctx)
	if err != nil {
		return err
	}
	for _, s := range settings {
		v := s.value
		if !below(s.key, r.target) {
			continue
		}
		res, err := m.cfg.Keys.Rewrap(ctx, []keyring.Item{{BindTo: s.BindTo, Ciphertext: string(v)}})
		if err != nil {
			return fmt.Errorf("rotation: rewrap setting: %w", err)
		}
		if res[0].Err != nil {
			r.job.Failed++
			m.log.Error("setting not rewrapped", "job", r.job.ID, "setting", s.Key, "error", res[0].Err.Error())
			continue
		}
		if _, err := m.cfg.Store.SwapSetting(ctx, s.Key, v, []byte(res[0].Ciphertext)); err != nil {
			return fmt.Errorf("rotation: store setting: %w", err)
		}
		r.job.Done++
	}
	return nil
}

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
