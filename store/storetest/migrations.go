package storetest

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/totpgate/totpgate/store/migration"
)

func loadMigrations(t *testing.T, files fstest.MapFS) []migration.Migration {
	t.Helper()
	ms, err := migration.Load(files)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// migrateStepwise: each migration runs once, a later binary applies only
// what is new, and an older binary refuses a newer database.
func migrateStepwise(t *testing.T, d Schema) {
	ctx := t.Context()
	v1 := fstest.MapFS{"0001_one.sql": {Data: []byte("CREATE TABLE t1 (x INTEGER);\nINSERT INTO t1 VALUES (1);")}}
	v2 := fstest.MapFS{
		"0001_one.sql": v1["0001_one.sql"],
		"0002_two.sql": {Data: []byte("CREATE TABLE t2 (y INTEGER);\nINSERT INTO t2 SELECT x FROM t1;")},
	}
	if err := d.Migrate(ctx, loadMigrations(t, v1)); err != nil {
		t.Fatalf("migrate v1: %v", err)
	}
	// v1 creates t1 without IF NOT EXISTS: running it twice would fail.
	if err := d.Migrate(ctx, loadMigrations(t, v1)); err != nil {
		t.Fatalf("migrate v1 again: %v", err)
	}
	if err := d.Migrate(ctx, loadMigrations(t, v2)); err != nil {
		t.Fatalf("migrate v1 -> v2: %v", err)
	}
	if n := d.Int(t, `SELECT COUNT(*) FROM t1`); n != 1 {
		t.Errorf("t1 has %d rows, want 1: v1 ran more than once", n)
	}
	if !d.TableExists(t, "t2") {
		t.Errorf("v2 not applied")
	}
	if !appliedAre(t, d, 1, 2) {
		t.Errorf("schema_migrations does not hold exactly versions 1 and 2")
	}
	// A binary that knows only v1 refuses the v2 database.
	if err := d.Migrate(ctx, loadMigrations(t, v1)); !errors.Is(err, d.ErrSchemaTooNew) {
		t.Errorf("migrate with older migrations: err = %v, want %v", err, d.ErrSchemaTooNew)
	}
}

// migrationFailureRollsBack: a migration that fails leaves nothing of
// itself behind and keeps the ones before it.
func migrationFailureRollsBack(t *testing.T, d Schema) {
	ms := loadMigrations(t, fstest.MapFS{
		"0001_one.sql": {Data: []byte("CREATE TABLE t1 (x INTEGER);")},
		"0002_bad.sql": {Data: []byte("CREATE TABLE t2 (y INTEGER);\nINSERT INTO no_such_table VALUES (1);")},
	})
	err := d.Migrate(t.Context(), ms)
	if err == nil || !strings.Contains(err.Error(), "0002_bad.sql") {
		t.Fatalf("migrate with a broken migration: err = %v, want an error naming 0002_bad.sql", err)
	}
	if d.TableExists(t, "t2") {
		t.Errorf("half of the broken migration was applied")
	}
	if !d.TableExists(t, "t1") {
		t.Errorf("the good migration before it was not kept")
	}
	if !appliedAre(t, d, 1) {
		t.Errorf("schema_migrations does not hold exactly version 1")
	}
}

// appliedAre reports whether schema_migrations holds exactly versions.
func appliedAre(t *testing.T, d Schema, versions ...int) bool {
	in := make([]string, len(versions))
	for i, v := range versions {
		in[i] = strconv.Itoa(v)
	}
	return d.Int(t, `SELECT COUNT(*) FROM schema_migrations`) == len(versions) &&
		d.Int(t, `SELECT COUNT(*) FROM schema_migrations WHERE version IN (`+strings.Join(in, ",")+`)`) == len(versions)
}
