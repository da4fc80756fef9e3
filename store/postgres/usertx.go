package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/internal/column"
	"github.com/totpgate/totpgate/store/internal/usertx"
)

// userTx is usertx.Tx in one READ COMMITTED transaction. Each of its
// transactions locks the user's row with its first statement (Read's
// SELECT ... FOR NO KEY UPDATE, or the UPDATE of Activate or
// TouchActive) before any recovery_codes or trusted_devices row, as every
// transaction on a user does, so they cannot deadlock each other, and no
// device is added beside a revocation.
type userTx struct{ tx pgx.Tx }

// users runs each of its methods in one transaction.
func (s *Store) users() usertx.Users {
	return usertx.Users{Driver: driver, Run: s.inUserTx}
}

// inUserTx runs fn in one transaction on userTx.
func (s *Store) inUserTx(ctx context.Context, fn func(usertx.Tx) error) error {
	return inTx(ctx, s.pool, func(tx pgx.Tx) error { return fn(userTx{tx}) })
}

func (t userTx) Read(ctx context.Context, id string) (column.CounterRow, error) {
	return column.One(t.tx.QueryRow(ctx, `SELECT `+column.CounterColumns+` FROM users WHERE id = $1 FOR NO KEY UPDATE`, id), column.Counter)
}

func (t userTx) SpendCode(ctx context.Context, id string, code int64, now time.Time) (bool, error) {
	tag, err := t.tx.Exec(ctx, `UPDATE recovery_codes SET used_at = $1 WHERE id = $2 AND user_id = $3 AND used_at IS NULL`,
		column.Millis(now), code, id)
	return tag.RowsAffected() == 1, err
}

// Accept leaves last_step as it is for a recovery code (GREATEST with 0).
func (t userTx) Accept(ctx context.Context, id string, step int64, now time.Time) error {
	_, err := t.tx.Exec(ctx, `
UPDATE users SET last_step = GREATEST(last_step, @step), failures = 0, failure_window_start = 0,
	last_used_at = @now, updated_at = @now
WHERE id = @id`, pgx.StrictNamedArgs{"step": step, "now": column.Millis(now), "id": id})
	return err
}

func (t userTx) Fail(ctx context.Context, id string, c store.Counter) error {
	_, err := t.tx.Exec(ctx, `UPDATE users SET failures = $1, failure_window_start = $2, locked_until = $3 WHERE id = $4`,
		c.Failures, column.Millis(c.WindowStart), column.Millis(c.LockedUntil), id)
	return err
}

// Activate is the conditional UPDATE that locks the user's row: of
// concurrent confirmations the first wins; the others wait for its
// commit, find the row active and change nothing.
func (t userTx) Activate(ctx context.Context, id, ciphertext string, step int64, now time.Time) (bool, error) {
	query, args := column.ActivatePending(id, ciphertext, step, now)
	tag, err := t.tx.Exec(ctx, query, pgx.StrictNamedArgs(args))
	return tag.RowsAffected() > 0, err
}

// TouchActive locks the user's row, so concurrent replacements of the
// recovery codes run one after the other and leave one whole set.
func (t userTx) TouchActive(ctx context.Context, id string, now time.Time) (bool, error) {
	tag, err := t.tx.Exec(ctx, `UPDATE users SET updated_at = $1 WHERE id = $2 AND state = 'active'`, column.Millis(now), id)
	return tag.RowsAffected() > 0, err
}

// ReplaceCodes inserts the codes in one statement, their ids drawn in the
// order of hashes, as one INSERT per code would.
func (t userTx) ReplaceCodes(ctx context.Context, id string, hashes [][]byte, now time.Time) error {
	if _, err := t.tx.Exec(ctx, `DELETE FROM recovery_codes WHERE user_id = $1`, id); err != nil {
		return err
	}
	if len(hashes) == 0 {
		return nil
	}
	hs := make([][]byte, len(hashes))
	for i, h := range hashes {
		hs[i] = column.Bytes(h)
	}
	_, err := t.tx.Exec(ctx, `
INSERT INTO recovery_codes (user_id, hash, created_at)
SELECT $1, c.hash, $2 FROM unnest($3::bytea[]) WITH ORDINALITY AS c(hash, n) ORDER BY c.n`,
		id, column.Millis(now), hs)
	return err
}

func (t userTx) RevokeDevices(ctx context.Context, id string) (int, error) {
	tag, err := t.tx.Exec(ctx, `DELETE FROM trusted_devices WHERE user_id = $1`, id)
	return int(tag.RowsAffected()), err
}
