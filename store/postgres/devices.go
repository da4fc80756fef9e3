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

// CreateDevice locks the user's row (FOR NO KEY UPDATE, as SettleAttempt
// and ReplaceRecoveryCodes do, and DeleteUser's FOR UPDATE waits for it),
// checks that the user is active and not locked at d.CreatedAt, and
// inserts d in the same transaction: a device cannot be added beside a
// lockout, a recovery-code replacement or a DeleteUser that did not see it.
func (s *Store) CreateDevice(ctx context.Context, d store.TrustedDevice) error {
	err := inTx(ctx, s.pool, func(tx pgx.Tx) error {
		var ok bool
		err := tx.QueryRow(ctx, `SELECT state = 'active' AND locked_until <= $2 FROM users WHERE id = $1 FOR NO KEY UPDATE`,
			d.UserID, column.Millis(d.CreatedAt)).Scan(&ok)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && !ok) {
			return store.ErrConflict
		}
		if err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `
INSERT INTO trusted_devices (id, user_id, token_hash, prev_hash, label, created_at, last_used_at, expires_at)
VALUES (@id, @user, @hash, NULL, @label, @now, @used, @exp)
ON CONFLICT DO NOTHING`, pgx.StrictNamedArgs{
			"id": d.ID, "user": d.UserID, "hash": column.Bytes(d.TokenHash), "label": d.Label,
			"now": column.Millis(d.CreatedAt), "used": column.Millis(d.LastUsedAt), "exp": column.Millis(d.ExpiresAt),
		})
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrConflict
		}
		return nil
	})
	if errors.Is(err, store.ErrConflict) {
		return store.ErrConflict
	}
	if err != nil {
		return fmt.Errorf("postgres: create device: %w", err)
	}
	return nil
}

// RotateDevice is two single statements, each atomic. The UPDATE's WHERE
// is evaluated again on the newest row version once a concurrent rotation
// of the same token commits, so only one of them matches; the one that
// lost then finds the token as prev_hash and deletes the device (reuse).
// Neither statement touches the users row, so this cannot deadlock with
// the transactions that lock it first.
func (s *Store) RotateDevice(ctx context.Context, user string, tokenHash, newHash []byte, now time.Time) (store.TrustedDevice, error) {
	d, err := column.One(s.pool.QueryRow(ctx, `
UPDATE trusted_devices SET prev_hash = token_hash, token_hash = @new, last_used_at = @now
WHERE user_id = @user AND token_hash = @old AND expires_at > @now
RETURNING `+column.DeviceColumns, pgx.StrictNamedArgs{"new": column.Bytes(newHash), "now": column.Millis(now), "user": user, "old": column.Bytes(tokenHash)}), column.Device)
	if err == nil {
		return d, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return store.TrustedDevice{}, fmt.Errorf("postgres: rotate device: %w", err)
	}
	n, err := s.execCount(ctx, "rotate device", `DELETE FROM trusted_devices WHERE user_id = $1 AND prev_hash = $2 AND expires_at > $3`,
		user, column.Bytes(tokenHash), column.Millis(now))
	if err != nil {
		return store.TrustedDevice{}, err
	}
	if n > 0 {
		return store.TrustedDevice{}, store.ErrDeviceReused
	}
	return store.TrustedDevice{}, store.ErrNotFound
}

// Devices lists the user's devices live at now, oldest first.
func (s *Store) Devices(ctx context.Context, user string, now time.Time) ([]store.TrustedDevice, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+column.DeviceColumns+` FROM trusted_devices
WHERE user_id = $1 AND expires_at > $2 ORDER BY created_at, id`, user, column.Millis(now))
	if err != nil {
		return nil, fmt.Errorf("postgres: devices: %w", err)
	}
	defer rows.Close()
	out, err := column.Collect(rows, column.Device)
	if err != nil {
		return nil, fmt.Errorf("postgres: devices: %w", err)
	}
	return out, nil
}

// DeleteDevice deletes the user's device id and returns it.
func (s *Store) DeleteDevice(ctx context.Context, user, id string) (store.TrustedDevice, error) {
	d, err := column.One(s.pool.QueryRow(ctx, `DELETE FROM trusted_devices WHERE user_id = $1 AND id = $2 RETURNING `+column.DeviceColumns, user, id), column.Device)
	if errors.Is(err, store.ErrNotFound) {
		return store.TrustedDevice{}, store.ErrNotFound
	}
	if err != nil {
		return store.TrustedDevice{}, fmt.Errorf("postgres: delete device: %w", err)
	}
	return d, nil
}

// DeleteDevices deletes the user's devices but except (expired ones too)
// in one statement, and counts those that were live at now.
func (s *Store) DeleteDevices(ctx context.Context, user, except string, now time.Time) (int, error) {
	var live int
	err := s.pool.QueryRow(ctx, `
WITH gone AS (DELETE FROM trusted_devices WHERE user_id = $1 AND id <> $2 RETURNING expires_at)
SELECT COUNT(*) FILTER (WHERE expires_at > $3) FROM gone`, user, except, column.Millis(now)).Scan(&live)
	if err != nil {
		return 0, fmt.Errorf("postgres: delete devices: %w", err)
	}
	return live, nil
}

// DeleteExpiredDevices removes devices expired at now, in batches, as
// DeleteExpiredChallenges does.
func (s *Store) DeleteExpiredDevices(ctx context.Context, now time.Time) (int, error) {
	return s.deleteExpired(ctx, "trusted_devices", "id", now)
}

// deleteUserDevices deletes every device of a user inside the caller's
// transaction, which holds the lock on the user's row.
func deleteUserDevices(ctx context.Context, tx pgx.Tx, user string) (int, error) {
	tag, err := tx.Exec(ctx, `DELETE FROM trusted_devices WHERE user_id = $1`, user)
	if err != nil {
		return 0, err
	}
	return int(tag.RowsAffected()), nil
}
