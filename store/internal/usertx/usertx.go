// Package usertx holds the writes on one user that take several
// statements, which both drivers run inside one transaction holding the
// user's row: settling a second-factor attempt (Settle: the decision is
// store.Counter's lockout rules, a time step only when newer than the
// last accepted one, a recovery code spent once), confirming an
// enrollment and replacing the recovery codes (Users). Each is the
// decision and the order of its writes, over the driver's own statements
// (Tx); the driver keeps its SQL and how it locks, batches and commits.
package usertx

import (
	"context"
	"time"

	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/internal/column"
	"github.com/totpgate/totpgate/store/internal/outcome"
)

// Tx is one driver's statements on a user, inside its transaction.
type Tx interface {
	// Read reads what settling an attempt needs of the user's row;
	// store.ErrNotFound when there is none.
	Read(ctx context.Context, id string) (column.CounterRow, error)
	// SpendCode marks the user's recovery code used at now, when it is
	// still unused, and reports whether it did.
	SpendCode(ctx context.Context, id string, code int64, now time.Time) (bool, error)
	// Accept records step as the last accepted one unless that is newer
	// (a recovery code's step 0 leaves it), clears the failure count and
	// sets last_used_at and updated_at to now.
	Accept(ctx context.Context, id string, step int64, now time.Time) error
	// Fail stores the failure counter c.
	Fail(ctx context.Context, id string, c store.Counter) error
	// Activate makes the user's pending enrollment active when it still
	// holds ciphertext and has not expired at now (column.ActivatePending)
	// and reports whether it did.
	Activate(ctx context.Context, id, ciphertext string, step int64, now time.Time) (bool, error)
	// TouchActive sets updated_at of an active user's row to now and
	// reports whether there was one.
	TouchActive(ctx context.Context, id string, now time.Time) (bool, error)
	// ReplaceCodes replaces every recovery code of the user by hashes,
	// created at now, with ids drawn in the order of hashes.
	ReplaceCodes(ctx context.Context, id string, hashes [][]byte, now time.Time) error
	// RevokeDevices deletes every trusted device of the user and returns
	// how many went.
	RevokeDevices(ctx context.Context, id string) (int, error)
}

// Users is a driver's store as the methods here run on it: Run runs fn
// in one transaction on the driver's statements (Tx), committing when fn
// returns nil and handing back the error of fn as it is; Driver names the
// store in the errors the methods answer (outcome.Driver.Err).
type Users struct {
	Driver outcome.Driver
	Run    func(ctx context.Context, fn func(Tx) error) error
}

// Settle settles one attempt of user id with match m at now under l
// through tx: refused (Allowed false, LockedUntil when to try again),
// and then nothing is written; accepted (the step recorded or the code
// spent, the failure count cleared); or counted as a failure, and a
// failure that starts a lock also revokes the user's trusted devices.
// now is taken at whole milliseconds, as stored, so the rules compare
// what SQL would. On an error the Settled is zero and the caller's
// transaction must not commit.
func Settle(ctx context.Context, tx Tx, id string, m store.Match, now time.Time, l store.Limits) (store.Settled, error) {
	now = column.Time(column.Millis(now))
	row, err := tx.Read(ctx, id)
	if err != nil {
		return store.Settled{}, err
	}
	if ok, until := row.Counter.Admit(now, l); !ok {
		return store.Settled{LockedUntil: until}, nil
	}
	active := row.State == store.StateActive
	accepted := active && m.Step > row.LastStep
	if active && !accepted && m.RecoveryCodeID > 0 {
		if accepted, err = tx.SpendCode(ctx, id, m.RecoveryCodeID, now); err != nil {
			return store.Settled{}, err
		}
	}
	if accepted {
		if err := tx.Accept(ctx, id, m.Step, now); err != nil {
			return store.Settled{}, err
		}
		return store.Settled{Allowed: true, Accepted: true}, nil
	}
	c, res := row.Counter.Fail(now, l, m.Step > 0)
	if err := tx.Fail(ctx, id, c); err != nil {
		return store.Settled{}, err
	}
	if res.LockStarted {
		// The lock ends every trusted device of the user, in this
		// transaction.
		if res.DevicesRevoked, err = tx.RevokeDevices(ctx, id); err != nil {
			return store.Settled{}, err
		}
	}
	return res, nil
}

// Confirm is ConfirmEnrollment: the pending enrollment of user id that
// still holds ciphertext becomes active at now, with step as its last
// accepted one, and recoveryHashes its recovery codes, in one
// transaction. store.ErrConflict when there is no such enrollment (not
// pending, another secret, expired, no row).
func (u Users) Confirm(ctx context.Context, id, ciphertext string, step int64, recoveryHashes [][]byte, now time.Time) error {
	err := u.Run(ctx, func(tx Tx) error {
		ok, err := tx.Activate(ctx, id, ciphertext, step, now)
		if err != nil {
			return err
		}
		if !ok {
			return store.ErrConflict
		}
		return tx.ReplaceCodes(ctx, id, recoveryHashes, now)
	})
	return u.Driver.Err("confirm enrollment", err)
}

// ReplaceRecoveryCodes replaces every recovery code of the active user id
// by hashes and revokes the user's trusted devices, in one transaction,
// and returns how many devices went. store.ErrConflict when the user is
// not active (or has no row).
func (u Users) ReplaceRecoveryCodes(ctx context.Context, id string, hashes [][]byte, now time.Time) (int, error) {
	var devices int
	err := u.Run(ctx, func(tx Tx) error {
		ok, err := tx.TouchActive(ctx, id, now)
		if err != nil {
			return err
		}
		if !ok {
			return store.ErrConflict
		}
		if err := tx.ReplaceCodes(ctx, id, hashes, now); err != nil {
			return err
		}
		devices, err = tx.RevokeDevices(ctx, id)
		return err
	})
	return outcome.Of(u.Driver, "replace recovery codes", devices, err)
}
