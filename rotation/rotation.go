// Package rotation runs key rotation for the stored secrets: status (which
// key version encrypts how many secrets), rotate, the rewrap job that moves
// every stored secret to the newest key version while logins go on, and
// raising the minimum decryption version once nothing older remains.
//
// The rewrap job holds a lease in the store, so one job runs at a time
// across every replica and every `totpgate keys rewrap`; it saves its
// cursor after each batch, so a job that was killed resumes where it
// stopped once its lease runs out. Each batch is swapped in with
// compare-and-swap on the old ciphertext: a login or re-enrollment that
// changed a row meanwhile always wins over the rewrap.
package rotation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/totpgate/totpgate/keyring"
	"github.com/totpgate/totpgate/store"
)

// Keys is what rotation needs of the keyring. Encrypt and Decrypt move a
// secret still under the bare binding to its namespaced one, which a
// rewrap cannot do (it keeps the derivation context).
type Keys interface {
	Encrypt(ctx context.Context, bindTo string, plaintext []byte) (string, error)
	Decrypt(ctx context.Context, bindTo string, ciphertext string) ([]byte, error)
	Rewrap(ctx context.Context, items []keyring.Item) ([]keyring.Result, error)
	Rotate(ctx context.Context) (keyring.Status, error)
	Status(ctx context.Context) (keyring.Status, error)
	SetMinDecryptionVersion(ctx context.Context, v int) (keyring.Status, error)
}

// Store is what rotation needs of the store.
type Store interface {
	SecretsPage(ctx context.Context, after string, target store.KeyRef, limit int) ([]store.SecretRef, error)
	SwapSecrets(ctx context.Context, swaps []store.Swap) (int, error)
	CountByKey(ctx context.Context) (map[store.KeyRef]int, error)
	CountBareBindings(ctx context.Context) (map[store.KeyRef]int, error)
	Setting(ctx context.Context, key string) ([]byte, error)
	SwapSetting(ctx context.Context, key string, old, replacement []byte) (bool, error)
	AcquireJob(ctx context.Context, name, owner string, now, leaseUntil time.Time) (store.Job, bool, error)
	UpdateJob(ctx context.Context, name, owner string, state []byte, leaseUntil time.Time) error
	GetJob(ctx context.Context, name string) (store.Job, error)
}

// EncryptedSetting is a setting whose value is a keyring ciphertext bound
// to BindTo (the recovery-code key). Rewrap moves it with the users'
// secrets and status counts it, so raising the minimum decryption version
// can never strand it.
type EncryptedSetting struct {
	Key, BindTo string
}

// Sentinel errors.
var (
	// ErrRunning: another process holds the rewrap lease. The error is a
	// *RunningError carrying that job.
	ErrRunning = errors.New("rotation: a rewrap is already running")
	// ErrOldVersionsRemain: stored secrets still use versions below the
	// requested minimum decryption version.
	ErrOldVersionsRemain = errors.New("rotation: stored secrets use older key versions")
	// ErrInvalidOptions: a rewrap option is out of range.
	ErrInvalidOptions = errors.New("rotation: invalid rewrap options")
	// ErrNoJob: no rewrap was ever started.
	ErrNoJob = errors.New("rotation: no rewrap job")
)

// RunningError is ErrRunning with the job that runs.
type RunningError struct{ Job Job }

func (e *RunningError) Error() string {
	return fmt.Sprintf("rotation: rewrap %s is already running (owner %s)", e.Job.ID, e.Job.Owner)
}

// Is makes errors.Is(err, ErrRunning) true.
func (e *RunningError) Is(target error) bool { return target == ErrRunning }

// OldVersionsError is ErrOldVersionsRemain with the count.
type OldVersionsError struct{ Remaining, Version int }

func (e *OldVersionsError) Error() string {
	return fmt.Sprintf("rotation: %d stored secrets use key versions below %d; run a rewrap first", e.Remaining, e.Version)
}

// Is makes errors.Is(err, ErrOldVersionsRemain) true.
func (e *OldVersionsError) Is(target error) bool { return target == ErrOldVersionsRemain }

// Job states, as in the API.
const (
	StateRunning   = "running"
	StateSucceeded = "succeeded"
	StateFailed    = "failed"
	StateCancelled = "cancelled"
)

// Job is a rewrap job as saved in the store after every batch.
type Job struct {
	ID         string       `json:"id"`
	State      string       `json:"state"`
	Target     store.KeyRef `json:"target"`
	Total      int          `json:"total"`
	Done       int          `json:"done"`
	Failed     int          `json:"failed"`
	Cursor     string       `json:"cursor"` // last user id handled
	BatchSize  int          `json:"batch_size"`
	Rate       int          `json:"rate_per_second"`
	StartedAt  time.Time    `json:"started_at"`
	FinishedAt time.Time    `json:"finished_at,omitzero"`
	Error      string       `json:"error,omitempty"`
	Owner      string       `json:"owner"`
	// LeaseUntil is not saved in State; it is filled in from the lease.
	LeaseUntil time.Time `json:"-"`
}

// Remaining is how many secrets the job has not handled yet.
func (j Job) Remaining() int { return max(0, j.Total-j.Done-j.Failed) }

// Options tune a rewrap.
type Options struct {
	BatchSize int // secrets per Vault request; 1..1000, default 200
	Rate      int // most secrets per second; 0: no limit
	// InFlight is how many batches the keyring works on at once; 1..16,
	// default 4. One in flight leaves the keyring idle while a page is
	// read and while the previous one is answered.
	InFlight int
}

// DefaultInFlight and MaxInFlight bound Options.InFlight.
const (
	DefaultInFlight = 4
	MaxInFlight     = 16
)

func (o Options) withDefaults() (Options, error) {
	if o.BatchSize == 0 {
		o.BatchSize = 200
	}
	if o.BatchSize < 1 || o.BatchSize > 1000 {
		return o, fmt.Errorf("%w: batch size %d must be 1..1000", ErrInvalidOptions, o.BatchSize)
	}
	if o.Rate < 0 {
		return o, fmt.Errorf("%w: rate %d must not be negative", ErrInvalidOptions, o.Rate)
	}
	if o.InFlight == 0 {
		o.InFlight = DefaultInFlight
	}
	if o.InFlight < 1 || o.InFlight > MaxInFlight {
		return o, fmt.Errorf("%w: in flight %d must be 1..%d", ErrInvalidOptions, o.InFlight, MaxInFlight)
	}
	return o, nil
}

// Observer is told how a rewrap job goes (metrics.Rewrap implements it).
//
// An Observer must be safe for concurrent use.
type Observer interface {
	Count(rewrapped, changed, failed int)
	Running(on bool)
	BatchSeconds(d time.Duration)
	Remaining(n int)
	// Yielded adds time the job stepped aside for foreground work. The
	// job's reader and its swapper both yield, so Yielded is called from
	// two goroutines at once and the sum can pass the job's wall time.
	Yielded(d time.Duration)
}

// noObserver stands in when Config.Metrics is nil.
type noObserver struct{}

func (noObserver) Count(int, int, int)        {}
func (noObserver) Running(bool)               {}
func (noObserver) BatchSeconds(time.Duration) {}
func (noObserver) Yielded(time.Duration)      {}
func (noObserver) Remaining(int)              {}

// Config is the Manager's wiring.
type Config struct {
	Store    Store
	Keys     Keys
	Settings []EncryptedSetting
	Logger   *slog.Logger
	Metrics  Observer // nil: no metrics
	Now      func() time.Time
	// Lease is how long a rewrap's lease lasts without a heartbeat; a
	// killed job can be resumed by another process after this. Default 30 s.
	Lease time.Duration
	// Owner names this process in the lease; default host-pid-random.
	Owner string
	// Foreground is the work the job steps aside for: before each batch
	// goes to the keyring and before each store transaction the job waits
	// while a login's second factor is being checked (bounded by the
	// Yielder). Nil: the job never waits.
	Foreground Yielder
}

// Yielder waits while foreground work is in progress and says how long it
// waited (foreground.Gate).
type Yielder interface {
	Yield(ctx context.Context) time.Duration
}

// Manager runs rotation operations. Safe for concurrent use.
type Manager struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	base   context.Context // set by Serve: background jobs run under it
	active *run            // the job this process runs, if any
	wg     sync.WaitGroup
}

// New returns a Manager.
func New(cfg Config) (*Manager, error) {
	if cfg.Store == nil || cfg.Keys == nil {
		return nil, errors.New("rotation: store and keys are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 30 * time.Second
	}
	if cfg.Metrics == nil {
		cfg.Metrics = noObserver{}
	}
	if cfg.Owner == "" {
		host, _ := os.Hostname()
		cfg.Owner = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), randomID(4))
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg, log: log.With("component", "rotation")}, nil
}

const jobName = "rewrap"

// Status is the key status with the stored secrets per key.
type Status struct {
	Keys keyring.Status
	// ByKey counts stored secrets (users' secrets and encrypted settings)
	// per backend and version.
	ByKey map[store.KeyRef]int
	Total int
	// Bare counts, per backend and version, the users' secrets still
	// under the bare binding (store.BindingBare), written before
	// namespaces: a rewrap moves them even when their key is current.
	Bare      map[store.KeyRef]int
	BareTotal int
}

// Versions lists ByKey sorted by backend, then version.
func (s Status) Versions() []KeyCount {
	out := make([]KeyCount, 0, len(s.ByKey))
	for k, n := range s.ByKey {
		if n > 0 {
			out = append(out, KeyCount{KeyRef: k, Secrets: n})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Backend != out[j].Backend {
			return out[i].Backend < out[j].Backend
		}
		return out[i].Version < out[j].Version
	})
	return out
}

// KeyCount is one row of Status.Versions.
type KeyCount struct {
	store.KeyRef
	Secrets int
}

// Status reads the keyring status and counts stored secrets per key.
func (m *Manager) Status(ctx context.Context) (Status, error) {
	ks, err := m.cfg.Keys.Status(ctx)
	if err != nil {
		return Status{}, fmt.Errorf("rotation: key status: %w", err)
	}
	counts, err := m.cfg.Store.CountByKey(ctx)
	if err != nil {
		return Status{}, fmt.Errorf("rotation: count secrets: %w", err)
	}
	settings, err := m.storedSettings(ctx)
	if err != nil {
		return Status{}, err
	}
	for _, s := range settings {
		counts[s.key]++
	}
	bare, err := m.cfg.Store.CountBareBindings(ctx)
	if err != nil {
		return Status{}, fmt.Errorf("rotation: count bare bindings: %w", err)
	}
	st := Status{Keys: ks, ByKey: counts, Bare: bare}
	for _, n := range counts {
		st.Total += n
	}
	for _, n := range bare {
		st.BareTotal += n
	}
	return st, nil
}

// storedSetting is an encrypted setting as stored, with its key version.
type storedSetting struct {
	EncryptedSetting
	value []byte
	key   store.KeyRef
}

// storedSettings reads the encrypted settings that exist (status counts
// them, the rewrap moves them).
func (m *Manager) storedSettings(ctx context.Context) ([]storedSetting, error) {
	var out []storedSetting
	for _, s := range m.cfg.Settings {
		v, err := m.cfg.Store.Setting(ctx, s.Key)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("rotation: read setting: %w", err)
		}
		backend, version, err := keyring.ParseVersion(string(v))
		if err != nil {
			return nil, fmt.Errorf("rotation: setting %s: %w", s.Key, err)
		}
		out = append(out, storedSetting{EncryptedSetting: s, value: v, key: store.KeyRef{Backend: backend, Version: version}})
	}
	return out, nil
}

// below reports whether k is not at target: another backend or an older
// version.
func below(k, target store.KeyRef) bool {
	return k.Backend != target.Backend || k.Version < target.Version
}

// olderThan counts stored secrets whose key is not at target.
func (s Status) olderThan(target store.KeyRef) int {
	n := 0
	for k, c := range s.ByKey {
		if below(k, target) {
			n += c
		}
	}
	return n
}

// stale counts stored secrets a rewrap to target still has to move: on
// an older key, or under the bare binding.
func (s Status) stale(target store.KeyRef) int {
	n := s.olderThan(target)
	for k, c := range s.Bare {
		if !below(k, target) {
			n += c
		}
	}
	return n
}

// Rotate adds a key version and answers the new status.
func (m *Manager) Rotate(ctx context.Context) (Status, error) {
	if _, err := m.cfg.Keys.Rotate(ctx); err != nil {
		return Status{}, fmt.Errorf("rotation: rotate: %w", err)
	}
	m.log.Info("key rotated")
	return m.Status(ctx)
}

// RaiseMinDecryptionVersion retires key versions below v, only when no
// stored secret still needs one of them.
func (m *Manager) RaiseMinDecryptionVersion(ctx context.Context, v int) (Status, error) {
	st, err := m.Status(ctx)
	if err != nil {
		return Status{}, err
	}
	if n := st.olderThan(store.KeyRef{Backend: st.Keys.Backend, Version: v}); n > 0 {
		return st, &OldVersionsError{Remaining: n, Version: v}
	}
	if _, err := m.cfg.Keys.SetMinDecryptionVersion(ctx, v); err != nil {
		return Status{}, fmt.Errorf("rotation: set min decryption version: %w", err)
	}
	m.log.Info("minimum decryption version raised", "version", v)
	return m.Status(ctx)
}

// LatestJob answers the most recent rewrap job. A job saved as running
// whose lease has run out was interrupted (its process died); it is
// answered as failed, and the next rewrap resumes it.
func (m *Manager) LatestJob(ctx context.Context) (Job, error) {
	sj, err := m.cfg.Store.GetJob(ctx, jobName)
	if errors.Is(err, store.ErrNotFound) {
		return Job{}, ErrNoJob
	}
	if err != nil {
		return Job{}, fmt.Errorf("rotation: read job: %w", err)
	}
	j, err := decodeJob(sj)
	if err != nil {
		return Job{}, err
	}
	if j.ID == "" {
		return Job{}, ErrNoJob
	}
	if j.State == StateRunning && m.cfg.Now().After(j.LeaseUntil) {
		j.State = StateFailed
		j.Error = "interrupted; start a rewrap again to resume"
	}
	return j, nil
}

func decodeJob(sj store.Job) (Job, error) {
	var j Job
	if len(sj.State) > 0 {
		if err := json.Unmarshal(sj.State, &j); err != nil {
			return Job{}, fmt.Errorf("rotation: decode job: %w", err)
		}
	}
	j.LeaseUntil = sj.LeaseUntil
	if j.Owner == "" {
		j.Owner = sj.Owner
	}
	return j, nil
}
