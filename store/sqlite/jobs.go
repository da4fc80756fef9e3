package sqlite

import (
	"context"
	"database/sql"
	"time"

	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/internal/column"
	"github.com/totpgate/totpgate/store/internal/outcome"
)

// AcquireJob takes the lease in one statement: the upsert only overwrites
// the owner when the lease is free, so concurrent callers cannot both win.
func (s *Store) AcquireJob(ctx context.Context, name, owner string, now, leaseUntil time.Time) (store.Job, bool, error) {
	n, err := s.execCount(ctx, "acquire job", `
INSERT INTO jobs (name, owner, lease_until, state) VALUES (:name, :owner, :until, x'')
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until
WHERE jobs.lease_until < :now OR jobs.owner = excluded.owner`,
		sql.Named("name", name), sql.Named("owner", owner), sql.Named("until", column.Millis(leaseUntil)), sql.Named("now", column.Millis(now)))
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
		column.Bytes(state), column.Millis(leaseUntil), name, owner)
	return outcome.Changed(n, err, driver.LeaseLost(name))
}

// GetJob returns the named job, or store.ErrNotFound.
func (s *Store) GetJob(ctx context.Context, name string) (store.Job, error) {
	return s.getJob(ctx, s.r, name)
}

func (s *Store) getJob(ctx context.Context, db *sql.DB, name string) (store.Job, error) {
	j, err := column.One(db.QueryRowContext(ctx, `SELECT `+column.JobColumns+` FROM jobs WHERE name = ?`, name), column.Job)
	return outcome.Of(driver, "get job", j, err)
}
