package column

import (
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/totpgate/totpgate/store"
)

// fakeRows are rows of values as a driver hands them to a sql.Scanner
// (int64 for integers, []byte, string), scanned the way database/sql
// does for the destinations this package uses.
type fakeRows struct {
	rows [][]any
	i    int
	err  error // of the rows, after the last
}

func (r *fakeRows) Next() bool { r.i++; return r.i <= len(r.rows) }
func (r *fakeRows) Err() error { return r.err }

func (r *fakeRows) Scan(dest ...any) error {
	if r.i < 1 || r.i > len(r.rows) {
		return sql.ErrNoRows
	}
	row := r.rows[r.i-1]
	if len(row) != len(dest) {
		return fmt.Errorf("%d columns, %d destinations", len(row), len(dest))
	}
	for i, d := range dest {
		if sc, ok := d.(sql.Scanner); ok {
			if err := sc.Scan(row[i]); err != nil {
				return err
			}
			continue
		}
		reflect.ValueOf(d).Elem().Set(reflect.ValueOf(row[i]).Convert(reflect.TypeOf(d).Elem()))
	}
	return nil
}

// row is a fake one-row query (QueryRow): its Scan scans the first row.
func row(values ...any) Row {
	r := &fakeRows{rows: [][]any{values}}
	r.Next()
	return r
}

func TestScanDestinationsDecode(t *testing.T) {
	t.Parallel()
	at := time.Date(2031, time.March, 4, 5, 6, 7, 0, time.UTC)
	ms := at.UnixMilli()
	c, err := One(row([]byte("h"), "alice", []byte("s"), int64(1), int64(0), int64(2), ms, int64(0), []byte(nil)), Challenge)
	if err != nil {
		t.Fatal(err)
	}
	want := store.Challenge{IDHash: []byte("h"), UserID: "alice", Sealed: []byte("s"), Enroll: true, Attempts: 2, CreatedAt: at}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Challenge = %+v, want %+v", c, want)
	}
	r, err := One(row("alice", "vault:v2:x", int64(2), int64(store.BindingUser)), SecretRef)
	if err != nil || r != (store.SecretRef{UserID: "alice", Ciphertext: "vault:v2:x", KeyVersion: 2, Binding: store.BindingUser}) {
		t.Errorf("SecretRef = %+v, %v", r, err)
	}
	cr, err := One(row("active", int64(9), int64(3), ms, int64(0)), Counter)
	if err != nil || cr.State != store.StateActive || cr.LastStep != 9 || cr.Counter != (store.Counter{Failures: 3, WindowStart: at}) {
		t.Errorf("Counter = %+v, %v", cr, err)
	}
	// A column of another kind than the destination decodes is an error,
	// not a zero value.
	if _, err := One(row([]byte("h"), "alice", []byte("s"), "yes", int64(0), int64(2), ms, ms, []byte(nil)), Challenge); err == nil {
		t.Error("a text flag scanned without an error")
	}
	if _, err := One(row("j", "o", "soon", []byte("x")), Job); err == nil {
		t.Error("a text time scanned without an error")
	}
}

func TestOne(t *testing.T) {
	t.Parallel()
	if _, err := One(&fakeRows{}, Value); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("One(no row) = %v, want store.ErrNotFound", err)
	}
	boom := errors.New("boom")
	if v, err := One(errRow{boom}, Value); !errors.Is(err, boom) || v != nil {
		t.Errorf("One(failing row) = %q, %v", v, err)
	}
	if v, err := One(row([]byte("x")), Value); err != nil || string(v) != "x" {
		t.Errorf("One = %q, %v", v, err)
	}
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

func TestCollectAndCounts(t *testing.T) {
	t.Parallel()
	codes, err := Collect(&fakeRows{rows: [][]any{{int64(1), []byte("a")}, {int64(2), []byte("b")}}}, RecoveryCode)
	if err != nil || !reflect.DeepEqual(codes, []store.RecoveryCode{{ID: 1, Hash: []byte("a")}, {ID: 2, Hash: []byte("b")}}) {
		t.Errorf("Collect = %+v, %v", codes, err)
	}
	if none, err := Collect(&fakeRows{}, RecoveryCode); none != nil || err != nil {
		t.Errorf("Collect(no rows) = %+v, %v; want nil, nil", none, err)
	}
	boom := errors.New("boom")
	if got, err := Collect(&fakeRows{rows: [][]any{{int64(1), []byte("a")}}, err: boom}, RecoveryCode); !errors.Is(err, boom) || got != nil {
		t.Errorf("Collect(rows failing at the end) = %+v, %v", got, err)
	}
	if got, err := Collect(&fakeRows{rows: [][]any{{int64(1)}}}, RecoveryCode); err == nil || got != nil {
		t.Errorf("Collect(a row that does not scan) = %+v, %v", got, err)
	}

	counts, err := Counts(&fakeRows{rows: [][]any{{"vault", int64(1), int64(3)}, {"local", int64(2), int64(1)}}}, KeyRef)
	if err != nil || !reflect.DeepEqual(counts, map[store.KeyRef]int{{Backend: "vault", Version: 1}: 3, {Backend: "local", Version: 2}: 1}) {
		t.Errorf("Counts = %v, %v", counts, err)
	}
	if states, err := Counts(&fakeRows{}, State); err != nil || states == nil || len(states) != 0 {
		t.Errorf("Counts(no rows) = %#v, %v; want an empty map", states, err)
	}
	if _, err := Counts(&fakeRows{err: boom}, State); !errors.Is(err, boom) {
		t.Errorf("Counts(failing rows) = %v", err)
	}
}
