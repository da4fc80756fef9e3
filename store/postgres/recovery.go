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

// RecoveryCodes lists the user's unused recovery codes in id order (none
// for an unknown user).
func (s *Store) RecoveryCodes(ctx context.Context, id string) ([]store.RecoveryCode, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+column.RecoveryCodeColumns+` FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL ORDER BY id`, id)
	if err != nil {
		return nil, fmt.Errorf("postgres: recovery codes: %w", err)
	}
	defer rows.Close()
	out, err := column.Collect(rows, column.RecoveryCode)
	if err != nil {
		return nil, fmt.Errorf("postgres: recovery codes: %w", err)
	}
	return out, nil
}

// ReplaceRecoveryCodes drops every recovery code of an active user, stores
// hashes and deletes the user's trusted devices, in one transaction that
// starts by locking the user's row (so concurrent replacements run one
// after the other and leave one whole set, and no device is added beside
// it), and returns how many devices went. store.ErrConflict when the user
// is not active (or has no row).
func (s *Store) ReplaceRecoveryCodes(ctx context.Context, id string, hashes [][]byte, now time.Time) (int, error) {
	var devices int
	err := inTx(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE users SET updated_at = $1 WHERE id = $2 AND state = 'active'`, column.Millis(now), id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrConflict
		}
		if err := insertRecoveryCodes(ctx, tx, id, hashes, now); err != nil {
			return err
		}
		devices, err = deleteUserDevices(ctx, tx, id)
		return err
	})
	if errors.Is(err, store.ErrConflict) {
		return 0, store.ErrConflict
	}
	if err != nil {
		return 0, fmt.Errorf("postgres: replace recovery codes: %w", err)
	}
	return devices, nil
}
