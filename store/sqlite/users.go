package sqlite

import (
	"context"
	"database/sql"
	"time"

	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/internal/column"
	"github.com/totpgate/totpgate/store/internal/outcome"
)

// GetUser returns the user's row, or store.ErrNotFound.
func (s *Store) GetUser(ctx context.Context, id string) (store.User, error) {
	u, err := column.One(s.getUser.QueryRowContext(ctx, id), column.User)
	return outcome.Of(driver, "get user", u, err)
}

// StartEnrollment stores u as a pending enrollment (u.ID, Ciphertext,
// KeyVersion, Params, PendingExpiresAt and UpdatedAt are used; the rest
// starts empty). An earlier pending row is replaced whole, its failure
// count and any lock included: they were counted against a secret that is
// gone. store.ErrConflict when the user is active.
func (s *Store) StartEnrollment(ctx context.Context, u store.User) error {
	if err := outcome.Enrollment(u); err != nil {
		return driver.Err("start enrollment", err)
	}
	query, args := column.PendingUpsert(u)
	n, err := s.execCount(ctx, "start enrollment", query, named(args)...)
	return outcome.Changed(n, err, store.ErrConflict) // no row changed: it is active
}

// ConfirmEnrollment makes a pending enrollment active when it still holds
// ciphertext and has not expired at now; it records step, clears the
// failure count (the confirming code was a successful second factor) and
// stores the recovery code hashes, all in one transaction.
// store.ErrConflict otherwise.
func (s *Store) ConfirmEnrollment(ctx context.Context, id, ciphertext string, step int64, recoveryHashes [][]byte, now time.Time) error {
	return s.users().Confirm(ctx, id, ciphertext, step, recoveryHashes, now)
}

// DeleteUser removes the user's row and their trusted devices in one
// transaction (recovery codes go with the row, ON DELETE CASCADE), and
// returns how many devices went. store.ErrNotFound when there was no row.
func (s *Store) DeleteUser(ctx context.Context, id string) (int, error) {
	var devices int
	err := inTx(ctx, s.w, func(tx *sql.Tx) error {
		var err error
		if devices, err = s.userTx(tx).RevokeDevices(ctx, id); err != nil {
			return err
		}
		n, err := rowsChanged(tx.ExecContext(ctx, `DELETE FROM users WHERE id = ?`, id))
		return outcome.Changed(n, err, store.ErrNotFound)
	})
	return outcome.Of(driver, "delete user", devices, err)
}

// Unlock clears failures and any lock. store.ErrNotFound when no row.
func (s *Store) Unlock(ctx context.Context, id string) error {
	n, err := s.execCount(ctx, "unlock", `
UPDATE users SET failures = 0, failure_window_start = 0, locked_until = 0, updated_at = ?
WHERE id = ?`, column.Millis(time.Now()), id)
	return outcome.Changed(n, err, store.ErrNotFound)
}
