package sqlite

import (
	"context"
	"database/sql"
	"time"

	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/internal/column"
	"github.com/totpgate/totpgate/store/internal/usertx"
)

// userTx is usertx.Tx in one write transaction: a settlement's
// statements are the ones prepared once on the write connection (see
// settle.go), the others are parsed per call.
type userTx struct {
	tx *sql.Tx
	st *settleStmts
}

// userTx is the user statements in tx.
func (s *Store) userTx(tx *sql.Tx) userTx { return userTx{tx, s.settle.stmts} }

// users runs each of its methods in one write transaction (BEGIN
// IMMEDIATE).
func (s *Store) users() usertx.Users {
	return usertx.Users{Driver: driver, Run: func(ctx context.Context, fn func(usertx.Tx) error) error {
		return inTx(ctx, s.w, func(tx *sql.Tx) error { return fn(s.userTx(tx)) })
	}}
}

// sqlDeleteUserDevices deletes every device of a user, inside the
// transaction of DeleteUser, ReplaceRecoveryCodes or a lockout.
const sqlDeleteUserDevices = `DELETE FROM trusted_devices WHERE user_id = ?`

func (t userTx) Read(ctx context.Context, id string) (column.CounterRow, error) {
	return column.One(t.tx.StmtContext(ctx, t.st.read).QueryRowContext(ctx, id), column.Counter)
}

func (t userTx) SpendCode(ctx context.Context, id string, code int64, now time.Time) (bool, error) {
	n, err := rowsChanged(t.tx.StmtContext(ctx, t.st.spend).ExecContext(ctx, column.Millis(now), code, id))
	return n == 1, err
}

func (t userTx) Accept(ctx context.Context, id string, step int64, now time.Time) error {
	_, err := t.tx.StmtContext(ctx, t.st.accept).ExecContext(ctx, sql.Named("step", step), sql.Named("now", column.Millis(now)), sql.Named("id", id))
	return err
}

func (t userTx) Fail(ctx context.Context, id string, c store.Counter) error {
	_, err := t.tx.StmtContext(ctx, t.st.fail).ExecContext(ctx, c.Failures, column.Millis(c.WindowStart), column.Millis(c.LockedUntil), id)
	return err
}

func (t userTx) Activate(ctx context.Context, id, ciphertext string, step int64, now time.Time) (bool, error) {
	query, args := column.ActivatePending(id, ciphertext, step, now)
	n, err := rowsChanged(t.tx.ExecContext(ctx, query, named(args)...))
	return n > 0, err
}

func (t userTx) TouchActive(ctx context.Context, id string, now time.Time) (bool, error) {
	n, err := rowsChanged(t.tx.ExecContext(ctx, `UPDATE users SET updated_at = ? WHERE id = ? AND state = 'active'`, column.Millis(now), id))
	return n > 0, err
}

// ReplaceCodes inserts the codes one statement each, in the order of
// hashes, which is the order their ids are drawn in.
func (t userTx) ReplaceCodes(ctx context.Context, id string, hashes [][]byte, now time.Time) error {
	if _, err := t.tx.ExecContext(ctx, `DELETE FROM recovery_codes WHERE user_id = ?`, id); err != nil {
		return err
	}
	if len(hashes) == 0 {
		return nil
	}
	stmt, err := t.tx.PrepareContext(ctx, `INSERT INTO recovery_codes (user_id, hash, created_at) VALUES (?, ?, ?)`)
	if err != nil {
		return err
	}
	defer stmt.Close()
	for _, h := range hashes {
		if _, err := stmt.ExecContext(ctx, id, column.Bytes(h), column.Millis(now)); err != nil {
			return err
		}
	}
	return nil
}

func (t userTx) RevokeDevices(ctx context.Context, id string) (int, error) {
	n, err := rowsChanged(t.tx.StmtContext(ctx, t.st.revokeDevices).ExecContext(ctx, id))
	return int(n), err
}
