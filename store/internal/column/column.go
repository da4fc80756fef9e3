// Package column encodes the Go values of store rows as both drivers'
// columns hold them (times as unix milliseconds, bytes never NULL), so
// the SQLite and PostgreSQL stores read and write the same values.
package column

import (
	"database/sql"
	"fmt"
	"time"

	"github.com/totpgate/totpgate/store"
)

// Millis encodes t as unix milliseconds; the zero time is 0.
func Millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// Time decodes Millis: 0 is the zero time, anything else a UTC time.
func Time(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

// Bytes keeps a nil slice from binding as NULL.
func Bytes(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// NowOr returns t, or the current time when t is zero: the bookkeeping
// updated_at of calls that take no now.
func NowOr(t time.Time) time.Time {
	if t.IsZero() {
		return time.Now()
	}
	return t
}

// UserColumns selects a store.User from the users table, in the order
// User scans them: the same in both drivers.
const UserColumns = `id, state, ciphertext, key_version, binding, algorithm, digits, period, skew,
	last_step, failures, failure_window_start, locked_until, pending_expires_at,
	confirmed_at, last_used_at, updated_at,
	(SELECT COUNT(*) FROM recovery_codes r WHERE r.user_id = users.id AND r.used_at IS NULL)`

// User is where a row of UserColumns is scanned into u.
func User(u *store.User) []any {
	return []any{
		&u.ID, (*string)(&u.State), &u.Ciphertext, &u.KeyVersion, integer[store.Binding]{&u.Binding},
		&u.Params.Algorithm, &u.Params.Digits, &u.Params.Period, &u.Params.Skew,
		&u.LastStep, &u.Failures, TimeOf(&u.FailureWindowStart), TimeOf(&u.LockedUntil), TimeOf(&u.PendingExpiresAt),
		TimeOf(&u.ConfirmedAt), TimeOf(&u.LastUsedAt), TimeOf(&u.UpdatedAt), &u.RecoveryRemaining,
	}
}

// TimeOf is a scan destination that decodes a Millis column into *t.
func TimeOf(t *time.Time) sql.Scanner { return timeDest{t} }

type timeDest struct{ t *time.Time }

func (d timeDest) Scan(v any) error {
	n, ok := v.(int64)
	if !ok {
		return fmt.Errorf("column: a time column holds %T, want unix milliseconds", v)
	}
	*d.t = Time(n)
	return nil
}

// integer scans an integer column (of any width) into a named int type.
type integer[T ~int] struct{ p *T }

func (d integer[T]) Scan(v any) error {
	n, ok := v.(int64)
	if !ok {
		return fmt.Errorf("column: an integer column holds %T", v)
	}
	*d.p = T(n)
	return nil
}
