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

// CreateChallenge stores c. An existing challenge with the same IDHash is
// never overwritten: store.ErrConflict.
func (s *Store) CreateChallenge(ctx context.Context, c store.Challenge) error {
	n, err := s.execCount(ctx, "create challenge", `
INSERT INTO challenges (`+column.ChallengeColumns+`)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (id_hash) DO NOTHING`,
		column.ChallengeValues(c)...)
	return outcome.Changed(n, err, store.ErrConflict)
}

// GetChallenge returns a challenge live at now, or store.ErrNotFound.
func (s *Store) GetChallenge(ctx context.Context, idHash []byte, now time.Time) (store.Challenge, error) {
	c, err := column.One(s.pool.QueryRow(ctx,
		`SELECT `+column.ChallengeColumns+` FROM challenges WHERE id_hash = $1 AND expires_at > $2`, column.Bytes(idHash), column.Millis(now)), column.Challenge)
	return outcome.Of(driver, "get challenge", c, err)
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
		column.Bytes(idHash), int64(maxAttempts)).Scan(&attempts)
	if err == nil {
		return maxAttempts - attempts, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return 0, driver.Err("fail challenge", err)
	}
	// Out of attempts, or already gone.
	_, err = s.pool.Exec(ctx, `DELETE FROM challenges WHERE id_hash = $1`, column.Bytes(idHash))
	return 0, driver.Err("fail challenge", err)
}

// SatisfyChallenge marks a challenge live at now satisfied.
// store.ErrNotFound if it is gone or expired.
func (s *Store) SatisfyChallenge(ctx context.Context, idHash []byte, now time.Time) error {
	n, err := s.execCount(ctx, "satisfy challenge", `UPDATE challenges SET satisfied = 1 WHERE id_hash = $1 AND expires_at > $2`,
		column.Bytes(idHash), column.Millis(now))
	return outcome.Changed(n, err, store.ErrNotFound)
}

// SpendChallenge deletes a challenge live at now and returns it, in one
// DELETE ... RETURNING statement: of concurrent callers exactly one gets
// it, the others wait for its commit, find the row gone and get
// store.ErrNotFound.
func (s *Store) SpendChallenge(ctx context.Context, idHash []byte, now time.Time) (store.Challenge, error) {
	c, err := column.One(s.pool.QueryRow(ctx,
		`DELETE FROM challenges WHERE id_hash = $1 AND expires_at > $2 RETURNING `+column.ChallengeColumns,
		column.Bytes(idHash), column.Millis(now)), column.Challenge)
	return outcome.Of(driver, "spend challenge", c, err)
}

// expiredBatch is how many rows DeleteExpiredChallenges and
// DeleteExpiredDevices delete per statement (and transaction).
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
	where, arg := `expires_at <= $1`, any(column.Millis(now))
	if user != "" {
		where, arg = `user_id = $1`, user
	}
	var out []store.Challenge
	for {
		// RETURNING gives the new (cleared) row: the old material comes
		// from the locked selection. The query's error comes back from
		// rows.Err (Reads, postgres.go).
		rows, _ := s.pool.Query(ctx, `
WITH taken AS (
	SELECT id_hash, user_id, revoke FROM challenges WHERE revoke IS NOT NULL AND `+where+` LIMIT $2 FOR UPDATE SKIP LOCKED
)
UPDATE challenges c SET revoke = NULL FROM taken WHERE c.id_hash = taken.id_hash
RETURNING taken.user_id, taken.revoke`, arg, int64(expiredBatch))
		batch, err := column.Collect(rows, column.Revocation)
		rows.Close()
		if err != nil {
			return out, driver.Err("take revocations", err)
		}
		out = append(out, batch...)
		if len(batch) < expiredBatch {
			return out, nil
		}
	}
}

func (s *Store) DeleteExpiredChallenges(ctx context.Context, now time.Time) (int, error) {
	return s.deleteExpired(ctx, "challenges", "id_hash", now)
}

// deleteExpired deletes the rows of table expired at now, in batches of
// expiredBatch rows (keyed by key), skipping rows another transaction
// holds, so the sweeper never holds many locks or waits for a login.
func (s *Store) deleteExpired(ctx context.Context, table, key string, now time.Time) (int, error) {
	total := 0
	for {
		n, err := s.execCount(ctx, "delete expired "+table, `
DELETE FROM `+table+` WHERE `+key+` IN (
	SELECT `+key+` FROM `+table+` WHERE expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED
)`, column.Millis(now), int64(expiredBatch))
		if err != nil {
			return total, err
		}
		total += int(n)
		if n < expiredBatch {
			return total, nil
		}
	}
}
