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
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/internal/outcome"
)

// ErrSchemaTooNew is returned by Open when the database was migrated by a
// newer totpgate than this one: running older code against a newer schema
// could silently drop or misread state, so Open refuses.
var ErrSchemaTooNew = errors.New("postgres: database schema is newer than this binary supports")

// driver names this store in its errors.
const driver outcome.Driver = "postgres"

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

// execCount runs one statement and returns how many rows it changed, with
// errors wrapped for op.
func (s *Store) execCount(ctx context.Context, op, query string, args ...any) (int64, error) {
	tag, err := s.pool.Exec(ctx, query, args...)
	return outcome.Of(driver, op, tag.RowsAffected(), err)
}

// Reads: rows, _ := s.pool.Query(...), then column.Collect or
// column.Counts over the rows, then rows.Close. pgx hands an error of the
// query itself to the rows too, as its documentation of Query allows ("It
// is allowed to ignore the error returned from Query and handle it in
// Rows"), and the collector returns it from rows.Err: no error is lost.

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
