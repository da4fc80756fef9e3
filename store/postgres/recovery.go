package postgres

import (
	"context"
	"time"

	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/internal/column"
	"github.com/totpgate/totpgate/store/internal/outcome"
)

// RecoveryCodes lists the user's unused recovery codes in id order (none
// for an unknown user).
func (s *Store) RecoveryCodes(ctx context.Context, id string) ([]store.RecoveryCode, error) {
	// The query's error comes back from rows.Err (Reads, postgres.go).
	rows, _ := s.pool.Query(ctx, `SELECT `+column.RecoveryCodeColumns+` FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL ORDER BY id`, id)
	defer rows.Close()
	out, err := column.Collect(rows, column.RecoveryCode)
	return outcome.Of(driver, "recovery codes", out, err)
}

// ReplaceRecoveryCodes drops every recovery code of an active user, stores
// hashes and deletes the user's trusted devices, in one transaction that
// starts by locking the user's row (so concurrent replacements run one
// after the other and leave one whole set, and no device is added beside
// it), and returns how many devices went. store.ErrConflict when the user
// is not active (or has no row).
func (s *Store) ReplaceRecoveryCodes(ctx context.Context, id string, hashes [][]byte, now time.Time) (int, error) {
	return s.users().ReplaceRecoveryCodes(ctx, id, hashes, now)
}
