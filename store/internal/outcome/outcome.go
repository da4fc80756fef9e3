// Package outcome is the Go logic of a store method's answer that both
// drivers share around their SQL: the arguments refused before any
// statement runs, and what the statements did turned into the answer (no
// row changed is store.ErrNotFound or store.ErrConflict, the store's
// sentinels stay bare, any other error is wrapped with the driver and the
// operation), so a caller sees the same answers from either store.
package outcome

import (
	"errors"
	"fmt"

	"github.com/totpgate/totpgate/store"
)

// Driver names a driver in its errors: "sqlite", "postgres".
type Driver string

// Err is the error a store method answers for err, what its statements
// (or a transaction of them) returned under the operation op: nil; one of
// the store's sentinels (store.ErrNotFound, store.ErrConflict,
// store.ErrDeviceReused) as it is; any other wrapped as
// "<driver>: <op>: <err>".
func (d Driver) Err(op string, err error) error {
	switch err {
	case nil, store.ErrNotFound, store.ErrConflict, store.ErrDeviceReused:
		return err
	}
	return fmt.Errorf("%s: %s: %w", d, op, err)
}

// Of is the answer v, err of a store method under the operation op: v
// and nil, or the zero value and d.Err(op, err).
func Of[T any](d Driver, op string, v T, err error) (T, error) {
	if err = d.Err(op, err); err != nil {
		var zero T
		return zero, err
	}
	return v, nil
}

// Changed is the answer of a statement that must change a row to have
// done anything, from the count of rows it changed and its error: err as
// it is, none (store.ErrNotFound, store.ErrConflict) when it changed no
// row, else nil.
func Changed(n int64, err error, none error) error {
	if err != nil {
		return err
	}
	if n == 0 {
		return none
	}
	return nil
}

// LeaseLost is UpdateJob's answer when the job's lease is no longer
// owner's: store.ErrConflict, naming the job.
func (d Driver) LeaseLost(job string) error {
	return fmt.Errorf("%s: update job %q: lease lost: %w", d, job, store.ErrConflict)
}

// Enrollment checks a user StartEnrollment is to store: its id may not be
// empty.
func Enrollment(u store.User) error {
	if u.ID == "" {
		return errors.New("empty user id")
	}
	return nil
}

// PageLimit checks the limit of a SecretsPage: it must be positive.
func PageLimit(limit int) error {
	if limit <= 0 {
		return errors.New("limit must be positive")
	}
	return nil
}
