package sqlite

import (
	"context"

	"github.com/totpgate/totpgate/store/internal/column"
	"github.com/totpgate/totpgate/store/internal/outcome"
)

// Setting returns the value stored under key, or store.ErrNotFound.
func (s *Store) Setting(ctx context.Context, key string) ([]byte, error) {
	v, err := column.One(s.r.QueryRowContext(ctx, `SELECT value FROM settings WHERE key = ?`, key), column.Value)
	return outcome.Of(driver, "setting", v, err)
}

// PutSettingIfAbsent stores value under key unless key exists and returns
// the stored value, in one statement (the no-op DO UPDATE makes RETURNING
// yield the existing row).
func (s *Store) PutSettingIfAbsent(ctx context.Context, key string, value []byte) ([]byte, error) {
	v, err := column.One(s.w.QueryRowContext(ctx, `
INSERT INTO settings (key, value) VALUES (?, ?)
ON CONFLICT (key) DO UPDATE SET value = settings.value
RETURNING value`, key, column.Bytes(value)), column.Value)
	return outcome.Of(driver, "put setting", v, err)
}

// SwapSetting replaces a setting only if it still holds old.
func (s *Store) SwapSetting(ctx context.Context, key string, old, replacement []byte) (bool, error) {
	n, err := s.execCount(ctx, "swap setting", `UPDATE settings SET value = ? WHERE key = ? AND value = ?`, column.Bytes(replacement), key, column.Bytes(old))
	return n == 1, err
}
