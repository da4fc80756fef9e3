package storetest

import (
	"context"
	"sync"
	"testing"

	"github.com/totpgate/totpgate/store"
)

// Named is the Harness of a driver whose stores are opened by the name
// of their database (a file's path, a DSN): fresh makes a new, empty
// database for t and returns its name; open opens the store on a
// database by name. Named registers each store's Close with t.Cleanup,
// and Reopen closes a store and opens its database again by name. crash,
// optional (nil: no Harness.Crash), ends s as a crash would, without any
// graceful step of its Close, and returns the name of the database to
// open again (the same, or a copy of the files as the crash left them).
func Named(fresh func(t *testing.T) string, open func(ctx context.Context, name string) (store.Store, error), crash func(t *testing.T, s store.Store, name string) string) Harness {
	var names sync.Map // store.Store -> the name of its database
	openName := func(t *testing.T, name string) store.Store {
		t.Helper()
		s, err := open(t.Context(), name)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		names.Store(s, name)
		return s
	}
	nameOf := func(t *testing.T, s store.Store) string {
		t.Helper()
		name, ok := names.Load(s)
		if !ok {
			t.Fatal("storetest: a store Named did not open")
		}
		return name.(string)
	}
	h := Harness{
		Open: func(t *testing.T) store.Store { return openName(t, fresh(t)) },
		Reopen: func(t *testing.T, s store.Store) store.Store {
			name := nameOf(t, s)
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			return openName(t, name)
		},
	}
	if crash != nil {
		h.Crash = func(t *testing.T, s store.Store) store.Store { return openName(t, crash(t, s, nameOf(t, s))) }
	}
	return h
}
