package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/migration"
)

// Rows are the rows of a query, as *sql.Rows and pgx.Rows both read.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// DB is a driver's database of the test's own, looked at and changed
// outside the store, for the schema and migration tests.
type DB struct {
	// Query runs a query and returns its rows, closed at the end of t at
	// the latest; an error of the query fails t, or comes back from
	// rows.Err.
	Query func(t *testing.T, query string, args ...any) Rows
	// Exec runs a statement; an error fails t.
	Exec func(t *testing.T, query string, args ...any)
	// TableQuery counts the tables of the store's schema named by its one
	// parameter; IndexQuery the indexes.
	TableQuery, IndexQuery string
	// ErrSchemaTooNew is the driver's refusal of a newer database.
	ErrSchemaTooNew error
}

// Int runs a query that answers one integer (SELECT COUNT(*) ...).
func (d DB) Int(t *testing.T, query string, args ...any) int {
	t.Helper()
	rows := d.Query(t, query, args...)
	var n, got int
	for rows.Next() {
		if err := rows.Scan(&n); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		got++
	}
	if err := rows.Err(); err != nil || got != 1 {
		t.Fatalf("%s: %d rows, %v; want one", query, got, err)
	}
	return n
}

// TableExists reports whether the store's schema has the table.
func (d DB) TableExists(t *testing.T, table string) bool {
	t.Helper()
	return d.Int(t, d.TableQuery, table) == 1
}

// Applied is one row of schema_migrations.
type Applied struct {
	Version   int
	AppliedAt int64 // unix milliseconds
}

// Applied reads schema_migrations in version order.
func (d DB) Applied(t *testing.T) []Applied {
	t.Helper()
	rows := d.Query(t, `SELECT version, applied_at FROM schema_migrations ORDER BY version`)
	var out []Applied
	for rows.Next() {
		var m Applied
		if err := rows.Scan(&m.Version, &m.AppliedAt); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// Schema is a driver's database of the test's own, empty at first, for
// the schema tests (RunSchema).
type Schema struct {
	DB
	// Open opens the store on the database, migrating it: every call opens
	// the same database. The caller closes the store.
	Open func(ctx context.Context) (store.Store, error)
	// Migrations is how many migrations the driver embeds.
	Migrations int
	// Migrate is the driver's migrate function, run on the database
	// without the store, with the test's own migrations.
	Migrate func(ctx context.Context, ms []migration.Migration) error
}

// RunSchema runs the schema tests, each on a fresh database from fresh:
// what Open's migrations leave, that opening again applies nothing again,
// that a database migrated by a newer binary is refused, and how the
// driver's migrate function applies migrations (Migrate).
func RunSchema(t *testing.T, fresh func(t *testing.T) Schema) {
	for name, test := range map[string]func(*testing.T, Schema){
		"Fresh":                    schemaFresh,
		"Reopen":                   schemaReopen,
		"TooNew":                   schemaTooNew,
		"Migrate/Stepwise":         migrateStepwise,
		"Migrate/FailureRollsBack": migrationFailureRollsBack,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			test(t, fresh(t))
		})
	}
}

func mustOpen(t *testing.T, sc Schema) store.Store {
	t.Helper()
	s, err := sc.Open(t.Context())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// schemaFresh: every migration is applied once, in order, with its time,
// and the tables and indexes are there.
func schemaFresh(t *testing.T, sc Schema) {
	mustOpen(t, sc).Close()
	got := sc.Applied(t)
	if len(got) != sc.Migrations {
		t.Fatalf("applied %d migrations, want %d", len(got), sc.Migrations)
	}
	for i, m := range got {
		if m.Version != i+1 || m.AppliedAt == 0 {
			t.Errorf("schema_migrations row %d = %+v", i, m)
		}
	}
	for _, table := range []string{"users", "recovery_codes", "challenges", "settings", "jobs", "trusted_devices", "schema_migrations"} {
		if !sc.TableExists(t, table) {
			t.Errorf("table %s missing", table)
		}
	}
	for _, index := range []string{"recovery_codes_user", "challenges_expires_at", "trusted_devices_user", "trusted_devices_expires_at"} {
		if sc.Int(t, sc.IndexQuery, index) != 1 {
			t.Errorf("index %s missing", index)
		}
	}
	// Dropped: no query used it, and every rewrapped row paid for it.
	if sc.Int(t, sc.IndexQuery, "users_key_version") != 0 {
		t.Error("index users_key_version is still there")
	}
}

// schemaReopen: opening a migrated database again applies nothing again.
func schemaReopen(t *testing.T, sc Schema) {
	mustOpen(t, sc).Close()
	before := sc.Applied(t)
	time.Sleep(5 * time.Millisecond) // a re-applied migration would get a later applied_at
	for range 2 {
		mustOpen(t, sc).Close()
		if after := sc.Applied(t); !reflect.DeepEqual(after, before) {
			t.Errorf("schema_migrations changed on reopen: %v -> %v", before, after)
		}
	}
}

// schemaTooNew: a database a newer binary migrated is refused, with an
// error naming both versions.
func schemaTooNew(t *testing.T, sc Schema) {
	mustOpen(t, sc).Close()
	newer := sc.Migrations + 1
	sc.Exec(t, fmt.Sprintf(`INSERT INTO schema_migrations (version, applied_at) VALUES (%d, 1)`, newer))
	s, err := sc.Open(t.Context())
	if err == nil {
		s.Close()
		t.Fatal("Open of a newer schema succeeded")
	}
	if !errors.Is(err, sc.ErrSchemaTooNew) {
		t.Fatalf("Open: err = %v, want %v", err, sc.ErrSchemaTooNew)
	}
	if msg := err.Error(); !strings.Contains(msg, strconv.Itoa(newer)) || !strings.Contains(msg, strconv.Itoa(sc.Migrations)) {
		t.Errorf("error %q does not name both versions", msg)
	}
}
