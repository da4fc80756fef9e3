package sqlite

import (
	"context"
	"database/sql"

	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/internal/column"
	"github.com/totpgate/totpgate/store/internal/outcome"
)

// notAtTarget is the SQL condition "this row's secret is not yet at the
// target key": another backend, or a version below, or still under the
// bare binding (store.BindingBare). The backend test is a prefix
// comparison on the ciphertext ("vault:"), which the key_version column
// does not carry.
const notAtTarget = `NOT (substr(ciphertext, 1, length(:backend) + 1) = :backend || ':' AND key_version >= :version AND binding = 1)`

// SecretsPage lists up to limit stored secrets (pending and active) not yet
// at target, with user id > after in id order (byte order).
func (s *Store) SecretsPage(ctx context.Context, after string, target store.KeyRef, limit int) ([]store.SecretRef, error) {
	if err := outcome.PageLimit(limit); err != nil {
		return nil, driver.Err("secrets page", err)
	}
	rows, err := s.r.QueryContext(ctx, `
SELECT `+column.SecretRefColumns+` FROM users
WHERE id > :after AND `+notAtTarget+`
ORDER BY id
LIMIT :limit`, sql.Named("after", after), sql.Named("backend", target.Backend), sql.Named("version", target.Version), sql.Named("limit", limit))
	if err != nil {
		return nil, driver.Err("secrets page", err)
	}
	defer rows.Close()
	out, err := column.Collect(rows, column.SecretRef)
	return outcome.Of(driver, "secrets page", out, err)
}

// SwapSecrets applies the swaps whose row still holds Old, in one
// transaction: one fsync per batch instead of one per secret.
func (s *Store) SwapSecrets(ctx context.Context, swaps []store.Swap) (int, error) {
	if len(swaps) == 0 {
		return 0, nil
	}
	swapped := 0
	err := inTx(ctx, s.w, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `UPDATE users SET ciphertext = ?, key_version = ?, binding = ? WHERE id = ? AND ciphertext = ?`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, sw := range swaps {
			n, err := rowsChanged(stmt.ExecContext(ctx, sw.New, sw.Version, sw.Binding, sw.UserID, sw.Old))
			if err != nil {
				return err
			}
			swapped += int(n)
		}
		return nil
	})
	return outcome.Of(driver, "swap secrets", swapped, err)
}

// CountByKey counts stored secrets (pending and active) per backend and
// key version.
func (s *Store) CountByKey(ctx context.Context) (map[store.KeyRef]int, error) {
	return s.countByKey(ctx, "count by key", "")
}

// CountBareBindings counts the stored secrets still under
// store.BindingBare per backend and key version.
func (s *Store) CountBareBindings(ctx context.Context) (map[store.KeyRef]int, error) {
	return s.countByKey(ctx, "count bare bindings", "WHERE binding = 0")
}

func (s *Store) countByKey(ctx context.Context, op, where string) (map[store.KeyRef]int, error) {
	rows, err := s.r.QueryContext(ctx, `
SELECT substr(ciphertext, 1, instr(ciphertext, ':') - 1), key_version, COUNT(*)
FROM users `+where+` GROUP BY 1, 2`)
	if err != nil {
		return nil, driver.Err(op, err)
	}
	defer rows.Close()
	out, err := column.Counts(rows, column.KeyRef)
	return outcome.Of(driver, op, out, err)
}

// CountByState counts users per MFA state (pending and active; users
// without a row are not known to the store).
func (s *Store) CountByState(ctx context.Context) (map[store.State]int, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT state, COUNT(*) FROM users GROUP BY state`)
	if err != nil {
		return nil, driver.Err("count by state", err)
	}
	defer rows.Close()
	out, err := column.Counts(rows, column.State)
	return outcome.Of(driver, "count by state", out, err)
}
