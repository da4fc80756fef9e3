// Package postgres implements store.Store on PostgreSQL, for installs that
// run several replicas against one database. It uses
// github.com/jackc/pgx/v5 through a pgxpool connection pool.
//
// # Concurrency
//
// Transactions run at PostgreSQL's default isolation, READ COMMITTED. Every
// check-and-update that security depends on is either one statement whose
// WHERE clause is the check (UPDATE/DELETE ... WHERE <condition> ...
// RETURNING, INSERT ... ON CONFLICT DO UPDATE ... WHERE) or a transaction
// that locks the rows it reads before writing (SELECT ... FOR NO KEY
// UPDATE, or an UPDATE that takes the row lock first). Under READ COMMITTED
// an UPDATE or DELETE that finds its row locked waits for the other
// transaction and then evaluates its WHERE clause and SET expressions again
// on the newest version of the row, so concurrent callers, in this process
// or in other replicas, see each other's effects: a time step is accepted
// once, a recovery code or challenge is spent once, and no more than
// MaxFailures failures are counted.
//
// Transactions that touch a user and their recovery codes lock the users
// row before any recovery_codes row, so they cannot deadlock each other.
//
// # Encoding
//
// Times are stored as BIGINT unix milliseconds (UTC), as in the SQLite
// store; the zero time is 0 and reads back as the zero time. Byte slices
// are BYTEA. User ids are TEXT COLLATE "C", so they sort by their bytes as
// Go strings do. PostgreSQL text cannot hold NUL bytes or invalid UTF-8:
// such ids, keys or names are an error here, where SQLite would store them.
//
// # Schema
//
// Schema changes are versioned migrations embedded from migrations/*.sql,
// applied at Open. Each runs in a transaction holding a transaction-level
// advisory lock, so replicas starting together apply each migration once;
// a database migrated by a newer totpgate is refused with ErrSchemaTooNew.
// The tables live in the first schema of the connection's search_path,
// which the DSN may set (e.g. ?search_path=totpgate).
//
// # Connections
//
// pgx prepares each statement once per connection and reuses it. Behind a
// connection pooler in transaction mode that does not track prepared
// statements (PgBouncer before 1.21), add default_query_exec_mode=exec to
// the DSN.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"math"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/migration"
)

// ErrSchemaTooNew is returned by Open when the database was migrated by a
// newer totpgate than this one: running older code against a newer schema
// could silently drop or misread state, so Open refuses.
var ErrSchemaTooNew = errors.New("postgres: database schema is newer than this binary supports")

// Defaults for the zero Options fields.
const (
	DefaultMaxConns         int32 = 10
	DefaultStatementTimeout       = 5 * time.Second
	DefaultConnectTimeout         = 5 * time.Second
)

// maxStatementTimeout is the largest statement_timeout PostgreSQL accepts
// (INT_MAX milliseconds, about 24.8 days).
const maxStatementTimeout = math.MaxInt32 * time.Millisecond

// Options configures Open. The zero value of a field means its default.
// They take precedence over the same settings in the DSN (pool_max_conns,
// connect_timeout, statement_timeout).
type Options struct {
	// MaxConns is the most connections the pool opens (default 10).
	MaxConns int32
	// StatementTimeout is PostgreSQL's statement_timeout for every
	// connection (default 5s): a statement running longer is cancelled by
	// the server and the call fails (closed). Rounded up to whole
	// milliseconds.
	StatementTimeout time.Duration
	// ConnectTimeout bounds opening one connection (default 5s).
	ConnectTimeout time.Duration
}

// Validate reports every invalid field.
func (o Options) Validate() error {
	var errs []error
	if o.MaxConns < 0 {
		errs = append(errs, fmt.Errorf("postgres: MaxConns %d is negative (0 means %d)", o.MaxConns, DefaultMaxConns))
	}
	if o.StatementTimeout < 0 {
		errs = append(errs, fmt.Errorf("postgres: StatementTimeout %v is negative (0 means %v)", o.StatementTimeout, DefaultStatementTimeout))
	}
	if o.StatementTimeout > maxStatementTimeout {
		errs = append(errs, fmt.Errorf("postgres: StatementTimeout %v is above PostgreSQL's maximum %v", o.StatementTimeout, maxStatementTimeout))
	}
	if o.ConnectTimeout < 0 {
		errs = append(errs, fmt.Errorf("postgres: ConnectTimeout %v is negative (0 means %v)", o.ConnectTimeout, DefaultConnectTimeout))
	}
	return errors.Join(errs...)
}

func (o Options) withDefaults() Options {
	if o.MaxConns == 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.StatementTimeout == 0 {
		o.StatementTimeout = DefaultStatementTimeout
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	return o
}

// Store is a store.Store backed by PostgreSQL. It is safe for concurrent
// use, also by several processes sharing one database.
type Store struct {
	pool *pgxpool.Pool
}

// Open connects to the database named by dsn (a postgres:// URL or a
// key=value connection string, as pgx accepts) and applies pending schema
// migrations. It fails with ErrSchemaTooNew when the database has
// migrations this binary does not know. Error messages never repeat the
// DSN, which may hold a password.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("postgres: open: %w", err)
	}
	opts = opts.withDefaults()
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, dsnError(err)
	}
	cfg.MaxConns = opts.MaxConns
	if cfg.MinConns > cfg.MaxConns {
		cfg.MinConns = cfg.MaxConns
	}
	cfg.ConnConfig.ConnectTimeout = opts.ConnectTimeout
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	millis := int64((opts.StatementTimeout + time.Millisecond - 1) / time.Millisecond)
	cfg.ConnConfig.RuntimeParams["statement_timeout"] = strconv.FormatInt(millis, 10)
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "totpgate"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: open: %w", err)
	}
	if err := migrate(ctx, pool, migrations); err != nil {
		pool.Close()
		return nil, err
	}
	return &Store{pool: pool}, nil
}

// dsnError reports a DSN that does not parse without repeating it: pgx
// redacts passwords in its message only on a best-effort basis, and the
// *url.Error of a URL that does not parse (say, a password holding '/' or
// '#') quotes the whole URL.
func dsnError(err error) error {
	var pce *pgconn.ParseConfigError
	if !errors.As(err, &pce) {
		return errors.New("postgres: open: invalid DSN")
	}
	var ue *url.Error
	if errors.As(pce, &ue) {
		return fmt.Errorf("postgres: open: invalid DSN: not a valid URL: %v", ue.Err)
	}
	const marker = "<DSN>"
	c := *pce
	c.ConnString = marker
	return fmt.Errorf("postgres: open: invalid DSN: %s", strings.TrimPrefix(c.Error(), "cannot parse `"+marker+"`: "))
}

// ---- migrations ----

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrations are the embedded migrations, checked when the package loads.
var migrations = migration.MustLoad(migrationFiles, "migrations")

// migrateLockKey is the pg_advisory_xact_lock key that serialises
// migrations: "totpgate" in ASCII. It is database-wide, so totpgate
// installs in other schemas of the same database wait for each other's
// migrations too, which costs nothing but a moment at start.
const migrateLockKey int64 = 0x746f747067617465

// migrate applies the migrations the database has not seen, each in its
// own transaction together with its schema_migrations row, so a crash
// leaves either the whole migration or none of it (PostgreSQL DDL is
// transactional). Each transaction first takes the advisory lock, so
// replicas starting at once apply a migration exactly once and never race
// creating schema_migrations. The transactions run without
// statement_timeout: only ctx limits how long they wait and run.
func migrate(ctx context.Context, pool *pgxpool.Pool, ms []migration.Migration) error {
	latest := ms[len(ms)-1].Version
	for _, m := range ms {
		err := inTx(ctx, pool, func(tx pgx.Tx) error {
			// Waiting for another replica's migration, or running a long
			// one, must not hit the statement timeout meant for logins;
			// ctx bounds it instead.
			if _, err := tx.Exec(ctx, `SET LOCAL statement_timeout = 0`); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLockKey); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    BIGINT NOT NULL PRIMARY KEY,
	applied_at BIGINT NOT NULL
)`); err != nil {
				return err
			}
			var (
				cur     int
				applied bool
			)
			if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0), COALESCE(bool_or(version = $1), false) FROM schema_migrations`,
				m.Version).Scan(&cur, &applied); err != nil {
				return err
			}
			if cur > latest {
				return fmt.Errorf("%w: database is at version %d, this binary knows up to %d; upgrade totpgate", ErrSchemaTooNew, cur, latest)
			}
			if applied {
				return nil
			}
			// No arguments: pgx sends it with the simple protocol, which
			// runs a file of several statements.
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("%s: %w", m.Name, err)
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)`,
				m.Version, time.Now().UnixMilli())
			return err
		})
		if err != nil {
			if errors.Is(err, ErrSchemaTooNew) {
				return err
			}
			return fmt.Errorf("postgres: migrate: %w", err)
		}
	}
	return nil
}

// ---- helpers ----

// execCount runs one statement and returns how many rows it changed, with
// errors wrapped for op.
func (s *Store) execCount(ctx context.Context, op, query string, args ...any) (int64, error) {
	tag, err := s.pool.Exec(ctx, query, args...)
	if err != nil {
		return 0, fmt.Errorf("postgres: %s: %w", op, err)
	}
	return tag.RowsAffected(), nil
}

// inTx runs fn in a READ COMMITTED transaction and commits when fn
// returns nil. The error of fn is returned as is (callers test it for
// sentinels); a failed rollback only costs the connection, which pgx then
// discards.
func inTx(ctx context.Context, pool *pgxpool.Pool, fn func(pgx.Tx) error) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback(ctx)
		return err
	}
	return tx.Commit(ctx)
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

func boolInt(b bool) int16 {
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
		binding                                                 int16
		fws, locked, pendingExp, confirmed, lastUsed, updatedAt int64
	)
	err := s.pool.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1`, id).Scan(
		&u.ID, &state, &u.Ciphertext, &u.KeyVersion, &binding,
		&u.Params.Algorithm, &u.Params.Digits, &u.Params.Period, &u.Params.Skew,
		&u.LastStep, &u.Failures, &fws, &locked, &pendingExp,
		&confirmed, &lastUsed, &updatedAt, &u.RecoveryRemaining)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.User{}, store.ErrNotFound
	}
	if err != nil {
		return store.User{}, fmt.Errorf("postgres: get user: %w", err)
	}
	u.Binding = store.Binding(binding)
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
// gone. store.ErrConflict when the user is active. One upsert: its
// DO UPDATE ... WHERE is checked on the newest row version.
func (s *Store) StartEnrollment(ctx context.Context, u store.User) error {
	if u.ID == "" {
		return fmt.Errorf("postgres: start enrollment: empty user id")
	}
	n, err := s.execCount(ctx, "start enrollment", `
INSERT INTO users (id, state, ciphertext, key_version, binding, algorithm, digits, period, skew,
	last_step, failures, failure_window_start, locked_until, pending_expires_at,
	confirmed_at, last_used_at, updated_at)
VALUES (@id, 'pending', @ct, @kv, @binding, @alg, @digits, @period, @skew, 0, 0, 0, 0, @exp, 0, 0, @updated)
ON CONFLICT (id) DO UPDATE SET
	state = 'pending',
	ciphertext = EXCLUDED.ciphertext,
	key_version = EXCLUDED.key_version,
	binding = EXCLUDED.binding,
	algorithm = EXCLUDED.algorithm,
	digits = EXCLUDED.digits,
	period = EXCLUDED.period,
	skew = EXCLUDED.skew,
	last_step = 0,
	failures = 0,
	failure_window_start = 0,
	locked_until = 0,
	pending_expires_at = EXCLUDED.pending_expires_at,
	confirmed_at = 0,
	last_used_at = 0,
	updated_at = EXCLUDED.updated_at
WHERE users.state = 'pending'`, pgx.StrictNamedArgs{
		"id": u.ID, "ct": u.Ciphertext, "kv": u.KeyVersion, "binding": int16(u.Binding),
		"alg": u.Params.Algorithm, "digits": u.Params.Digits, "period": u.Params.Period, "skew": u.Params.Skew,
		"exp": ms(u.PendingExpiresAt), "updated": ms(nowOr(u.UpdatedAt)),
	})
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
// stores the recovery code hashes, all in one transaction whose first
// statement, the conditional UPDATE, locks the user's row. Of concurrent
// callers the first wins; the others wait for its commit, find the row
// active and get store.ErrConflict.
func (s *Store) ConfirmEnrollment(ctx context.Context, id, ciphertext string, step int64, recoveryHashes [][]byte, now time.Time) error {
	err := inTx(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `
UPDATE users SET
	state = 'active',
	last_step = @step,
	failures = 0,
	failure_window_start = 0,
	pending_expires_at = 0,
	confirmed_at = @now,
	last_used_at = @now,
	updated_at = @now
WHERE id = @id AND state = 'pending' AND ciphertext = @ct AND pending_expires_at > @now`,
			pgx.StrictNamedArgs{"step": step, "now": ms(now), "id": id, "ct": ciphertext})
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrConflict
		}
		return insertRecoveryCodes(ctx, tx, id, recoveryHashes, now)
	})
	if errors.Is(err, store.ErrConflict) {
		return store.ErrConflict
	}
	if err != nil {
		return fmt.Errorf("postgres: confirm enrollment: %w", err)
	}
	return nil
}

// insertRecoveryCodes replaces every recovery code of user id by hashes.
// The caller's transaction holds the lock on the user's row.
func insertRecoveryCodes(ctx context.Context, tx pgx.Tx, id string, hashes [][]byte, now time.Time) error {
	if _, err := tx.Exec(ctx, `DELETE FROM recovery_codes WHERE user_id = $1`, id); err != nil {
		return err
	}
	if len(hashes) == 0 {
		return nil
	}
	hs := make([][]byte, len(hashes))
	for i, h := range hashes {
		hs[i] = blob(h)
	}
	// Ids are drawn in the order of hashes, as one INSERT per code would.
	_, err := tx.Exec(ctx, `
INSERT INTO recovery_codes (user_id, hash, created_at)
SELECT $1, c.hash, $2 FROM unnest($3::bytea[]) WITH ORDINALITY AS c(hash, n) ORDER BY c.n`,
		id, ms(now), hs)
	return err
}

// DeleteUser removes the user's row; their recovery codes go with it
// (ON DELETE CASCADE). store.ErrNotFound when there was no row.
func (s *Store) DeleteUser(ctx context.Context, id string) error {
	n, err := s.execCount(ctx, "delete user", `DELETE FROM users WHERE id = $1`, id)
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
UPDATE users SET failures = 0, failure_window_start = 0, locked_until = 0, updated_at = $1
WHERE id = $2`, ms(time.Now()), id)
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
	rows, err := s.pool.Query(ctx, `SELECT id, hash FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL ORDER BY id`, id)
	if err != nil {
		return nil, fmt.Errorf("postgres: recovery codes: %w", err)
	}
	defer rows.Close()
	var out []store.RecoveryCode
	for rows.Next() {
		var c store.RecoveryCode
		if err := rows.Scan(&c.ID, &c.Hash); err != nil {
			return nil, fmt.Errorf("postgres: recovery codes: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: recovery codes: %w", err)
	}
	return out, nil
}

// ReplaceRecoveryCodes drops every recovery code of an active user and
// stores hashes, in one transaction that starts by locking the user's row
// (so concurrent replacements run one after the other and leave one whole
// set). store.ErrConflict when the user is not active (or has no row).
func (s *Store) ReplaceRecoveryCodes(ctx context.Context, id string, hashes [][]byte, now time.Time) error {
	err := inTx(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE users SET updated_at = $1 WHERE id = $2 AND state = 'active'`, ms(now), id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrConflict
		}
		return insertRecoveryCodes(ctx, tx, id, hashes, now)
	})
	if errors.Is(err, store.ErrConflict) {
		return store.ErrConflict
	}
	if err != nil {
		return fmt.Errorf("postgres: replace recovery codes: %w", err)
	}
	return nil
}

// ---- challenges ----

// CreateChallenge stores c. An existing challenge with the same IDHash is
// never overwritten: store.ErrConflict.
func (s *Store) CreateChallenge(ctx context.Context, c store.Challenge) error {
	n, err := s.execCount(ctx, "create challenge", `
INSERT INTO challenges (id_hash, user_id, sealed, enroll, satisfied, attempts, created_at, expires_at, revoke)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (id_hash) DO NOTHING`,
		blob(c.IDHash), c.UserID, blob(c.Sealed), boolInt(c.Enroll), boolInt(c.Satisfied), int64(c.Attempts),
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

func scanChallenge(row pgx.Row) (store.Challenge, error) {
	var (
		c                  store.Challenge
		enroll, satisfied  int16
		created, expiresAt int64
	)
	if err := row.Scan(&c.IDHash, &c.UserID, &c.Sealed, &enroll, &satisfied, &c.Attempts, &created, &expiresAt, &c.Revoke); err != nil {
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
	c, err := scanChallenge(s.pool.QueryRow(ctx,
		`SELECT `+challengeColumns+` FROM challenges WHERE id_hash = $1 AND expires_at > $2`, blob(idHash), ms(now)))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Challenge{}, store.ErrNotFound
	}
	if err != nil {
		return store.Challenge{}, fmt.Errorf("postgres: get challenge: %w", err)
	}
	return c, nil
}

// FailChallenge counts a wrong code and deletes the challenge once
// maxAttempts are counted. It returns the attempts left; 0 when the
// challenge is gone now, or was already (unknown ids are not an error:
// there is nothing left to try).
//
// The count only grows, so this needs no transaction: an UPDATE counts the
// attempt when it leaves attempts to spare (re-checked on the newest row
// version, so concurrent callers count one after the other), and when it
// would not, the attempt that reaches maxAttempts deletes the challenge
// instead of counting it.
func (s *Store) FailChallenge(ctx context.Context, idHash []byte, maxAttempts int) (int, error) {
	var attempts int
	err := s.pool.QueryRow(ctx, `UPDATE challenges SET attempts = attempts + 1 WHERE id_hash = $1 AND attempts + 1 < $2 RETURNING attempts`,
		blob(idHash), int64(maxAttempts)).Scan(&attempts)
	if err == nil {
		return maxAttempts - attempts, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("postgres: fail challenge: %w", err)
	}
	// Out of attempts, or already gone.
	if _, err := s.pool.Exec(ctx, `DELETE FROM challenges WHERE id_hash = $1`, blob(idHash)); err != nil {
		return 0, fmt.Errorf("postgres: fail challenge: %w", err)
	}
	return 0, nil
}

// SatisfyChallenge marks a challenge live at now satisfied.
// store.ErrNotFound if it is gone or expired.
func (s *Store) SatisfyChallenge(ctx context.Context, idHash []byte, now time.Time) error {
	n, err := s.execCount(ctx, "satisfy challenge", `UPDATE challenges SET satisfied = 1 WHERE id_hash = $1 AND expires_at > $2`,
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
// it, the others wait for its commit, find the row gone and get
// store.ErrNotFound.
func (s *Store) SpendChallenge(ctx context.Context, idHash []byte, now time.Time) (store.Challenge, error) {
	c, err := scanChallenge(s.pool.QueryRow(ctx,
		`DELETE FROM challenges WHERE id_hash = $1 AND expires_at > $2 RETURNING `+challengeColumns,
		blob(idHash), ms(now)))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Challenge{}, store.ErrNotFound
	}
	if err != nil {
		return store.Challenge{}, fmt.Errorf("postgres: spend challenge: %w", err)
	}
	return c, nil
}

// expiredBatch is how many challenges DeleteExpiredChallenges deletes per
// statement (and transaction).
const expiredBatch = 1000

// DeleteExpiredChallenges removes challenges expired at now and returns
// how many. It deletes in batches of expiredBatch, each its own short
// transaction, and skips rows another transaction has locked (a login
// spending or failing that challenge right now), so the sweep never holds
// many locks for long nor waits behind a login. It stops after a batch
// that was not full; rows skipped are left for the next sweep. On error it
// returns how many the batches before had deleted.
// TakeRevocations clears and returns the revocation material of user's
// challenges, or of the expired ones when user is "", in one statement
// per batch; rows a live transaction holds are skipped, never waited for.
func (s *Store) TakeRevocations(ctx context.Context, user string, now time.Time) ([]store.Challenge, error) {
	where, arg := `expires_at <= $1`, any(ms(now))
	if user != "" {
		where, arg = `user_id = $1`, user
	}
	var out []store.Challenge
	for {
		// RETURNING gives the new (cleared) row: the old material comes
		// from the locked selection.
		rows, err := s.pool.Query(ctx, `
WITH taken AS (
	SELECT id_hash, user_id, revoke FROM challenges WHERE revoke IS NOT NULL AND `+where+` LIMIT $2 FOR UPDATE SKIP LOCKED
)
UPDATE challenges c SET revoke = NULL FROM taken WHERE c.id_hash = taken.id_hash
RETURNING taken.user_id, taken.revoke`, arg, int64(expiredBatch))
		if err != nil {
			return out, fmt.Errorf("postgres: take revocations: %w", err)
		}
		n := 0
		for rows.Next() {
			var c store.Challenge
			if err := rows.Scan(&c.UserID, &c.Revoke); err != nil {
				rows.Close()
				return out, fmt.Errorf("postgres: take revocations: %w", err)
			}
			out = append(out, c)
			n++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return out, fmt.Errorf("postgres: take revocations: %w", err)
		}
		if n < expiredBatch {
			return out, nil
		}
	}
}

func nullBlob(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

func (s *Store) DeleteExpiredChallenges(ctx context.Context, now time.Time) (int, error) {
	total := 0
	for {
		n, err := s.execCount(ctx, "delete expired challenges", `
DELETE FROM challenges WHERE id_hash IN (
	SELECT id_hash FROM challenges WHERE expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED
)`, ms(now), int64(expiredBatch))
		if err != nil {
			return total, err
		}
		total += int(n)
		if n < expiredBatch {
			return total, nil
		}
	}
}

// ---- settings ----

// Setting returns the value stored under key, or store.ErrNotFound.
func (s *Store) Setting(ctx context.Context, key string) ([]byte, error) {
	var v []byte
	err := s.pool.QueryRow(ctx, `SELECT value FROM settings WHERE key = $1`, key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: setting: %w", err)
	}
	return v, nil
}

// PutSettingIfAbsent stores value under key unless key exists and returns
// the stored value, in one statement: the no-op DO UPDATE makes RETURNING
// yield the existing row, also when a concurrent caller inserted it first
// (the upsert waits for that insert to commit).
func (s *Store) PutSettingIfAbsent(ctx context.Context, key string, value []byte) ([]byte, error) {
	var v []byte
	err := s.pool.QueryRow(ctx, `
INSERT INTO settings (key, value) VALUES ($1, $2)
ON CONFLICT (key) DO UPDATE SET value = settings.value
RETURNING value`, key, blob(value)).Scan(&v)
	if err != nil {
		return nil, fmt.Errorf("postgres: put setting: %w", err)
	}
	return v, nil
}

// SwapSetting replaces a setting only if it still holds old.
func (s *Store) SwapSetting(ctx context.Context, key string, old, replacement []byte) (bool, error) {
	n, err := s.execCount(ctx, "swap setting", `UPDATE settings SET value = $1 WHERE key = $2 AND value = $3`,
		blob(replacement), key, blob(old))
	return n == 1, err
}

// ---- jobs ----

// AcquireJob takes the lease in one statement: the upsert only overwrites
// the owner when the lease is free or already owner's, a condition checked
// on the newest row version while holding its lock, so concurrent callers
// cannot both win. When it does not win, the job is read back as stored.
func (s *Store) AcquireJob(ctx context.Context, name, owner string, now, leaseUntil time.Time) (store.Job, bool, error) {
	j, err := scanJob(s.pool.QueryRow(ctx, `
INSERT INTO jobs (name, owner, lease_until, state) VALUES (@name, @owner, @until, '')
ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, lease_until = EXCLUDED.lease_until
WHERE jobs.lease_until < @now OR jobs.owner = EXCLUDED.owner
RETURNING name, owner, lease_until, state`,
		pgx.StrictNamedArgs{"name": name, "owner": owner, "until": ms(leaseUntil), "now": ms(now)}))
	if err == nil {
		return j, true, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return store.Job{}, false, fmt.Errorf("postgres: acquire job: %w", err)
	}
	j, err = s.GetJob(ctx, name)
	if err != nil {
		return store.Job{}, false, err
	}
	return j, false, nil
}

// UpdateJob saves state and moves the lease, while owner holds it.
func (s *Store) UpdateJob(ctx context.Context, name, owner string, state []byte, leaseUntil time.Time) error {
	n, err := s.execCount(ctx, "update job", `UPDATE jobs SET state = $1, lease_until = $2 WHERE name = $3 AND owner = $4`,
		blob(state), ms(leaseUntil), name, owner)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("postgres: update job %q: lease lost: %w", name, store.ErrConflict)
	}
	return nil
}

// GetJob returns the named job, or store.ErrNotFound.
func (s *Store) GetJob(ctx context.Context, name string) (store.Job, error) {
	j, err := scanJob(s.pool.QueryRow(ctx, `SELECT name, owner, lease_until, state FROM jobs WHERE name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Job{}, store.ErrNotFound
	}
	if err != nil {
		return store.Job{}, fmt.Errorf("postgres: get job: %w", err)
	}
	return j, nil
}

func scanJob(row pgx.Row) (store.Job, error) {
	var j store.Job
	var until int64
	if err := row.Scan(&j.Name, &j.Owner, &until, &j.State); err != nil {
		return store.Job{}, err
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
const notAtTarget = `NOT (left(ciphertext, length(@backend::text) + 1) = @backend::text || ':' AND key_version >= @version AND binding = 1)`

// SecretsPage lists up to limit stored secrets (pending and active) not yet
// at target, with user id > after in id order (byte order: the id column
// is COLLATE "C", and so are the comparison and the sort).
func (s *Store) SecretsPage(ctx context.Context, after string, target store.KeyRef, limit int) ([]store.SecretRef, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("postgres: secrets page: limit must be positive")
	}
	rows, err := s.pool.Query(ctx, `
SELECT id, ciphertext, key_version, binding FROM users
WHERE id > @after AND `+notAtTarget+`
ORDER BY id
LIMIT @limit`, pgx.StrictNamedArgs{
		"after": after, "backend": target.Backend, "version": int64(target.Version), "limit": int64(limit),
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: secrets page: %w", err)
	}
	defer rows.Close()
	var out []store.SecretRef
	for rows.Next() {
		var r store.SecretRef
		var binding int16
		if err := rows.Scan(&r.UserID, &r.Ciphertext, &r.KeyVersion, &binding); err != nil {
			return nil, fmt.Errorf("postgres: secrets page: %w", err)
		}
		r.Binding = store.Binding(binding)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: secrets page: %w", err)
	}
	return out, nil
}

// SwapSecrets applies the swaps whose row still holds Old, in one UPDATE
// statement (so one transaction, one round trip) and returns how many
// swaps it applied.
//
// The result is the same as applying the swaps one after the other, as the
// SQLite store does, also when a batch names a user more than once: a
// user's swaps are folded here into one candidate per distinct Old (the
// first swap with that Old, then every later swap of the user that applies
// after it), and at most one candidate can match the row's ciphertext.
// The UPDATE checks ciphertext = Old on the newest row version, so a
// concurrent re-enrollment is never overwritten.
func (s *Store) SwapSecrets(ctx context.Context, swaps []store.Swap) (int, error) {
	if len(swaps) == 0 {
		return 0, nil
	}
	type candidate struct {
		id, old, new        string
		version, n, binding int64
	}
	byUser := map[string][]int{}
	var order []string
	for i, sw := range swaps {
		if _, ok := byUser[sw.UserID]; !ok {
			order = append(order, sw.UserID)
		}
		byUser[sw.UserID] = append(byUser[sw.UserID], i)
	}
	sort.Strings(order) // lock rows in id order
	var cands []candidate
	for _, id := range order {
		idx := byUser[id]
		seen := map[string]bool{}
		for p, i := range idx {
			if seen[swaps[i].Old] {
				continue // an earlier swap with this Old would apply first
			}
			seen[swaps[i].Old] = true
			c := candidate{id: id, old: swaps[i].Old, new: swaps[i].New, version: int64(swaps[i].Version), binding: int64(swaps[i].Binding), n: 1}
			for _, j := range idx[p+1:] {
				if swaps[j].Old == c.new {
					c.new, c.version, c.binding = swaps[j].New, int64(swaps[j].Version), int64(swaps[j].Binding)
					c.n++
				}
			}
			cands = append(cands, c)
		}
	}
	ids := make([]string, len(cands))
	olds := make([]string, len(cands))
	news := make([]string, len(cands))
	versions := make([]int64, len(cands))
	counts := make([]int64, len(cands))
	bindings := make([]int64, len(cands))
	for i, c := range cands {
		ids[i], olds[i], news[i], versions[i], counts[i], bindings[i] = c.id, c.old, c.new, c.version, c.n, c.binding
	}
	var swapped int64
	err := s.pool.QueryRow(ctx, `
WITH swapped AS (
	UPDATE users AS u SET ciphertext = s.new, key_version = s.version, binding = s.binding
	FROM unnest(@ids::text[], @olds::text[], @news::text[], @versions::bigint[], @counts::bigint[], @bindings::bigint[])
		AS s(id, old, new, version, n, binding)
	WHERE u.id = s.id AND u.ciphertext = s.old
	RETURNING s.n
)
SELECT COALESCE(SUM(n), 0)::bigint FROM swapped`, pgx.StrictNamedArgs{
		"ids": ids, "olds": olds, "news": news, "versions": versions, "counts": counts, "bindings": bindings,
	}).Scan(&swapped)
	if err != nil {
		return 0, fmt.Errorf("postgres: swap secrets: %w", err)
	}
	return int(swapped), nil
}

// CountByKey counts stored secrets (pending and active) per backend (the
// ciphertext up to its first ':') and key version.
func (s *Store) CountByKey(ctx context.Context) (map[store.KeyRef]int, error) {
	return s.countByKey(ctx, "count by key", "")
}

// CountBareBindings counts the stored secrets still under
// store.BindingBare per backend and key version.
func (s *Store) CountBareBindings(ctx context.Context) (map[store.KeyRef]int, error) {
	return s.countByKey(ctx, "count bare bindings", "WHERE binding = 0")
}

func (s *Store) countByKey(ctx context.Context, op, where string) (map[store.KeyRef]int, error) {
	rows, err := s.pool.Query(ctx, `
SELECT split_part(ciphertext, ':', 1), key_version, COUNT(*)
FROM users `+where+` GROUP BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("postgres: %s: %w", op, err)
	}
	defer rows.Close()
	out := map[store.KeyRef]int{}
	for rows.Next() {
		var k store.KeyRef
		var n int
		if err := rows.Scan(&k.Backend, &k.Version, &n); err != nil {
			return nil, fmt.Errorf("postgres: %s: %w", op, err)
		}
		out[k] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: %s: %w", op, err)
	}
	return out, nil
}

// CountByState counts users per MFA state (pending and active; users
// without a row are not known to the store).
func (s *Store) CountByState(ctx context.Context) (map[store.State]int, error) {
	rows, err := s.pool.Query(ctx, `SELECT state, COUNT(*) FROM users GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("postgres: count by state: %w", err)
	}
	defer rows.Close()
	out := map[store.State]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("postgres: count by state: %w", err)
		}
		out[store.State(st)] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: count by state: %w", err)
	}
	return out, nil
}

// ---- lifecycle ----

// Ping checks that the database answers on a pooled connection.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: ping: %w", err)
	}
	return nil
}

// Close closes the pool, waiting for connections in use to be returned.
// Closing a closed Store does nothing.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

var _ store.Store = (*Store)(nil)
