package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/internal/outcome"
	"github.com/totpgate/totpgate/store/internal/usertx"
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
	var res store.Settled
	err := s.inUserTx(ctx, func(tx usertx.Tx) error {
		var err error
		if res, err = usertx.Settle(ctx, tx, id, m, now, l); err == nil && !res.Allowed {
			return errRefused // nothing to commit: roll back, release the row
		}
		return err
	})
	if errors.Is(err, errRefused) {
		return res, nil
	}
	return outcome.Of(driver, "settle attempt", res, err)
}
