package column

import (
	"database/sql"
	"errors"

	"github.com/totpgate/totpgate/store"
)

// Row is one row of a query to scan: *sql.Row, *sql.Rows, pgx.Row and
// pgx.Rows all are.
type Row interface {
	Scan(dest ...any) error
}

// Rows are the rows of a query: *sql.Rows and pgx.Rows both are. Their
// Close differs (database/sql's answers an error, pgx's does not), so it
// is not here: whoever ran the query closes them.
type Rows interface {
	Row
	Next() bool
	Err() error
}

// One scans the only row of a query into a new T through dest.
// store.ErrNotFound when the query found no row (sql.ErrNoRows, which
// pgx.ErrNoRows matches too); any other error as it is. On an error the
// T is the zero value.
func One[T any](row Row, dest func(*T) []any) (T, error) {
	var v T
	if err := row.Scan(dest(&v)...); err != nil {
		var zero T
		if errors.Is(err, sql.ErrNoRows) {
			return zero, store.ErrNotFound
		}
		return zero, err
	}
	return v, nil
}

// Collect reads every row of rows, each into a new T through dest, in
// order. It returns nil when there is none, and the first error of a
// scan or of the rows; it does not close rows.
func Collect[T any](rows Rows, dest func(*T) []any) ([]T, error) {
	var out []T
	for rows.Next() {
		var v T
		if err := rows.Scan(dest(&v)...); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// Counts reads the rows of a count grouped by a key, each row the key's
// columns (scanned through key) and then the count, into a map.
func Counts[K comparable](rows Rows, key func(*K) []any) (map[K]int, error) {
	type count struct {
		k K
		n int
	}
	cs, err := Collect(rows, func(c *count) []any { return append(key(&c.k), &c.n) })
	if err != nil {
		return nil, err
	}
	out := make(map[K]int, len(cs))
	for _, c := range cs {
		out[c.k] = c.n
	}
	return out, nil
}
