package migration

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Tx is a driver's statements on its schema, inside the transaction that
// applies one migration.
type Tx interface {
	// Applied reads the highest version schema_migrations holds (0 for
	// none) and whether it holds version.
	Applied(ctx context.Context, version int) (latest int, applied bool, err error)
	// Exec runs a migration's SQL, a file of statements.
	Exec(ctx context.Context, sql string) error
	// Record adds version, applied at at, to schema_migrations.
	Record(ctx context.Context, version int, at time.Time) error
}

// Applier is how a driver applies migrations: Run runs fn in one
// transaction, committing when fn returns nil (and holding whatever lock
// keeps other processes from applying the same migration meanwhile);
// TooNew is the driver's refusal of a database a newer binary migrated;
// Driver names the driver in errors.
type Applier struct {
	Driver string
	TooNew error
	Run    func(ctx context.Context, fn func(Tx) error) error
}

// Apply applies the migrations of ms the database has not seen, in
// order, each in its own transaction together with its schema_migrations
// row, so a crash leaves either the whole migration or none of it. A
// database at a version above the last of ms is refused: an error that
// is a.TooNew and names both versions. Other errors are wrapped as
// "<driver>: migrate: ...", naming the migration whose SQL failed.
func (a Applier) Apply(ctx context.Context, ms []Migration) error {
	last := ms[len(ms)-1].Version
	for _, m := range ms {
		err := a.Run(ctx, func(tx Tx) error {
			cur, applied, err := tx.Applied(ctx, m.Version)
			if err != nil {
				return err
			}
			if cur > last {
				return fmt.Errorf("%w: database is at version %d, this binary knows up to %d; upgrade totpgate", a.TooNew, cur, last)
			}
			if applied {
				return nil // applied earlier
			}
			if err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("%s: %w", m.Name, err)
			}
			return tx.Record(ctx, m.Version, time.Now())
		})
		if errors.Is(err, a.TooNew) {
			return err
		}
		if err != nil {
			return fmt.Errorf("%s: migrate: %w", a.Driver, err)
		}
	}
	return nil
}
