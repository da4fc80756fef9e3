package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"time"

	"github.com/totpgate/totpgate/store/migration"
)

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
	return migration.Applier{Driver: "sqlite", TooNew: ErrSchemaTooNew, Run: func(ctx context.Context, fn func(migration.Tx) error) error {
		return inTx(ctx, db, func(tx *sql.Tx) error { return fn(migrateTx{tx}) })
	}}.Apply(ctx, ms)
}

// migrateTx is migration.Tx in one BEGIN IMMEDIATE transaction.
type migrateTx struct{ tx *sql.Tx }

func (t migrateTx) Applied(ctx context.Context, version int) (int, bool, error) {
	var cur, n int
	if err := t.tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&cur); err != nil {
		return 0, false, err
	}
	err := t.tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = ?`, version).Scan(&n)
	return cur, n > 0, err
}

func (t migrateTx) Exec(ctx context.Context, sql string) error {
	_, err := t.tx.ExecContext(ctx, sql)
	return err
}

func (t migrateTx) Record(ctx context.Context, version int, at time.Time) error {
	_, err := t.tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`, version, at.UnixMilli())
	return err
}
