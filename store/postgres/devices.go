package postgres

import (
	"cmp"
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/internal/column"
	"github.com/totpgate/totpgate/store/internal/outcome"
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
INSERT INTO trusted_devices (`+column.DeviceColumns+`)
VALUES (@id, @user, @hash, NULL, @label, @now, @used, @exp)
ON CONFLICT DO NOTHING`, pgx.StrictNamedArgs(column.DeviceArgs(d)))
		return outcome.Changed(tag.RowsAffected(), err, store.ErrConflict)
	})
	return driver.Err("create device", err)
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
		return store.TrustedDevice{}, driver.Err("rotate device", err)
	}
	n, err := s.execCount(ctx, "rotate device", `DELETE FROM trusted_devices WHERE user_id = $1 AND prev_hash = $2 AND expires_at > $3`,
		user, column.Bytes(tokenHash), column.Millis(now))
	if err == nil && n > 0 {
		err = store.ErrDeviceReused
	}
	return store.TrustedDevice{}, cmp.Or(err, store.ErrNotFound)
}

// Devices lists the user's devices live at now, oldest first.
func (s *Store) Devices(ctx context.Context, user string, now time.Time) ([]store.TrustedDevice, error) {
	// The query's error comes back from rows.Err (Reads, postgres.go).
	rows, _ := s.pool.Query(ctx, `SELECT `+column.DeviceColumns+` FROM trusted_devices
WHERE user_id = $1 AND expires_at > $2 ORDER BY created_at, id`, user, column.Millis(now))
	defer rows.Close()
	out, err := column.Collect(rows, column.Device)
	return outcome.Of(driver, "devices", out, err)
}

// DeleteDevice deletes the user's device id and returns it.
func (s *Store) DeleteDevice(ctx context.Context, user, id string) (store.TrustedDevice, error) {
	d, err := column.One(s.pool.QueryRow(ctx, `DELETE FROM trusted_devices WHERE user_id = $1 AND id = $2 RETURNING `+column.DeviceColumns, user, id), column.Device)
	return outcome.Of(driver, "delete device", d, err)
}

// DeleteDevices deletes the user's devices but except (expired ones too)
// in one statement, and counts those that were live at now.
func (s *Store) DeleteDevices(ctx context.Context, user, except string, now time.Time) (int, error) {
	var live int
	err := s.pool.QueryRow(ctx, `
WITH gone AS (DELETE FROM trusted_devices WHERE user_id = $1 AND id <> $2 RETURNING expires_at)
SELECT COUNT(*) FILTER (WHERE expires_at > $3) FROM gone`, user, except, column.Millis(now)).Scan(&live)
	return outcome.Of(driver, "delete devices", live, err)
}

// DeleteExpiredDevices removes devices expired at now, in batches, as
// DeleteExpiredChallenges does.
func (s *Store) DeleteExpiredDevices(ctx context.Context, now time.Time) (int, error) {
	return s.deleteExpired(ctx, "trusted_devices", "id", now)
}
