package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/internal/column"
	"github.com/totpgate/totpgate/store/internal/outcome"
)

// AcquireJob takes the lease in one statement: the upsert only overwrites
// the owner when the lease is free or already owner's, a condition checked
// on the newest row version while holding its lock, so concurrent callers
// cannot both win. When it does not win, the job is read back as stored.
func (s *Store) AcquireJob(ctx context.Context, name, owner string, now, leaseUntil time.Time) (store.Job, bool, error) {
	j, err := column.One(s.pool.QueryRow(ctx, `
INSERT INTO jobs (name, owner, lease_until, state) VALUES (@name, @owner, @until, '')
ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, lease_until = EXCLUDED.lease_until
WHERE jobs.lease_until < @now OR jobs.owner = EXCLUDED.owner
RETURNING `+column.JobColumns,
		pgx.StrictNamedArgs{"name": name, "owner": owner, "until": column.Millis(leaseUntil), "now": column.Millis(now)}), column.Job)
	if err == nil {
		return j, true, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return store.Job{}, false, driver.Err("acquire job", err)
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
		column.Bytes(state), column.Millis(leaseUntil), name, owner)
	return outcome.Changed(n, err, driver.LeaseLost(name))
}

// GetJob returns the named job, or store.ErrNotFound.
func (s *Store) GetJob(ctx context.Context, name string) (store.Job, error) {
	j, err := column.One(s.pool.QueryRow(ctx, `SELECT `+column.JobColumns+` FROM jobs WHERE name = $1`, name), column.Job)
	return outcome.Of(driver, "get job", j, err)
}
