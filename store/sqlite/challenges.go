package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/internal/column"
	"github.com/totpgate/totpgate/store/internal/outcome"
)

// CreateChallenge stores c. An existing challenge with the same IDHash is
// never overwritten: store.ErrConflict.
func (s *Store) CreateChallenge(ctx context.Context, c store.Challenge) error {
	n, err := s.execCount(ctx, "create challenge", `
INSERT INTO challenges (`+column.ChallengeColumns+`)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id_hash) DO NOTHING`,
		column.ChallengeValues(c)...)
	return outcome.Changed(n, err, store.ErrConflict)
}

// GetChallenge returns a challenge live at now, or store.ErrNotFound.
func (s *Store) GetChallenge(ctx context.Context, idHash []byte, now time.Time) (store.Challenge, error) {
	c, err := column.One(s.r.QueryRowContext(ctx,
		`SELECT `+column.ChallengeColumns+` FROM challenges WHERE id_hash = ? AND expires_at > ?`, column.Bytes(idHash), column.Millis(now)), column.Challenge)
	return outcome.Of(driver, "get challenge", c, err)
}

// FailChallenge counts a wrong code and deletes the challenge once
// maxAttempts are counted, in one transaction. It returns the attempts
// left; 0 when the challenge is gone now, or was already (unknown ids are
// not an error: there is nothing left to try).
func (s *Store) FailChallenge(ctx context.Context, idHash []byte, maxAttempts int) (int, error) {
	var left int
	err := inTx(ctx, s.w, func(tx *sql.Tx) error {
		var attempts int
		err := tx.QueryRowContext(ctx, `UPDATE challenges SET attempts = attempts + 1 WHERE id_hash = ? RETURNING attempts`,
			column.Bytes(idHash)).Scan(&attempts)
		if errors.Is(err, sql.ErrNoRows) {
			left = 0
			return nil
		}
		if err != nil {
			return err
		}
		if attempts < maxAttempts {
			left = maxAttempts - attempts
			return nil
		}
		left = 0
		_, err = tx.ExecContext(ctx, `DELETE FROM challenges WHERE id_hash = ?`, column.Bytes(idHash))
		return err
	})
	return outcome.Of(driver, "fail challenge", left, err)
}

// SatisfyChallenge marks a challenge live at now satisfied.
// store.ErrNotFound if it is gone or expired.
func (s *Store) SatisfyChallenge(ctx context.Context, idHash []byte, now time.Time) error {
	n, err := s.execCount(ctx, "satisfy challenge", `UPDATE challenges SET satisfied = 1 WHERE id_hash = ? AND expires_at > ?`,
		column.Bytes(idHash), column.Millis(now))
	return outcome.Changed(n, err, store.ErrNotFound)
}

// SpendChallenge deletes a challenge live at now and returns it, in one
// DELETE ... RETURNING statement: of concurrent callers exactly one gets
// it, the others store.ErrNotFound.
func (s *Store) SpendChallenge(ctx context.Context, idHash []byte, now time.Time) (store.Challenge, error) {
	c, err := column.One(s.w.QueryRowContext(ctx,
		`DELETE FROM challenges WHERE id_hash = ? AND expires_at > ? RETURNING `+column.ChallengeColumns,
		column.Bytes(idHash), column.Millis(now)), column.Challenge)
	return outcome.Of(driver, "spend challenge", c, err)
}

// TakeRevocations clears and returns the revocation material of user's
// challenges, or of the expired ones when user is "", in one write
// transaction (RETURNING would give the cleared values).
func (s *Store) TakeRevocations(ctx context.Context, user string, now time.Time) ([]store.Challenge, error) {
	where, arg := `revoke IS NOT NULL AND expires_at <= ?`, any(column.Millis(now))
	if user != "" {
		where, arg = `revoke IS NOT NULL AND user_id = ?`, user
	}
	var out []store.Challenge
	err := inTx(ctx, s.w, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT user_id, revoke FROM challenges WHERE `+where, arg)
		if err != nil {
			return err
		}
		defer rows.Close()
		if out, err = column.Collect(rows, column.Revocation); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE challenges SET revoke = NULL WHERE `+where, arg)
		return err
	})
	return outcome.Of(driver, "take revocations", out, err)
}

// DeleteExpiredChallenges removes challenges expired at now and returns
// how many.
func (s *Store) DeleteExpiredChallenges(ctx context.Context, now time.Time) (int, error) {
	n, err := s.execCount(ctx, "delete expired challenges", `DELETE FROM challenges WHERE expires_at <= ?`, column.Millis(now))
	return int(n), err
}
