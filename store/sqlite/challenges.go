package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/internal/column"
)

// CreateChallenge stores c. An existing challenge with the same IDHash is
// never overwritten: store.ErrConflict.
func (s *Store) CreateChallenge(ctx context.Context, c store.Challenge) error {
	n, err := s.execCount(ctx, "create challenge", `
INSERT INTO challenges (id_hash, user_id, sealed, enroll, satisfied, attempts, created_at, expires_at, revoke)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id_hash) DO NOTHING`,
		column.Bytes(c.IDHash), c.UserID, column.Bytes(c.Sealed), boolInt(c.Enroll), boolInt(c.Satisfied), c.Attempts,
		column.Millis(c.CreatedAt), column.Millis(c.ExpiresAt), nullBlob(c.Revoke))
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrConflict
	}
	return nil
}

// GetChallenge returns a challenge live at now, or store.ErrNotFound.
func (s *Store) GetChallenge(ctx context.Context, idHash []byte, now time.Time) (store.Challenge, error) {
	c, err := column.One(s.r.QueryRowContext(ctx,
		`SELECT `+column.ChallengeColumns+` FROM challenges WHERE id_hash = ? AND expires_at > ?`, column.Bytes(idHash), column.Millis(now)), column.Challenge)
	if errors.Is(err, store.ErrNotFound) {
		return store.Challenge{}, store.ErrNotFound
	}
	if err != nil {
		return store.Challenge{}, fmt.Errorf("sqlite: get challenge: %w", err)
	}
	return c, nil
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
	if err != nil {
		return 0, fmt.Errorf("sqlite: fail challenge: %w", err)
	}
	return left, nil
}

// SatisfyChallenge marks a challenge live at now satisfied.
// store.ErrNotFound if it is gone or expired.
func (s *Store) SatisfyChallenge(ctx context.Context, idHash []byte, now time.Time) error {
	n, err := s.execCount(ctx, "satisfy challenge", `UPDATE challenges SET satisfied = 1 WHERE id_hash = ? AND expires_at > ?`,
		column.Bytes(idHash), column.Millis(now))
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

// SpendChallenge deletes a challenge live at now and returns it, in one
// DELETE ... RETURNING statement: of concurrent callers exactly one gets
// it, the others store.ErrNotFound.
func (s *Store) SpendChallenge(ctx context.Context, idHash []byte, now time.Time) (store.Challenge, error) {
	c, err := column.One(s.w.QueryRowContext(ctx,
		`DELETE FROM challenges WHERE id_hash = ? AND expires_at > ? RETURNING `+column.ChallengeColumns,
		column.Bytes(idHash), column.Millis(now)), column.Challenge)
	if errors.Is(err, store.ErrNotFound) {
		return store.Challenge{}, store.ErrNotFound
	}
	if err != nil {
		return store.Challenge{}, fmt.Errorf("sqlite: spend challenge: %w", err)
	}
	return c, nil
}

// DeleteExpiredChallenges removes challenges expired at now and returns
// how many.
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
	if err != nil {
		return nil, fmt.Errorf("sqlite: take revocations: %w", err)
	}
	return out, nil
}

func nullBlob(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

func (s *Store) DeleteExpiredChallenges(ctx context.Context, now time.Time) (int, error) {
	n, err := s.execCount(ctx, "delete expired challenges", `DELETE FROM challenges WHERE expires_at <= ?`, column.Millis(now))
	if err != nil {
		return 0, err
	}
	return int(n), nil
}
