// Package column is how both drivers read and write the rows of the
// store's tables: the Go values encoded as the columns hold them (times
// as unix milliseconds, bytes never NULL, flags as 0 and 1), the column
// lists whose SQL is the same in both dialects, the scan destinations of
// each row type (tables.go), and reading a query's rows into them
// (rows.go), so the SQLite and PostgreSQL stores read and write the same
// values with the same Go code and differ only in their SQL and database
// API.
package column

import (
	"database/sql"
	"fmt"
	"time"
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

// NullBytes binds an empty b as NULL, for a nullable column where NULL
// is "none" (a challenge's revoke).
func NullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// Flag encodes b as a 0/1 integer column; BoolOf decodes it.
func Flag(b bool) int16 {
	if b {
		return 1
	}
	return 0
}

// NowOr returns t, or the current time when t is zero: the bookkeeping
// updated_at of calls that take no now.
func NowOr(t time.Time) time.Time {
	if t.IsZero() {
		return time.Now()
	}
	return t
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

// BoolOf is a scan destination that decodes a 0/1 integer column into *b.
func BoolOf(b *bool) sql.Scanner { return boolDest{b} }

type boolDest struct{ b *bool }

func (d boolDest) Scan(v any) error {
	n, ok := v.(int64)
	if !ok {
		return fmt.Errorf("column: a flag column holds %T, want 0 or 1", v)
	}
	*d.b = n != 0
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
