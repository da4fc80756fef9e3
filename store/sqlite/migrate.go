package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
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
