package postgres

import (
	"context"
	"embed"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/totpgate/totpgate/store/migration"
)

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
	return migration.Applier{Driver: "postgres", TooNew: ErrSchemaTooNew, Run: func(ctx context.Context, fn func(migration.Tx) error) error {
		return inTx(ctx, pool, func(tx pgx.Tx) error {
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
			return fn(migrateTx{tx})
		})
	}}.Apply(ctx, ms)
}

// migrateTx is migration.Tx in a transaction holding the advisory lock.
type migrateTx struct{ tx pgx.Tx }

func (t migrateTx) Applied(ctx context.Context, version int) (int, bool, error) {
	var (
		cur     int
		applied bool
	)
	err := t.tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0), COALESCE(bool_or(version = $1), false) FROM schema_migrations`,
		version).Scan(&cur, &applied)
	return cur, applied, err
}

// Exec passes no arguments: pgx sends the SQL with the simple protocol,
// which runs a file of several statements.
func (t migrateTx) Exec(ctx context.Context, sql string) error {
	_, err := t.tx.Exec(ctx, sql)
	return err
}

func (t migrateTx) Record(ctx context.Context, version int, at time.Time) error {
	_, err := t.tx.Exec(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)`, version, at.UnixMilli())
	return err
}
