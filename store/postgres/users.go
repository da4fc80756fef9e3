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

// GetUser returns the user's row, or store.ErrNotFound.
func (s *Store) GetUser(ctx context.Context, id string) (store.User, error) {
	var u store.User
	err := s.pool.QueryRow(ctx, `SELECT `+column.UserColumns+` FROM users WHERE id = $1`, id).Scan(column.User(&u)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.User{}, store.ErrNotFound
	}
	if err != nil {
		return store.User{}, fmt.Errorf("postgres: get user: %w", err)
	}
	return u, nil
}

// StartEnrollment stores u as a pending enrollment (u.ID, Ciphertext,
// KeyVersion, Params, PendingExpiresAt and UpdatedAt are used; the rest
// starts empty). An earlier pending row is replaced whole, its failure
// count and any lock included: they were counted against a secret that is
// gone. store.ErrConflict when the user is active. One upsert: its
// DO UPDATE ... WHERE is checked on the newest row version.
func (s *Store) StartEnrollment(ctx context.Context, u store.User) error {
	if u.ID == "" {
		return fmt.Errorf("postgres: start enrollment: empty user id")
	}
	n, err := s.execCount(ctx, "start enrollment", `
INSERT INTO users (id, state, ciphertext, key_version, binding, algorithm, digits, period, skew,
	last_step, failures, failure_window_start, locked_until, pending_expires_at,
	confirmed_at, last_used_at, updated_at)
VALUES (@id, 'pending', @ct, @kv, @binding, @alg, @digits, @period, @skew, 0, 0, 0, 0, @exp, 0, 0, @updated)
ON CONFLICT (id) DO UPDATE SET
	state = 'pending',
	ciphertext = EXCLUDED.ciphertext,
	key_version = EXCLUDED.key_version,
	binding = EXCLUDED.binding,
	algorithm = EXCLUDED.algorithm,
	digits = EXCLUDED.digits,
	period = EXCLUDED.period,
	skew = EXCLUDED.skew,
	last_step = 0,
	failures = 0,
	failure_window_start = 0,
	locked_until = 0,
	pending_expires_at = EXCLUDED.pending_expires_at,
	confirmed_at = 0,
	last_used_at = 0,
	updated_at = EXCLUDED.updated_at
WHERE users.state = 'pending'`, pgx.StrictNamedArgs{
		"id": u.ID, "ct": u.Ciphertext, "kv": u.KeyVersion, "binding": int16(u.Binding),
		"alg": u.Params.Algorithm, "digits": u.Params.Digits, "period": u.Params.Period, "skew": u.Params.Skew,
		"exp": column.Millis(u.PendingExpiresAt), "updated": column.Millis(column.NowOr(u.UpdatedAt)),
	})
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrConflict // the row is active
	}
	return nil
}

// ConfirmEnrollment makes a pending enrollment active when it still holds
// ciphertext and has not expired at now; it records step, clears the
// failure count (the confirming code was a successful second factor) and
// stores the recovery code hashes, all in one transaction whose first
// statement, the conditional UPDATE, locks the user's row. Of concurrent
// callers the first wins; the others wait for its commit, find the row
// active and get store.ErrConflict.
func (s *Store) ConfirmEnrollment(ctx context.Context, id, ciphertext string, step int64, recoveryHashes [][]byte, now time.Time) error {
	err := inTx(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `
UPDATE users SET
	state = 'active',
	last_step = @step,
	failures = 0,
	failure_window_start = 0,
	pending_expires_at = 0,
	confirmed_at = @now,
	last_used_at = @now,
	updated_at = @now
WHERE id = @id AND state = 'pending' AND ciphertext = @ct AND pending_expires_at > @now`,
			pgx.StrictNamedArgs{"step": step, "now": column.Millis(now), "id": id, "ct": ciphertext})
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrConflict
		}
		return insertRecoveryCodes(ctx, tx, id, recoveryHashes, now)
	})
	if errors.Is(err, store.ErrConflict) {
		return store.ErrConflict
	}
	if err != nil {
		return fmt.Errorf("postgres: confirm enrollment: %w", err)
	}
	return nil
}

// insertRecoveryCodes replaces every recovery code of user id by hashes.
// The caller's transaction holds the lock on the user's row.
func insertRecoveryCodes(ctx context.Context, tx pgx.Tx, id string, hashes [][]byte, now time.Time) error {
	if _, err := tx.Exec(ctx, `DELETE FROM recovery_codes WHERE user_id = $1`, id); err != nil {
		return err
	}
	if len(hashes) == 0 {
		return nil
	}
	hs := make([][]byte, len(hashes))
	for i, h := range hashes {
		hs[i] = column.Bytes(h)
	}
	// Ids are drawn in the order of hashes, as one INSERT per code would.
	_, err := tx.Exec(ctx, `
INSERT INTO recovery_codes (user_id, hash, created_at)
SELECT $1, c.hash, $2 FROM unnest($3::bytea[]) WITH ORDINALITY AS c(hash, n) ORDER BY c.n`,
		id, column.Millis(now), hs)
	return err
}

// DeleteUser removes the user's row and their trusted devices in one
// transaction (recovery codes go with the row, ON DELETE CASCADE), and
// returns how many devices went. It locks the row first (FOR UPDATE), so a
// CreateDevice, which locks it too, either committed before (its device
// is deleted here) or waits and then finds no user.
// store.ErrNotFound when there was no row.
func (s *Store) DeleteUser(ctx context.Context, id string) (int, error) {
	var devices int
	err := inTx(ctx, s.pool, func(tx pgx.Tx) error {
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM users WHERE id = $1 FOR UPDATE`, id).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		if devices, err = deleteUserDevices(ctx, tx, id); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM users WHERE id = $1`, id)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return 0, store.ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("postgres: delete user: %w", err)
	}
	return devices, nil
}

// Unlock clears failures and any lock. store.ErrNotFound when no row.
func (s *Store) Unlock(ctx context.Context, id string) error {
	n, err := s.execCount(ctx, "unlock", `
UPDATE users SET failures = 0, failure_window_start = 0, locked_until = 0, updated_at = $1
WHERE id = $2`, column.Millis(time.Now()), id)
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}
