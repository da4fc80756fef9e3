package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/internal/column"
)

// GetUser returns the user's row, or store.ErrNotFound.
func (s *Store) GetUser(ctx context.Context, id string) (store.User, error) {
	var u store.User
	err := s.getUser.QueryRowContext(ctx, id).Scan(column.User(&u)...)
	if errors.Is(err, sql.ErrNoRows) {
		return store.User{}, store.ErrNotFound
	}
	if err != nil {
		return store.User{}, fmt.Errorf("sqlite: get user: %w", err)
	}
	return u, nil
}

// StartEnrollment stores u as a pending enrollment (u.ID, Ciphertext,
// KeyVersion, Params, PendingExpiresAt and UpdatedAt are used; the rest
// starts empty). An earlier pending row is replaced whole, its failure
// count and any lock included: they were counted against a secret that is
// gone. store.ErrConflict when the user is active.
func (s *Store) StartEnrollment(ctx context.Context, u store.User) error {
	if u.ID == "" {
		return fmt.Errorf("sqlite: start enrollment: empty user id")
	}
	n, err := s.execCount(ctx, "start enrollment", `
INSERT INTO users (id, state, ciphertext, key_version, binding, algorithm, digits, period, skew,
	last_step, failures, failure_window_start, locked_until, pending_expires_at,
	confirmed_at, last_used_at, updated_at)
VALUES (:id, 'pending', :ct, :kv, :binding, :alg, :digits, :period, :skew, 0, 0, 0, 0, :exp, 0, 0, :updated)
ON CONFLICT (id) DO UPDATE SET
	state = 'pending',
	ciphertext = excluded.ciphertext,
	key_version = excluded.key_version,
	binding = excluded.binding,
	algorithm = excluded.algorithm,
	digits = excluded.digits,
	period = excluded.period,
	skew = excluded.skew,
	last_step = 0,
	failures = 0,
	failure_window_start = 0,
	locked_until = 0,
	pending_expires_at = excluded.pending_expires_at,
	confirmed_at = 0,
	last_used_at = 0,
	updated_at = excluded.updated_at
WHERE users.state = 'pending'`,
		sql.Named("id", u.ID), sql.Named("ct", u.Ciphertext), sql.Named("kv", u.KeyVersion), sql.Named("binding", u.Binding),
		sql.Named("alg", u.Params.Algorithm), sql.Named("digits", u.Params.Digits),
		sql.Named("period", u.Params.Period), sql.Named("skew", u.Params.Skew),
		sql.Named("exp", column.Millis(u.PendingExpiresAt)), sql.Named("updated", column.Millis(column.NowOr(u.UpdatedAt))))
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
// stores the recovery code hashes, all in one transaction.
// store.ErrConflict otherwise.
func (s *Store) ConfirmEnrollment(ctx context.Context, id, ciphertext string, step int64, recoveryHashes [][]byte, now time.Time) error {
	err := inTx(ctx, s.w, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `
UPDATE users SET
	state = 'active',
	last_step = :step,
	failures = 0,
	failure_window_start = 0,
	pending_expires_at = 0,
	confirmed_at = :now,
	last_used_at = :now,
	updated_at = :now
WHERE id = :id AND state = 'pending' AND ciphertext = :ct AND pending_expires_at > :now`,
			sql.Named("step", step), sql.Named("now", column.Millis(now)), sql.Named("id", id), sql.Named("ct", ciphertext))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			return store.ErrConflict
		}
		return insertRecoveryCodes(ctx, tx, id, recoveryHashes, now)
	})
	if errors.Is(err, store.ErrConflict) {
		return store.ErrConflict
	}
	if err != nil {
		return fmt.Errorf("sqlite: confirm enrollment: %w", err)
	}
	return nil
}

// insertRecoveryCodes replaces every recovery code of user id by hashes.
func insertRecoveryCodes(ctx context.Context, tx *sql.Tx, id string, hashes [][]byte, now time.Time) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM recovery_codes WHERE user_id = ?`, id); err != nil {
		return err
	}
	if len(hashes) == 0 {
		return nil
	}
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO recovery_codes (user_id, hash, created_at) VALUES (?, ?, ?)`)
	if err != nil {
		return err
	}
	defer stmt.Close()
	for _, h := range hashes {
		if _, err := stmt.ExecContext(ctx, id, column.Bytes(h), column.Millis(now)); err != nil {
			return err
		}
	}
	return nil
}

// DeleteUser removes the user's row and their trusted devices in one
// transaction (recovery codes go with the row, ON DELETE CASCADE), and
// returns how many devices went. store.ErrNotFound when there was no row.
func (s *Store) DeleteUser(ctx context.Context, id string) (int, error) {
	var devices int
	err := inTx(ctx, s.w, func(tx *sql.Tx) error {
		var err error
		if devices, err = deleteUserDevices(ctx, tx, id); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM users WHERE id = ?`, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return cmp.Or(err, store.ErrNotFound)
		}
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return 0, store.ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("sqlite: delete user: %w", err)
	}
	return devices, nil
}

// Unlock clears failures and any lock. store.ErrNotFound when no row.
func (s *Store) Unlock(ctx context.Context, id string) error {
	n, err := s.execCount(ctx, "unlock", `
UPDATE users SET failures = 0, failure_window_start = 0, locked_until = 0, updated_at = ?
WHERE id = ?`, column.Millis(time.Now()), id)
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}
