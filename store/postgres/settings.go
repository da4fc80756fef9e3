package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/internal/column"
)

// Setting returns the value stored under key, or store.ErrNotFound.
func (s *Store) Setting(ctx context.Context, key string) ([]byte, error) {
	var v []byte
	err := s.pool.QueryRow(ctx, `SELECT value FROM settings WHERE key = $1`, key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: setting: %w", err)
	}
	return v, nil
}

// PutSettingIfAbsent stores value under key unless key exists and returns
// the stored value, in one statement: the no-op DO UPDATE makes RETURNING
// yield the existing row, also when a concurrent caller inserted it first
// (the upsert waits for that insert to commit).
func (s *Store) PutSettingIfAbsent(ctx context.Context, key string, value []byte) ([]byte, error) {
	var v []byte
	err := s.pool.QueryRow(ctx, `
INSERT INTO settings (key, value) VALUES ($1, $2)
ON CONFLICT (key) DO UPDATE SET value = settings.value
RETURNING value`, key, column.Bytes(value)).Scan(&v)
	if err != nil {
		return nil, fmt.Errorf("postgres: put setting: %w", err)
	}
	return v, nil
}

// SwapSetting replaces a setting only if it still holds old.
func (s *Store) SwapSetting(ctx context.Context, key string, old, replacement []byte) (bool, error) {
	n, err := s.execCount(ctx, "swap setting", `UPDATE settings SET value = $1 WHERE key = $2 AND value = $3`,
		column.Bytes(replacement), key, column.Bytes(old))
	return n == 1, err
}
