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
	"embed"
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
	"github.com/totpgate/totpgate/store/migration"
)

// ErrSchemaTooNew is returned by Open when the database was migrated by a
// newer totpgate than this one: running older code against a newer schema
// could silently drop or misread state, so Open refuses.
var ErrSchemaTooNew = errors.New("sqlite: database schema is newer than this binary supports")

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
	getUser, err := r.PrepareContext(ctx, `SELECT `+userColumns+` FROM users WHERE id = ?`)
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

// ---- migrations ----

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrations are the embedded migrations, checked when the package loads.
var migrations = migration.MustLoad(migrationFiles, "migrations")

// migrate applies the migrations db has not seen, each in its own
// BEGIN IMMEDIATE transaction together with its schema_migrations row, so a
// crash leaves either the whole migration or none of it, and two processes
// starting at once do not apply one twice.
func migrate(ctx context.Context, db *sql.DB, ms []migration.Migration) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    INTEGER NOT NULL PRIMARY KEY,
	applied_at INTEGER NOT NULL
) STRICT`); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	latest := ms[len(ms)-1].Version
	for _, m := range ms {
		err := inTx(ctx, db, func(tx *sql.Tx) error {
			var cur int
			if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&cur); err != nil {
				return err
			}
			if cur > latest {
				return fmt.Errorf("%w: database is at version %d, this binary knows up to %d; upgrade totpgate", ErrSchemaTooNew, cur, latest)
			}
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = ?`, m.Version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil // applied earlier
			}
			if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
				return fmt.Errorf("%s: %w", m.Name, err)
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`,
				m.Version, time.Now().UnixMilli())
			return err
		})
		if err != nil {
			if errors.Is(err, ErrSchemaTooNew) {
				return err
			}
			return fmt.Errorf("sqlite: migrate: %w", err)
		}
	}
	return nil
}

// ---- helpers ----

// execCount runs one write statement on the writer and returns how many
// rows it changed, with errors wrapped for op.
func (s *Store) execCount(ctx context.Context, op, query string, args ...any) (int64, error) {
	res, err := s.w.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, fmt.Errorf("sqlite: %s: %w", op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("sqlite: %s: %w", op, err)
	}
	return n, nil
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

// ms encodes t as unix milliseconds; the zero time is 0.
func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// fromMS decodes ms.
func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

// blob keeps a nil slice from binding as NULL.
func blob(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// nowOr returns t, or the current time when t is zero. Used for the
// bookkeeping updated_at of calls that take no now.
func nowOr(t time.Time) time.Time {
	if t.IsZero() {
		return time.Now()
	}
	return t
}

// ---- users ----

const userColumns = `id, state, ciphertext, key_version, binding, algorithm, digits, period, skew,
	last_step, failures, failure_window_start, locked_until, pending_expires_at,
	confirmed_at, last_used_at, updated_at,
	(SELECT COUNT(*) FROM recovery_codes r WHERE r.user_id = users.id AND r.used_at IS NULL)`

// GetUser returns the user's row, or store.ErrNotFound.
func (s *Store) GetUser(ctx context.Context, id string) (store.User, error) {
	var (
		u                                                       store.User
		state                                                   string
		fws, locked, pendingExp, confirmed, lastUsed, updatedAt int64
	)
	err := s.getUser.QueryRowContext(ctx, id).Scan(
		&u.ID, &state, &u.Ciphertext, &u.KeyVersion, &u.Binding,
		&u.Params.Algorithm, &u.Params.Digits, &u.Params.Period, &u.Params.Skew,
		&u.LastStep, &u.Failures, &fws, &locked, &pendingExp,
		&confirmed, &lastUsed, &updatedAt, &u.RecoveryRemaining)
	if errors.Is(err, sql.ErrNoRows) {
		return store.User{}, store.ErrNotFound
	}
	if err != nil {
		return store.User{}, fmt.Errorf("sqlite: get user: %w", err)
	}
	u.State = store.State(state)
	u.FailureWindowStart = fromMS(fws)
	u.LockedUntil = fromMS(locked)
	u.PendingExpiresAt = fromMS(pendingExp)
	u.ConfirmedAt = fromMS(confirmed)
	u.LastUsedAt = fromMS(lastUsed)
	u.UpdatedAt = fromMS(updatedAt)
	return u, nil
}

// StartEnrollment stores u as a pending enrollment (u.ID, Ciphertext,
// KeyVersion, Params, PendingExpiresAt and UpdatedAt are used; the rest
// starts empty). An earlier pending row is replaced whole, its failure
// count and any lock included: they were counted against a secret that is
// gone. store.ErrConflict when the user is active.
func (s *Store) StartEnrollment(ctx context.Context, u store.User) error {
	if u.ID == "" {
		return fmt.Errorf("sqlite: start enrollment: empty user id")
	}
	n, err := s.execCount(ctx, "start enrollment", `
INSERT INTO users (id, state, ciphertext, key_version, binding, algorithm, digits, period, skew,
	last_step, failures, failure_window_start, locked_until, pending_expires_at,
	confirmed_at, last_used_at, updated_at)
VALUES (:id, 'pending', :ct, :kv, :binding, :alg, :digits, :period, :skew, 0, 0, 0, 0, :exp, 0, 0, :updated)
ON CONFLICT (id) DO UPDATE SET
	state = 'pending',
	ciphertext = excluded.ciphertext,
	key_version = excluded.key_version,
	binding = excluded.binding,
	algorithm = excluded.algorithm,
	digits = excluded.digits,
	period = excluded.period,
	skew = excluded.skew,
	last_step = 0,
	failures = 0,
	failure_window_start = 0,
	locked_until = 0,
	pending_expires_at = excluded.pending_expires_at,
	confirmed_at = 0,
	last_used_at = 0,
	updated_at = excluded.updated_at
WHERE users.state = 'pending'`,
		sql.Named("id", u.ID), sql.Named("ct", u.Ciphertext), sql.Named("kv", u.KeyVersion), sql.Named("binding", u.Binding),
		sql.Named("alg", u.Params.Algorithm), sql.Named("digits", u.Params.Digits),
		sql.Named("period", u.Params.Period), sql.Named("skew", u.Params.Skew),
		sql.Named("exp", ms(u.PendingExpiresAt)), sql.Named("updated", ms(nowOr(u.UpdatedAt))))
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrConflict // the row is active
	}
	return nil
}

// ConfirmEnrollment makes a pending enrollment active when it still holds
// ciphertext and has not expired at now; it records step, clears the
// failure count (the confirming code was a successful second factor) and
// stores the recovery code hashes, all in one transaction.
// store.ErrConflict otherwise.
func (s *Store) ConfirmEnrollment(ctx context.Context, id, ciphertext string, step int64, recoveryHashes [][]byte, now time.Time) error {
	err := inTx(ctx, s.w, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `
UPDATE users SET
	state = 'active',
	last_step = :step,
	failures = 0,
	failure_window_start = 0,
	pending_expires_at = 0,
	confirmed_at = :now,
	last_used_at = :now,
	updated_at = :now
WHERE id = :id AND state = 'pending' AND ciphertext = :ct AND pending_expires_at > :now`,
			sql.Named("step", step), sql.Named("now", ms(now)), sql.Named("id", id), sql.Named("ct", ciphertext))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			return store.ErrConflict
		}
		return insertRecoveryCodes(ctx, tx, id, recoveryHashes, now)
	})
	if errors.Is(err, store.ErrConflict) {
		return store.ErrConflict
	}
	if err != nil {
		return fmt.Errorf("sqlite: confirm enrollment: %w", err)
	}
	return nil
}

// insertRecoveryCodes replaces every recovery code of user id by hashes.
func insertRecoveryCodes(ctx context.Context, tx *sql.Tx, id string, hashes [][]byte, now time.Time) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM recovery_codes WHERE user_id = ?`, id); err != nil {
		return err
	}
	if len(hashes) == 0 {
		return nil
	}
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO recovery_codes (user_id, hash, created_at) VALUES (?, ?, ?)`)
	if err != nil {
		return err
	}
	defer stmt.Close()
	for _, h := range hashes {
		if _, err := stmt.ExecContext(ctx, id, blob(h), ms(now)); err != nil {
			return err
		}
	}
	return nil
}

// DeleteUser removes the user's row; their recovery codes go with it
// (ON DELETE CASCADE). store.ErrNotFound when there was no row.
func (s *Store) DeleteUser(ctx context.Context, id string) error {
	n, err := s.execCount(ctx, "delete user", `DELETE FROM users WHERE id = ?`, id)
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

// ---- attempts and lockout (SettleAttempt: settle.go) ----

// Unlock clears failures and any lock. store.ErrNotFound when no row.
func (s *Store) Unlock(ctx context.Context, id string) error {
	n, err := s.execCount(ctx, "unlock", `
UPDATE users SET failures = 0, failure_window_start = 0, locked_until = 0, updated_at = ?
WHERE id = ?`, ms(time.Now()), id)
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

// ---- recovery codes ----

// RecoveryCodes lists the user's unused recovery codes in id order (none
// for an unknown user).
func (s *Store) RecoveryCodes(ctx context.Context, id string) ([]store.RecoveryCode, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id, hash FROM recovery_codes WHERE user_id = ? AND used_at IS NULL ORDER BY id`, id)
	if err != nil {
		return nil, fmt.Errorf("sqlite: recovery codes: %w", err)
	}
	defer rows.Close()
	var out []store.RecoveryCode
	for rows.Next() {
		var c store.RecoveryCode
		if err := rows.Scan(&c.ID, &c.Hash); err != nil {
			return nil, fmt.Errorf("sqlite: recovery codes: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: recovery codes: %w", err)
	}
	return out, nil
}

// ReplaceRecoveryCodes drops every recovery code of an active user and
// stores hashes, in one transaction. store.ErrConflict when the user is
// not active (or has no row).
func (s *Store) ReplaceRecoveryCodes(ctx context.Context, id string, hashes [][]byte, now time.Time) error {
	err := inTx(ctx, s.w, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE users SET updated_at = ? WHERE id = ? AND state = 'active'`, ms(now), id)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			return store.ErrConflict
		}
		return insertRecoveryCodes(ctx, tx, id, hashes, now)
	})
	if errors.Is(err, store.ErrConflict) {
		return store.ErrConflict
	}
	if err != nil {
		return fmt.Errorf("sqlite: replace recovery codes: %w", err)
	}
	return nil
}

// ---- challenges ----

// CreateChallenge stores c. An existing challenge with the same IDHash is
// never overwritten: store.ErrConflict.
func (s *Store) CreateChallenge(ctx context.Context, c store.Challenge) error {
	n, err := s.execCount(ctx, "create challenge", `
INSERT INTO challenges (id_hash, user_id, sealed, enroll, satisfied, attempts, created_at, expires_at, revoke)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id_hash) DO NOTHING`,
		blob(c.IDHash), c.UserID, blob(c.Sealed), boolInt(c.Enroll), boolInt(c.Satisfied), c.Attempts,
		ms(c.CreatedAt), ms(c.ExpiresAt), nullBlob(c.Revoke))
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrConflict
	}
	return nil
}

const challengeColumns = `id_hash, user_id, sealed, enroll, satisfied, attempts, created_at, expires_at, revoke`

type scanner interface{ Scan(...any) error }

func scanChallenge(sc scanner) (store.Challenge, error) {
	var (
		c                  store.Challenge
		enroll, satisfied  int
		created, expiresAt int64
	)
	if err := sc.Scan(&c.IDHash, &c.UserID, &c.Sealed, &enroll, &satisfied, &c.Attempts, &created, &expiresAt, &c.Revoke); err != nil {
		return store.Challenge{}, err
	}
	c.Enroll = enroll != 0
	c.Satisfied = satisfied != 0
	c.CreatedAt = fromMS(created)
	c.ExpiresAt = fromMS(expiresAt)
	return c, nil
}

// GetChallenge returns a challenge live at now, or store.ErrNotFound.
func (s *Store) GetChallenge(ctx context.Context, idHash []byte, now time.Time) (store.Challenge, error) {
	c, err := scanChallenge(s.r.QueryRowContext(ctx,
		`SELECT `+challengeColumns+` FROM challenges WHERE id_hash = ? AND expires_at > ?`, blob(idHash), ms(now)))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Challenge{}, store.ErrNotFound
	}
	if err != nil {
		return store.Challenge{}, fmt.Errorf("sqlite: get challenge: %w", err)
	}
	return c, nil
}

// FailChallenge counts a wrong code and deletes the challenge once
// maxAttempts are counted, in one transaction. It returns the attempts
// left; 0 when the challenge is gone now, or was already (unknown ids are
// not an error: there is nothing left to try).
func (s *Store) FailChallenge(ctx context.Context, idHash []byte, maxAttempts int) (int, error) {
	var left int
	err := inTx(ctx, s.w, func(tx *sql.Tx) error {
		var attempts int
		err := tx.QueryRowContext(ctx, `UPDATE challenges SET attempts = attempts + 1 WHERE id_hash = ? RETURNING attempts`,
			blob(idHash)).Scan(&attempts)
		if errors.Is(err, sql.ErrNoRows) {
			left = 0
			return nil
		}
		if err != nil {
			return err
		}
		if attempts < maxAttempts {
			left = maxAttempts - attempts
			return nil
		}
		left = 0
		_, err = tx.ExecContext(ctx, `DELETE FROM challenges WHERE id_hash = ?`, blob(idHash))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: fail challenge: %w", err)
	}
	return left, nil
}

// SatisfyChallenge marks a challenge live at now satisfied.
// store.ErrNotFound if it is gone or expired.
func (s *Store) SatisfyChallenge(ctx context.Context, idHash []byte, now time.Time) error {
	n, err := s.execCount(ctx, "satisfy challenge", `UPDATE challenges SET satisfied = 1 WHERE id_hash = ? AND expires_at > ?`,
		blob(idHash), ms(now))
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

// SpendChallenge deletes a challenge live at now and returns it, in one
// DELETE ... RETURNING statement: of concurrent callers exactly one gets
// it, the others store.ErrNotFound.
func (s *Store) SpendChallenge(ctx context.Context, idHash []byte, now time.Time) (store.Challenge, error) {
	c, err := scanChallenge(s.w.QueryRowContext(ctx,
		`DELETE FROM challenges WHERE id_hash = ? AND expires_at > ? RETURNING `+challengeColumns,
		blob(idHash), ms(now)))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Challenge{}, store.ErrNotFound
	}
	if err != nil {
		return store.Challenge{}, fmt.Errorf("sqlite: spend challenge: %w", err)
	}
	return c, nil
}

// DeleteExpiredChallenges removes challenges expired at now and returns
// how many.
// TakeRevocations clears and returns the revocation material of user's
// challenges, or of the expired ones when user is "", in one write
// transaction (RETURNING would give the cleared values).
func (s *Store) TakeRevocations(ctx context.Context, user string, now time.Time) ([]store.Challenge, error) {
	where, arg := `revoke IS NOT NULL AND expires_at <= ?`, any(ms(now))
	if user != "" {
		where, arg = `revoke IS NOT NULL AND user_id = ?`, user
	}
	var out []store.Challenge
	err := inTx(ctx, s.w, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT user_id, revoke FROM challenges WHERE `+where, arg)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var c store.Challenge
			if err := rows.Scan(&c.UserID, &c.Revoke); err != nil {
				return err
			}
			out = append(out, c)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE challenges SET revoke = NULL WHERE `+where, arg)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: take revocations: %w", err)
	}
	return out, nil
}

func nullBlob(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

func (s *Store) DeleteExpiredChallenges(ctx context.Context, now time.Time) (int, error) {
	n, err := s.execCount(ctx, "delete expired challenges", `DELETE FROM challenges WHERE expires_at <= ?`, ms(now))
	if err != nil {
		return 0, err
	}
	return int(n), nil
}

// ---- settings ----

// Setting returns the value stored under key, or store.ErrNotFound.
func (s *Store) Setting(ctx context.Context, key string) ([]byte, error) {
	var v []byte
	err := s.r.QueryRowContext(ctx, `SELECT value FROM settings WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: setting: %w", err)
	}
	return v, nil
}

// PutSettingIfAbsent stores value under key unless key exists and returns
// the stored value, in one statement (the no-op DO UPDATE makes RETURNING
// yield the existing row).
func (s *Store) PutSettingIfAbsent(ctx context.Context, key string, value []byte) ([]byte, error) {
	var v []byte
	err := s.w.QueryRowContext(ctx, `
INSERT INTO settings (key, value) VALUES (?, ?)
ON CONFLICT (key) DO UPDATE SET value = settings.value
RETURNING value`, key, blob(value)).Scan(&v)
	if err != nil {
		return nil, fmt.Errorf("sqlite: put setting: %w", err)
	}
	return v, nil
}

// SwapSetting replaces a setting only if it still holds old.
func (s *Store) SwapSetting(ctx context.Context, key string, old, replacement []byte) (bool, error) {
	n, err := s.execCount(ctx, "swap setting", `UPDATE settings SET value = ? WHERE key = ? AND value = ?`, blob(replacement), key, blob(old))
	return n == 1, err
}

// ---- jobs ----

// AcquireJob takes the lease in one statement: the upsert only overwrites
// the owner when the lease is free, so concurrent callers cannot both win.
func (s *Store) AcquireJob(ctx context.Context, name, owner string, now, leaseUntil time.Time) (store.Job, bool, error) {
	n, err := s.execCount(ctx, "acquire job", `
INSERT INTO jobs (name, owner, lease_until, state) VALUES (:name, :owner, :until, x'')
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until
WHERE jobs.lease_until < :now OR jobs.owner = excluded.owner`,
		sql.Named("name", name), sql.Named("owner", owner), sql.Named("until", ms(leaseUntil)), sql.Named("now", ms(now)))
	if err != nil {
		return store.Job{}, false, err
	}
	j, err := s.getJob(ctx, s.w, name)
	if err != nil {
		return store.Job{}, false, err
	}
	return j, n == 1 && j.Owner == owner, nil
}

// UpdateJob saves state and moves the lease, while owner holds it.
func (s *Store) UpdateJob(ctx context.Context, name, owner string, state []byte, leaseUntil time.Time) error {
	n, err := s.execCount(ctx, "update job", `UPDATE jobs SET state = ?, lease_until = ? WHERE name = ? AND owner = ?`,
		blob(state), ms(leaseUntil), name, owner)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("sqlite: update job %q: lease lost: %w", name, store.ErrConflict)
	}
	return nil
}

// GetJob returns the named job, or store.ErrNotFound.
func (s *Store) GetJob(ctx context.Context, name string) (store.Job, error) {
	return s.getJob(ctx, s.r, name)
}

func (s *Store) getJob(ctx context.Context, db *sql.DB, name string) (store.Job, error) {
	var j store.Job
	var until int64
	err := db.QueryRowContext(ctx, `SELECT name, owner, lease_until, state FROM jobs WHERE name = ?`, name).Scan(&j.Name, &j.Owner, &until, &j.State)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Job{}, store.ErrNotFound
	}
	if err != nil {
		return store.Job{}, fmt.Errorf("sqlite: get job: %w", err)
	}
	j.LeaseUntil = fromMS(until)
	return j, nil
}

// ---- key rotation ----

// notAtTarget is the SQL condition "this row's secret is not yet at the
// target key": another backend, or a version below, or still under the
// bare binding (store.BindingBare). The backend test is a prefix
// comparison on the ciphertext ("vault:"), which the key_version column
// does not carry.
const notAtTarget = `NOT (substr(ciphertext, 1, length(:backend) + 1) = :backend || ':' AND key_version >= :version AND binding = 1)`

// SecretsPage lists up to limit stored secrets (pending and active) not yet
// at target, with user id > after in id order (byte order).
func (s *Store) SecretsPage(ctx context.Context, after string, target store.KeyRef, limit int) ([]store.SecretRef, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("sqlite: secrets page: limit must be positive")
	}
	rows, err := s.r.QueryContext(ctx, `
SELECT id, ciphertext, key_version, binding FROM users
WHERE id > :after AND `+notAtTarget+`
ORDER BY id
LIMIT :limit`, sql.Named("after", after), sql.Named("backend", target.Backend), sql.Named("version", target.Version), sql.Named("limit", limit))
	if err != nil {
		return nil, fmt.Errorf("sqlite: secrets page: %w", err)
	}
	defer rows.Close()
	var out []store.SecretRef
	for rows.Next() {
		var r store.SecretRef
		if err := rows.Scan(&r.UserID, &r.Ciphertext, &r.KeyVersion, &r.Binding); err != nil {
			return nil, fmt.Errorf("sqlite: secrets page: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: secrets page: %w", err)
	}
	return out, nil
}

// SwapSecrets applies the swaps whose row still holds Old, in one
// transaction: one fsync per batch instead of one per secret.
func (s *Store) SwapSecrets(ctx context.Context, swaps []store.Swap) (int, error) {
	if len(swaps) == 0 {
		return 0, nil
	}
	swapped := 0
	err := inTx(ctx, s.w, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `UPDATE users SET ciphertext = ?, key_version = ?, binding = ? WHERE id = ? AND ciphertext = ?`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, sw := range swaps {
			res, err := stmt.ExecContext(ctx, sw.New, sw.Version, sw.Binding, sw.UserID, sw.Old)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			swapped += int(n)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: swap secrets: %w", err)
	}
	return swapped, nil
}

// CountByKey counts stored secrets (pending and active) per backend and
// key version.
func (s *Store) CountByKey(ctx context.Context) (map[store.KeyRef]int, error) {
	return s.countByKey(ctx, "count by key", "")
}

// CountBareBindings counts the stored secrets still under
// store.BindingBare per backend and key version.
func (s *Store) CountBareBindings(ctx context.Context) (map[store.KeyRef]int, error) {
	return s.countByKey(ctx, "count bare bindings", "WHERE binding = 0")
}

func (s *Store) countByKey(ctx context.Context, op, where string) (map[store.KeyRef]int, error) {
	rows, err := s.r.QueryContext(ctx, `
SELECT substr(ciphertext, 1, instr(ciphertext, ':') - 1), key_version, COUNT(*)
FROM users `+where+` GROUP BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %s: %w", op, err)
	}
	defer rows.Close()
	out := map[store.KeyRef]int{}
	for rows.Next() {
		var k store.KeyRef
		var n int
		if err := rows.Scan(&k.Backend, &k.Version, &n); err != nil {
			return nil, fmt.Errorf("sqlite: %s: %w", op, err)
		}
		out[k] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: %s: %w", op, err)
	}
	return out, nil
}

// CountByState counts users per MFA state (pending and active; users
// without a row are not known to the store).
func (s *Store) CountByState(ctx context.Context) (map[store.State]int, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT state, COUNT(*) FROM users GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: count by state: %w", err)
	}
	defer rows.Close()
	out := map[store.State]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("sqlite: count by state: %w", err)
		}
		out[store.State(st)] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: count by state: %w", err)
	}
	return out, nil
}

// ---- lifecycle ----

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
