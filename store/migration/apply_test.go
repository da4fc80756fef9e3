package migration

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeDB is a schema_migrations table and the SQL run on it; a
// migration whose SQL is "fail" fails.
type fakeDB struct {
	applied []int
	ran     []string
	commits int
}

type fakeTx struct{ db *fakeDB }

func (t fakeTx) Applied(_ context.Context, version int) (int, bool, error) {
	return slices.Max(append([]int{0}, t.db.applied...)), slices.Contains(t.db.applied, version), nil
}

func (t fakeTx) Exec(_ context.Context, sql string) error {
	if sql == "fail" {
		return errors.New("syntax error")
	}
	t.db.ran = append(t.db.ran, sql)
	return nil
}

func (t fakeTx) Record(_ context.Context, version int, _ time.Time) error {
	t.db.applied = append(t.db.applied, version)
	return nil
}

var errTooNew = errors.New("too new")

func (db *fakeDB) applier() Applier {
	return Applier{Driver: "fake", TooNew: errTooNew, Run: func(_ context.Context, fn func(Tx) error) error {
		// Roll back: undo what fn did when it fails.
		before := *db
		before.applied, before.ran = slices.Clone(db.applied), slices.Clone(db.ran)
		if err := fn(fakeTx{db}); err != nil {
			*db = before
			return err
		}
		db.commits++
		return nil
	}}
}

func TestApply(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	v1 := []Migration{{1, "0001_a.sql", "A"}}
	v2 := append(slices.Clone(v1), Migration{2, "0002_b.sql", "B"})
	db := &fakeDB{}
	if err := db.applier().Apply(ctx, v1); err != nil {
		t.Fatal(err)
	}
	if err := db.applier().Apply(ctx, v2); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(db.ran, []string{"A", "B"}) || !slices.Equal(db.applied, []int{1, 2}) {
		t.Errorf("ran %v, applied %v; want each migration once, in order", db.ran, db.applied)
	}
	err := db.applier().Apply(ctx, v1)
	if !errors.Is(err, errTooNew) || !strings.Contains(err.Error(), "version 2") || !strings.Contains(err.Error(), "up to 1") || strings.HasPrefix(err.Error(), "fake") {
		t.Errorf("Apply(older migrations) = %v, want the TooNew error naming both versions, unwrapped", err)
	}
	broken := append(slices.Clone(v2), Migration{3, "0003_c.sql", "fail"})
	err = db.applier().Apply(ctx, broken)
	if err == nil || !strings.HasPrefix(err.Error(), "fake: migrate: 0003_c.sql: ") {
		t.Errorf("Apply(a failing migration) = %v, want it wrapped and named", err)
	}
	if !slices.Equal(db.applied, []int{1, 2}) {
		t.Errorf("applied %v after the failure, want 1 and 2 only", db.applied)
	}
}
