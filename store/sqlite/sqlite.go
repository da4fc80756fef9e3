// Package sqlite implements store.Store in a single SQLite file, for
// single-node installs. It uses modernc.org/sqlite (pure Go, no cgo).
//
// # Concurrency
//
// SQLite allows one writer at a time. The Store keeps two connection pools
// on the same file: a write pool of exactly one connection, through which
// every statement that changes data goes, and a pool of read-only
// connections (PRAGMA query_only) for plain reads, which WAL mode lets run
// next to the writer. Serialising writes in Go means goroutines of this
// process never fight over the SQLite write lock; they queue for the one
// connection instead (honouring their context). Transactions still begin
// with BEGIN IMMEDIATE (_txlock=immediate), and busy_timeout is set, so a
// second process on the same file (an admin command, a misconfigured
// second replica) waits for the lock instead of failing a read-to-write
// upgrade with SQLITE_BUSY.
//
// Every check-and-update that security depends on is one statement
// (UPDATE/DELETE ... WHERE <condition> ... RETURNING) or runs inside one
// BEGIN IMMEDIATE transaction, so it is atomic across goroutines and
// processes.
//
// # Durability
//
// The database runs in WAL mode with synchronous=FULL: every commit is
// fsynced before it returns. NORMAL would survive a crash of the process but
// could lose the last commits on power loss or an OS crash, and a lost
// commit here can be a spent recovery code or an accepted time step coming
// back to life (a replay) or a forgotten lockout. A login with a code costs
// one commit (SettleAttempt counts, checks and accepts in one transaction),
// and concurrent logins share commits (group commit, see settle.go), so the
// fsync stays cheap; WithSynchronous lets an operator trade that away.
//
// # Encoding
//
// Times are stored as INTEGER unix milliseconds (UTC); the zero time is 0
// and reads back as the zero time. Byte slices are BLOBs. Schema changes are
// versioned migrations embedded from migrations/*.sql and applied at Open.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/internal/column"
	"github.com/totpgate/totpgate/store/internal/outcome"
)

// ErrSchemaTooNew is returned by Open when the database was migrated by a
// newer totpgate than this one: running older code against a newer schema
// could silently drop or misread state, so Open refuses.
var ErrSchemaTooNew = errors.New("sqlite: database schema is newer than this binary supports")

// driver names this store in its errors.
const driver outcome.Driver = "sqlite"

// Option configures Open.
type Option func(*config)

type config struct {
	busyTimeout time.Duration
	readConns   int
	synchronous string
}

// WithBusyTimeout sets how long a connection waits for a lock held by
// another process before failing (default 5s).
func WithBusyTimeout(d time.Duration) Option {
	return func(c *config) { c.busyTimeout = d }
}

// WithReadConns sets the size of the read-only connection pool (default 4).
func WithReadConns(n int) Option {
	return func(c *config) { c.readConns = n }
}

// WithSynchronous sets PRAGMA synchronous: "FULL" (default) or "NORMAL".
// See the package documentation for why FULL is the default.
func WithSynchronous(mode string) Option {
	return func(c *config) { c.synchronous = strings.ToUpper(mode) }
}

// Store is a store.Store backed by one SQLite file. It is safe for
// concurrent use.
type Store struct {
	w      *sql.DB // exactly one connection: all writes
	r      *sql.DB // read-only connections: plain reads
	settle *committer
	// getUser is prepared once: it is read twice per login, and parsing
	// it cost more than running it.
	getUser *sql.Stmt
}

// Open opens (creating it if needed, with mode 0600) the SQLite database at
// path, a plain file system path, and applies pending schema migrations.
// It fails with ErrSchemaTooNew when the database has migrations this
// binary does not know.
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	cfg := config{busyTimeout: 5 * time.Second, readConns: 4, synchronous: "FULL"}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.synchronous != "FULL" && cfg.synchronous != "NORMAL" {
		return nil, fmt.Errorf("sqlite: open: synchronous must be FULL or NORMAL, not %q", cfg.synchronous)
	}
	if cfg.readConns < 1 {
		return nil, fmt.Errorf("sqlite: open: need at least one read connection")
	}
	if cfg.busyTimeout < 0 {
		return nil, fmt.Errorf("sqlite: open: negative busy timeout")
	}
	if path == "" || strings.HasPrefix(path, ":") || strings.HasPrefix(path, "file:") {
		// In-memory databases would not be shared by the two pools, and a
		// URI would bypass the DSN built here.
		return nil, fmt.Errorf("sqlite: open: path must be a file system path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	// Create the file ourselves so it is never world-readable, not even for
	// a moment. SQLite gives the -wal and -shm files the mode of the main
	// file. An existing file keeps the mode its operator gave it.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case err == nil:
		if err := f.Close(); err != nil {
			return nil, fmt.Errorf("sqlite: open: %w", err)
		}
	case errors.Is(err, fs.ErrExist):
	default:
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}

	// file: URI, so a path holding '?' or '#' cannot be mistaken for
	// parameters. Pragmas are applied by the driver on every new connection.
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}
	if !strings.HasPrefix(u.Path, "/") {
		u.Path = "/" + u.Path // Windows: file:///C:/...
	}
	common := url.Values{}
	common.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", cfg.busyTimeout.Milliseconds()))
	common.Add("_pragma", "foreign_keys(1)")
	common.Set("_txlock", "immediate")

	wq := cloneValues(common)
	wq.Add("_pragma", "journal_mode(WAL)")
	wq.Add("_pragma", "synchronous("+cfg.synchronous+")")
	rq := cloneValues(common)
	rq.Add("_pragma", "query_only(1)")

	w, err := sql.Open("sqlite", u.String()+"?"+wq.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	// Open the writer first: it switches the file to WAL before any reader
	// connects.
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	// SQLite keeps the old journal mode, silently, where WAL is impossible
	// (e.g. some network file systems); the read pool's design needs WAL.
	var mode string
	if err := w.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		w.Close()
		return nil, fmt.Errorf("sqlite: open: journal mode is %q, not WAL (is the file on a network file system?)", mode)
	}
	if err := migrate(ctx, w, migrations); err != nil {
		w.Close()
		return nil, err
	}

	r, err := sql.Open("sqlite", u.String()+"?"+rq.Encode())
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	r.SetMaxOpenConns(cfg.readConns)
	r.SetMaxIdleConns(cfg.readConns)
	if err := r.PingContext(ctx); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	getUser, err := r.PrepareContext(ctx, `SELECT `+column.UserColumns+` FROM users WHERE id = ?`)
	if err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("sqlite: open: prepare: %w", err)
	}
	settle, err := startCommitter(ctx, w)
	if err != nil {
		getUser.Close()
		r.Close()
		w.Close()
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	return &Store{w: w, r: r, getUser: getUser, settle: settle}, nil
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// execCount runs one write statement on the writer and returns how many
// rows it changed, with errors wrapped for op.
func (s *Store) execCount(ctx context.Context, op, query string, args ...any) (int64, error) {
	n, err := rowsChanged(s.w.ExecContext(ctx, query, args...))
	return outcome.Of(driver, op, n, err)
}

// named binds args by name (sql.Named), for a statement with @name
// parameters shared with the PostgreSQL store.
func named(args map[string]any) []any {
	out := make([]any, 0, len(args))
	for k, v := range args {
		out = append(out, sql.Named(k, v))
	}
	return out
}

// rowsChanged is how many rows the statement that answered res, err
// changed.
func rowsChanged(res sql.Result, err error) (int64, error) {
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// inTx runs fn in a transaction (BEGIN IMMEDIATE through _txlock) and
// commits when fn returns nil.
func inTx(ctx context.Context, db *sql.DB, fn func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// Ping checks that both the read pool and the write connection answer.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.r.QueryRowContext(ctx, `SELECT 1`).Scan(&one); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	if err := s.w.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	return nil
}

// Close closes both pools. The last connection to close checkpoints the
// WAL into the main file.
func (s *Store) Close() error {
	s.settle.stop()
	s.getUser.Close()
	errR := s.r.Close()
	errW := s.w.Close()
	if err := errors.Join(errR, errW); err != nil {
		return fmt.Errorf("sqlite: close: %w", err)
	}
	return nil
}

var _ store.Store = (*Store)(nil)
