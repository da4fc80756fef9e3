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

// CreateDevice inserts d with one INSERT ... SELECT from the user's row,
// which holds only while the user is active and not locked at d.CreatedAt:
// the check and the insert are one statement on the one write connection.
func (s *Store) CreateDevice(ctx context.Context, d store.TrustedDevice) error {
	n, err := s.execCount(ctx, "create device", `
INSERT INTO trusted_devices (`+column.DeviceColumns+`)
SELECT :id, users.id, :hash, NULL, :label, :now, :used, :exp FROM users
WHERE users.id = :user AND users.state = 'active' AND users.locked_until <= :now
ON CONFLICT DO NOTHING`,
		named(column.DeviceArgs(d))...)
	return outcome.Changed(n, err, store.ErrConflict)
}

// RotateDevice rotates a live token, or deletes the device whose
// rotated-away token it is, in one BEGIN IMMEDIATE transaction.
func (s *Store) RotateDevice(ctx context.Context, user string, tokenHash, newHash []byte, now time.Time) (store.TrustedDevice, error) {
	var (
		d      store.TrustedDevice
		reused bool
	)
	err := inTx(ctx, s.w, func(tx *sql.Tx) error {
		var err error
		d, err = column.One(tx.QueryRowContext(ctx, `
UPDATE trusted_devices SET prev_hash = token_hash, token_hash = :new, last_used_at = :now
WHERE user_id = :user AND token_hash = :old AND expires_at > :now
RETURNING `+column.DeviceColumns,
			sql.Named("new", column.Bytes(newHash)), sql.Named("now", column.Millis(now)), sql.Named("user", user), sql.Named("old", column.Bytes(tokenHash))), column.Device)
		if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		n, err := rowsChanged(tx.ExecContext(ctx, `DELETE FROM trusted_devices WHERE user_id = ? AND prev_hash = ? AND expires_at > ?`,
			user, column.Bytes(tokenHash), column.Millis(now)))
		reused = n > 0
		return err
	})
	switch {
	case err == nil && reused:
		err = store.ErrDeviceReused
	case err == nil && d.ID == "":
		err = store.ErrNotFound
	}
	return outcome.Of(driver, "rotate device", d, err)
}

// Devices lists the user's devices live at now, oldest first.
func (s *Store) Devices(ctx context.Context, user string, now time.Time) ([]store.TrustedDevice, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+column.DeviceColumns+` FROM trusted_devices
WHERE user_id = ? AND expires_at > ? ORDER BY created_at, id`, user, column.Millis(now))
	if err != nil {
		return nil, driver.Err("devices", err)
	}
	defer rows.Close()
	out, err := column.Collect(rows, column.Device)
	return outcome.Of(driver, "devices", out, err)
}

// DeleteDevice deletes the user's device id and returns it.
func (s *Store) DeleteDevice(ctx context.Context, user, id string) (store.TrustedDevice, error) {
	d, err := column.One(s.w.QueryRowContext(ctx, `DELETE FROM trusted_devices WHERE user_id = ? AND id = ? RETURNING `+column.DeviceColumns, user, id), column.Device)
	return outcome.Of(driver, "delete device", d, err)
}

// DeleteDevices deletes the user's devices but except (expired ones too:
// nobody can use them, the sweeper would) in one statement, and counts
// those that were live at now.
func (s *Store) DeleteDevices(ctx context.Context, user, except string, now time.Time) (int, error) {
	rows, err := s.w.QueryContext(ctx, `DELETE FROM trusted_devices WHERE user_id = ? AND id <> ? RETURNING expires_at`, user, except)
	if err != nil {
		return 0, driver.Err("delete devices", err)
	}
	defer rows.Close()
	exps, err := column.Collect(rows, func(exp *int64) []any { return []any{exp} })
	if err != nil {
		return 0, driver.Err("delete devices", err)
	}
	live := 0
	for _, exp := range exps {
		if exp > column.Millis(now) {
			live++
		}
	}
	return live, nil
}

// DeleteExpiredDevices removes devices expired at now.
func (s *Store) DeleteExpiredDevices(ctx context.Context, now time.Time) (int, error) {
	n, err := s.execCount(ctx, "delete expired devices", `DELETE FROM trusted_devices WHERE expires_at <= ?`, column.Millis(now))
	return int(n), err
}
