package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/internal/column"
)

// errRefused ends the transaction of a refused attempt, which wrote nothing.
var errRefused = errors.New("postgres: attempt refused")

// SettleAttempt counts, checks and settles one second-factor attempt in
// one transaction, so a login costs one commit. The transaction locks the
// user's row first (SELECT ... FOR NO KEY UPDATE, as every transaction on
// a user and their codes does, so it cannot deadlock with them);
// concurrent attempts for the same user, in this process or another
// replica, queue for that lock and each decides (store.Counter) on the
// row the one before it committed, so together they never get past the
// limit and a step or code is spent once. Refused attempts write nothing.
//
// Concurrent commits of different users share WAL flushes: PostgreSQL
// groups them by itself (a backend flushing the WAL flushes every commit
// record written before it; commit_delay and commit_siblings tune this on
// the server), so there is no batching to do on this side.
func (s *Store) SettleAttempt(ctx context.Context, id string, m store.Match, now time.Time, l store.Limits) (store.Settled, error) {
	now = column.Time(column.Millis(now)) // whole milliseconds, as stored
	var res store.Settled
	err := inTx(ctx, s.pool, func(tx pgx.Tx) error {
		var (
			state       string
			last        int64
			c           store.Counter
			fws, locked int64
		)
		err := tx.QueryRow(ctx, `SELECT state, last_step, failures, failure_window_start, locked_until
FROM users WHERE id = $1 FOR NO KEY UPDATE`, id).Scan(&state, &last, &c.Failures, &fws, &locked)
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		c.WindowStart, c.LockedUntil = column.Time(fws), column.Time(locked)
		ok, until := c.Admit(now, l)
		if !ok {
			res = store.Settled{LockedUntil: until}
			return errRefused // nothing to commit: roll back, release the row
		}
		active := state == string(store.StateActive)
		accepted := active && m.Step > last
		if active && !accepted && m.RecoveryCodeID > 0 {
			tag, err := tx.Exec(ctx, `UPDATE recovery_codes SET used_at = $1 WHERE id = $2 AND user_id = $3 AND used_at IS NULL`,
				column.Millis(now), m.RecoveryCodeID, id)
			if err != nil {
				return err
			}
			accepted = tag.RowsAffected() == 1
		}
		if accepted {
			// A recovery code leaves last_step as it is (GREATEST with 0).
			res = store.Settled{Allowed: true, Accepted: true}
			_, err = tx.Exec(ctx, `
UPDATE users SET last_step = GREATEST(last_step, @step), failures = 0, failure_window_start = 0,
	last_used_at = @now, updated_at = @now
WHERE id = @id`, pgx.StrictNamedArgs{"step": m.Step, "now": column.Millis(now), "id": id})
			return err
		}
		c, res = c.Fail(now, l, m.Step > 0)
		_, err = tx.Exec(ctx, `UPDATE users SET failures = $1, failure_window_start = $2, locked_until = $3 WHERE id = $4`,
			c.Failures, column.Millis(c.WindowStart), column.Millis(c.LockedUntil), id)
		if err != nil || !res.LockStarted {
			return err
		}
		// The lock ends every trusted device of the user, in this
		// transaction (the users row is locked, so none is added meanwhile).
		res.DevicesRevoked, err = deleteUserDevices(ctx, tx, id)
		return err
	})
	switch {
	case errors.Is(err, errRefused):
		return res, nil
	case errors.Is(err, store.ErrNotFound):
		return store.Settled{}, store.ErrNotFound
	case err != nil:
		return store.Settled{}, fmt.Errorf("postgres: settle attempt: %w", err)
	}
	return res, nil
}
