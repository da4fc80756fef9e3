package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/totpgate/totpgate/config"
	"github.com/totpgate/totpgate/keyring"
	"github.com/totpgate/totpgate/mfa"
	"github.com/totpgate/totpgate/rotation"
	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/postgres"
	"github.com/totpgate/totpgate/store/sqlite"
	"github.com/totpgate/totpgate/vaultkeys"
)

// openStore opens the configured store.
func openStore(ctx context.Context, cfg config.Store) (store.Store, error) {
	if cfg.Driver == "postgres" {
		dsn := cfg.DSN
		if cfg.DSNFile != "" {
			b, err := os.ReadFile(cfg.DSNFile)
			if err != nil {
				return nil, fmt.Errorf("store.dsn_file: %w", err)
			}
			dsn = strings.TrimSpace(string(b))
		}
		st, err := postgres.Open(ctx, dsn, postgres.Options{MaxConns: int32(cfg.MaxConns), StatementTimeout: cfg.StatementTimeout})
		if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		return st, nil
	}
	st, err := sqlite.Open(ctx, cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return st, nil
}

// openState opens what the one-shot commands (keys, users import) work on:
// the logger, the store and the keyring, strictly (a database that is down
// is an error here, not something to wait for). close closes both.
func openState(ctx context.Context, cfg config.Config, stderr io.Writer) (*slog.Logger, store.Store, keyring.Keyring, func(), error) {
	log, err := newLogger(stderr, cfg.Log.Level)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	st, err := openStore(ctx, cfg.Store)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	keys, closeKeys, err := openKeyring(ctx, cfg.Keyring, log)
	if err != nil {
		st.Close()
		return nil, nil, nil, nil, err
	}
	return log, st, keys, func() { closeKeys(); st.Close() }, nil
}

// openKeyring opens the configured keyring; with keyring.migrate_from set,
// one that writes to the new backend and still reads the old one.
func openKeyring(ctx context.Context, cfg config.Keyring, log *slog.Logger) (keyring.Keyring, func() error, error) {
	noop := func() error { return nil }
	open := func(backend string) (keyring.Keyring, func() error, error) {
		if backend == keyring.BackendLocal {
			k, err := keyring.OpenLocal(cfg.LocalPath)
			if err != nil {
				return nil, nil, fmt.Errorf("keyring: %w", err)
			}
			return k, noop, nil
		}
		k, err := vaultkeys.Open(ctx, vaultConfig(cfg.Vault, log))
		if err != nil {
			return nil, nil, fmt.Errorf("keyring: %w", err)
		}
		return k, k.Close, nil
	}
	primary, closePrimary, err := open(cfg.Backend)
	if err != nil {
		return nil, nil, err
	}
	if cfg.MigrateFrom == "" {
		return primary, closePrimary, nil
	}
	previous, closePrevious, err := open(cfg.MigrateFrom)
	if err != nil {
		_ = closePrimary()
		return nil, nil, fmt.Errorf("keyring.migrate_from: %w", err)
	}
	closeBoth := func() error { return errors.Join(closePrevious(), closePrimary()) }
	m, err := keyring.NewMigrating(primary, cfg.Backend, previous, cfg.MigrateFrom)
	if err != nil {
		_ = closeBoth()
		return nil, nil, err
	}
	log.Info("keyring migration mode: writing to one keyring, still reading the other", "to", cfg.Backend, "from", cfg.MigrateFrom)
	return m, closeBoth, nil
}

func vaultConfig(v config.Vault, log *slog.Logger) vaultkeys.Config {
	var auth vaultkeys.Auth
	mount := func(def string) string {
		if v.Auth.Mount != "" {
			return v.Auth.Mount
		}
		return def
	}
	switch v.Auth.Method {
	case "kubernetes":
		auth = vaultkeys.Kubernetes{Mount: mount("kubernetes"), Role: v.Auth.Role, TokenFile: v.Auth.ServiceAccount}
	case "approle":
		auth = vaultkeys.AppRole{Mount: mount("approle"), RoleID: v.Auth.RoleID, SecretIDFile: v.Auth.SecretIDFile}
	default:
		auth = vaultkeys.Token{Value: v.Auth.Token, File: v.Auth.TokenFile, PollInterval: v.Auth.TokenFilePoll}
	}
	return vaultkeys.Config{
		Address: v.Address, CACert: v.CACert, ClientCert: v.ClientCert, ClientKey: v.ClientKey, TLSServerName: v.TLSServerName,
		Mount: v.Mount, KeyName: v.Key, CreateKey: v.CreateKey,
		Timeout: v.Timeout, MaxRetries: v.MaxRetries, RetryWaitMin: 50 * time.Millisecond, RetryWaitMax: v.Timeout / 4,
		Auth: auth, Logger: log,
	}
}

// encryptedSettings are the settings that hold keyring ciphertexts.
var encryptedSettings = []rotation.EncryptedSetting{{Key: mfa.PepperSetting, BindTo: mfa.PepperBinding}}

const keysUsage = `Usage:
  totpgate keys status [flags]                     key versions and stored secrets per version
  totpgate keys rotate [flags]                     add a key version; new secrets use it at once
  totpgate keys rewrap [--batch-size N] [--rate N] [--in-flight N] [--min-decryption-version] [--via URL] [flags]
                                                   move every stored secret to the newest version
                                                   (--via: in the running sidecar at its admin URL,
                                                   the way to go with SQLite)
  totpgate keys min-decryption-version VERSION [flags]
                                                   retire older versions (refused while secrets use them)

The flags are the serve flags (--config, --store.path, --keyring.*); the
command works on the same store and keyring as the running sidecars, which
keep serving logins meanwhile.
`

func keysCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, keysUsage)
		return errUsage
	}
	sub, rest := args[0], args[1:]
	var opts rotation.Options
	var lease time.Duration
	var raise bool
	var via string
	extra := func(fs *flag.FlagSet) {}
	switch sub {
	case "status", "rotate":
	case "rewrap":
		extra = func(fs *flag.FlagSet) {
			fs.IntVar(&opts.BatchSize, "batch-size", 200, "secrets per keyring request (1..1000)")
			fs.IntVar(&opts.Rate, "rate", 0, "most secrets per second; 0: no limit")
			fs.IntVar(&opts.InFlight, "in-flight", rotation.DefaultInFlight, fmt.Sprintf("batches the keyring works on at once (1..%d)", rotation.MaxInFlight))
			fs.DurationVar(&lease, "lease", 30*time.Second, "how long the job's lease lasts without a heartbeat; a killed job resumes after it")
			fs.BoolVar(&raise, "min-decryption-version", false, "when every secret is on the newest version, retire the older ones")
			fs.StringVar(&via, "via", "", "admin listener of a running sidecar (e.g. http://127.0.0.1:9090): the job runs there, where it shares the sidecar's one writer to SQLite; needs the admin token (--admin.token-file or TOTPGATE_ADMIN_TOKEN)")
		}
	case "min-decryption-version":
		if len(rest) == 0 {
			fmt.Fprint(stderr, keysUsage)
			return fmt.Errorf("%w: min-decryption-version needs a version", errUsage)
		}
	default:
		fmt.Fprintf(stderr, "unknown keys command %q\n\n%s", sub, keysUsage)
		return errUsage
	}
	var version int
	if sub == "min-decryption-version" {
		v, err := strconv.Atoi(rest[0])
		if err != nil || v < 1 {
			return fmt.Errorf("%w: version %q must be a positive integer", errUsage, rest[0])
		}
		version, rest = v, rest[1:]
	}
	cfg, err := loadConfigWith("keys "+sub, rest, getenv, stderr, extra)
	if err != nil {
		return err
	}
	if via != "" {
		return rewrapVia(ctx, via, cfg.Admin, opts, raise, stdout, stderr)
	}
	log, st, keys, closeState, err := openState(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	defer closeState()
	m, err := rotation.New(rotation.Config{Store: st, Keys: keys, Settings: encryptedSettings, Logger: log, Lease: lease})
	if err != nil {
		return err
	}
	switch sub {
	case "status":
		s, err := m.Status(ctx)
		if err != nil {
			return err
		}
		printStatus(stdout, s)
	case "rotate":
		s, err := m.Rotate(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "rotated: new secrets now use %s v%d\n", s.Keys.Backend, s.Keys.LatestVersion)
		printStatus(stdout, s)
	case "min-decryption-version":
		s, err := m.RaiseMinDecryptionVersion(ctx, version)
		if err != nil {
			return err
		}
		printStatus(stdout, s)
	case "rewrap":
		return rewrap(ctx, m, opts, raise, stdout, stderr)
	}
	return nil
}

func rewrap(ctx context.Context, m *rotation.Manager, opts rotation.Options, raise bool, stdout, stderr io.Writer) error {
	bar := newProgress(stderr)
	job, err := m.Rewrap(ctx, opts, bar.update)
	bar.finish()
	var running *rotation.RunningError
	if errors.As(err, &running) {
		return fmt.Errorf("rewrap %s is already running (owner %s, lease until %s); if that process died, run this again after its lease ends and it resumes",
			running.Job.ID, running.Job.Owner, running.Job.LeaseUntil.Format(time.RFC3339))
	}
	if job.ID != "" {
		fmt.Fprintf(stdout, "rewrap %s %s: %d of %d secrets moved to %s v%d, %d failed\n",
			job.ID, job.State, job.Done, job.Total, job.Target.Backend, job.Target.Version, job.Failed)
	}
	if err != nil {
		return err
	}
	if raise {
		s, err := m.RaiseMinDecryptionVersion(ctx, job.Target.Version)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "minimum decryption version raised to %d\n", s.Keys.MinDecryptionVersion)
	}
	return nil
}

func printStatus(w io.Writer, s rotation.Status) {
	minEnc := strconv.Itoa(s.Keys.MinEncryptionVersion)
	if s.Keys.MinEncryptionVersion == 0 {
		minEnc = "0 (latest)"
	}
	fmt.Fprintf(w, "backend                  %s\nkey                      %s\nlatest version           %d\nmin decryption version   %d\nmin encryption version   %s\nstored secrets           %d\n",
		s.Keys.Backend, s.Keys.KeyName, s.Keys.LatestVersion, s.Keys.MinDecryptionVersion, minEnc, s.Total)
	for _, kc := range s.Versions() {
		fmt.Fprintf(w, "  %s v%-4d %d\n", kc.Backend, kc.Version, kc.Secrets)
	}
	if s.BareTotal > 0 {
		fmt.Fprintf(w, "unnamespaced secrets     %d (written before key namespaces; run `totpgate keys rewrap` to move them)\n", s.BareTotal)
	}
}

// progress draws a bar on a terminal and prints a line every few seconds
// elsewhere (CI logs, kubectl exec without -t).
type progress struct {
	w        io.Writer
	tty      bool
	start    time.Time
	last     time.Time
	lastLine string
}

func newProgress(w io.Writer) *progress {
	tty := false
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progress{w: w, tty: tty, start: time.Now()}
}

func (p *progress) update(j rotation.Job) {
	now := time.Now()
	if !p.tty && now.Sub(p.last) < 2*time.Second && j.State == rotation.StateRunning {
		return
	}
	p.last = now
	handled := j.Done + j.Failed
	pct := 100.0
	if j.Total > 0 {
		pct = 100 * float64(handled) / float64(j.Total)
	}
	rate := float64(handled) / max(now.Sub(p.start).Seconds(), 0.001)
	const width = 30
	filled := min(width, int(pct/100*width))
	line := fmt.Sprintf("[%s%s] %5.1f%% %d/%d secrets, %d failed, %.0f/s",
		strings.Repeat("#", filled), strings.Repeat(".", width-filled), pct, handled, j.Total, j.Failed, rate)
	if p.tty {
		fmt.Fprintf(p.w, "\r%s", line)
	} else {
		fmt.Fprintln(p.w, line)
	}
	p.lastLine = line
}

func (p *progress) finish() {
	if p.tty && p.lastLine != "" {
		fmt.Fprintln(p.w)
	}
}
