package sqlite

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/migration"
	"github.com/totpgate/totpgate/store/storetest"
)

// openTemp opens a fresh store in a new file under t.TempDir.
func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "totpgate.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, storetest.Named(
		func(t *testing.T) string { return filepath.Join(t.TempDir(), "totpgate.db") },
		func(ctx context.Context, path string) (store.Store, error) { return Open(ctx, path) },
		func(t *testing.T, _ store.Store, path string) string { return crashCopy(t, path) },
	))
}

// crashCopy copies the database file and its WAL, while the store that
// writes them is still open, into a new directory and returns the copy's
// path: the files exactly as a process killed at this moment leaves them,
// with no checkpoint and no shared-memory index (SQLite rebuilds it from
// the WAL, as after a crash). It shows that nothing an answer depended on
// lived only in the process; a power cut (the fsync) it cannot show, and
// synchronous=FULL is what covers that.
func crashCopy(t *testing.T, path string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "crashed.db")
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(path + suffix)
		if err != nil {
			t.Fatalf("crash copy: %v", err)
		}
		if err := os.WriteFile(dst+suffix, b, 0o600); err != nil {
			t.Fatalf("crash copy: %v", err)
		}
	}
	return dst
}

// rawDB opens path without the Store, for inspecting and tampering.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// outside is db as the schema and migration tests see it.
func outside(db *sql.DB) storetest.DB {
	return storetest.DB{
		Query: func(t *testing.T, query string, args ...any) storetest.Rows {
			rows, err := db.QueryContext(t.Context(), query, args...)
			if err != nil {
				t.Fatalf("%s: %v", query, err)
			}
			t.Cleanup(func() { rows.Close() })
			return rows
		},
		Exec: func(t *testing.T, query string, args ...any) {
			if _, err := db.ExecContext(t.Context(), query, args...); err != nil {
				t.Fatalf("%s: %v", query, err)
			}
		},
		TableQuery:      `SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = ?`,
		IndexQuery:      `SELECT COUNT(*) FROM sqlite_schema WHERE type = 'index' AND name = ?`,
		ErrSchemaTooNew: ErrSchemaTooNew,
	}
}

func TestSchema(t *testing.T) {
	t.Parallel()
	storetest.RunSchema(t, func(t *testing.T) storetest.Schema {
		path := filepath.Join(t.TempDir(), "totpgate.db")
		db := rawDB(t, path)
		db.SetMaxOpenConns(1) // migrate, as the store's one writer
		return storetest.Schema{
			DB:         outside(db),
			Open:       func(ctx context.Context) (store.Store, error) { return Open(ctx, path) },
			Migrations: len(migrations),
			Migrate:    func(ctx context.Context, ms []migration.Migration) error { return migrate(ctx, db, ms) },
		}
	})
}

func TestPragmas(t *testing.T) {
	t.Parallel()
	s, _ := openTemp(t)
	ctx := t.Context()
	for _, db := range []struct {
		name string
		db   *sql.DB
		want map[string]string
	}{
		{"writer", s.w, map[string]string{"journal_mode": "wal", "foreign_keys": "1", "synchronous": "2", "busy_timeout": "5000", "query_only": "0"}},
		{"reader", s.r, map[string]string{"journal_mode": "wal", "foreign_keys": "1", "busy_timeout": "5000", "query_only": "1"}},
	} {
		for pragma, want := range db.want {
			var got string
			if err := db.db.QueryRowContext(ctx, "PRAGMA "+pragma).Scan(&got); err != nil {
				t.Fatalf("%s: PRAGMA %s: %v", db.name, pragma, err)
			}
			if got != want {
				t.Errorf("%s: PRAGMA %s = %s, want %s", db.name, pragma, got, want)
			}
		}
	}
	// Readers cannot write, even by mistake.
	if _, err := s.r.ExecContext(ctx, `INSERT INTO settings (key, value) VALUES ('x', x'00')`); err == nil {
		t.Errorf("write through the read pool succeeded")
	}
	// NORMAL on request.
	path := filepath.Join(t.TempDir(), "normal.db")
	n, err := Open(ctx, path, WithSynchronous("normal"), WithBusyTimeout(time.Second), WithReadConns(2))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	var syncMode, busy string
	if err := n.w.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&syncMode); err != nil || syncMode != "1" {
		t.Errorf("WithSynchronous(normal): synchronous = %s, %v; want 1", syncMode, err)
	}
	if err := n.w.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&busy); err != nil || busy != "1000" {
		t.Errorf("WithBusyTimeout(1s): busy_timeout = %s, %v; want 1000", busy, err)
	}
}

func TestFileMode(t *testing.T) {
	t.Parallel()
	s, path := openTemp(t)
	// A write makes sure -wal and -shm exist.
	if _, err := s.PutSettingIfAbsent(t.Context(), "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("stat %s: %v", filepath.Base(p), err)
			continue
		}
		if mode := fi.Mode().Perm(); mode != 0o600 {
			t.Errorf("%s has mode %v, want 0600", filepath.Base(p), mode)
		}
	}
}

func TestOpenRejects(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		path string
		opts []Option
	}{
		{"", nil},
		{":memory:", nil},
		{"file:x.db?mode=memory", nil},
		{filepath.Join(dir, "missing-dir", "x.db"), nil},
		{filepath.Join(dir, "a.db"), []Option{WithSynchronous("OFF")}},
		{filepath.Join(dir, "b.db"), []Option{WithReadConns(0)}},
	} {
		if s, err := Open(t.Context(), tc.path, tc.opts...); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded, want an error", tc.path)
		}
	}
}

func TestOpenOddPath(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "dir with space?#%")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "db?x=1#y")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open(%q): %v", path, err)
	}
	defer s.Close()
	if _, err := s.PutSettingIfAbsent(t.Context(), "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database not at the given path: %v", err)
	}
}

// ---- crash safety ----

const (
	crashChildEnv = "TOTPGATE_SQLITE_CRASH_CHILD"
	crashPathEnv  = "TOTPGATE_SQLITE_CRASH_PATH"
	crashCodes    = 10
)

func crashHashes(i int) [][]byte {
	hs := make([][]byte, crashCodes)
	for j := range hs {
		hs[j] = fmt.Appendf(nil, "set-%06d-code-%02d", i, j)
	}
	return hs
}

// crashChild enrolls alice, then writes in a loop until it is killed. After
// each committed iteration i it prints i; everything printed is committed.
func crashChild() error {
	ctx := context.Background()
	s, err := Open(ctx, os.Getenv(crashPathEnv))
	if err != nil {
		return err
	}
	now := time.Now()
	u := store.User{
		ID: "alice", Ciphertext: "vault:v1:alice", KeyVersion: 1,
		Params:           store.TOTPParams{Algorithm: "SHA1", Digits: 6, Period: 30, Skew: 1},
		PendingExpiresAt: now.Add(time.Hour), UpdatedAt: now,
	}
	if err := s.StartEnrollment(ctx, u); err != nil {
		return err
	}
	if err := s.ConfirmEnrollment(ctx, "alice", u.Ciphertext, 1000, crashHashes(0), now); err != nil {
		return err
	}
	for _, id := range []string{"bob", "carol"} {
		if err := s.StartEnrollment(ctx, store.User{ID: id, Ciphertext: "vault:v1:" + id, KeyVersion: 1, Params: u.Params, PendingExpiresAt: now.Add(time.Hour)}); err != nil {
			return err
		}
		if err := s.ConfirmEnrollment(ctx, id, "vault:v1:"+id, 1, nil, now); err != nil {
			return err
		}
	}
	fmt.Println("ready")
	never := store.Limits{MaxFailures: 1 << 30, Window: 1000 * time.Hour, LockFor: time.Hour}
	for i := 1; ; i++ {
		// Three attempts at once, so they may share a commit.
		var wg sync.WaitGroup
		errs := make([]error, 3)
		for g, id := range []string{"alice", "bob", "carol"} {
			wg.Go(func() {
				m := store.Match{}
				if id == "alice" {
					m.Step = 1000 + int64(i)
				}
				r, err := s.SettleAttempt(ctx, id, m, now, never)
				if err == nil && r.Accepted != (id == "alice") {
					err = fmt.Errorf("%s: %+v", id, r)
				}
				errs[g] = err
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("settle %d: %w", i, err)
		}
		if _, err := s.ReplaceRecoveryCodes(ctx, "alice", crashHashes(i), now); err != nil {
			return err
		}
		if _, err := s.PutSettingIfAbsent(ctx, fmt.Sprintf("k%06d", i), []byte(strconv.Itoa(i))); err != nil {
			return err
		}
		id := fmt.Sprintf("user-%06d", i)
		if err := s.StartEnrollment(ctx, store.User{ID: id, Ciphertext: "vault:v1:" + id, KeyVersion: 1, Params: u.Params, PendingExpiresAt: now.Add(time.Hour)}); err != nil {
			return err
		}
		fmt.Println(i)
	}
}

func TestCrashSafety(t *testing.T) {
	if os.Getenv(crashChildEnv) == "1" {
		if err := crashChild(); err != nil {
			fmt.Fprintln(os.Stderr, "crash child:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	t.Parallel()
	path := filepath.Join(t.TempDir(), "crash.db")
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashSafety$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"=1", crashPathEnv+"="+path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Read acknowledgements until enough iterations are committed, then kill
	// the child in the middle of its next writes.
	sc := bufio.NewScanner(out)
	ready, last := false, 0
	for sc.Scan() {
		line := sc.Text()
		if line == "ready" {
			ready = true
			continue
		}
		if n, err := strconv.Atoi(line); err == nil {
			last = n
			if last >= 40 {
				break
			}
		}
	}
	if !ready || last < 40 {
		werr := cmd.Wait()
		t.Fatalf("child stopped early (ready %v, last %d): %v\n%s", ready, last, werr, stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill: %v", err)
	}
	// Collect whatever else the child acknowledged before dying.
	for sc.Scan() {
		if n, err := strconv.Atoi(sc.Text()); err == nil {
			last = n
		}
	}
	werr := cmd.Wait()
	var exitErr *exec.ExitError
	if !errors.As(werr, &exitErr) || exitErr.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die of SIGKILL: %v\n%s", werr, stderr.String())
	}

	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("reopen after crash: %v", err)
	}
	defer s.Close()
	var integrity string
	if err := s.r.QueryRowContext(t.Context(), `PRAGMA integrity_check`).Scan(&integrity); err != nil || integrity != "ok" {
		t.Fatalf("integrity_check = %q, %v", integrity, err)
	}
	rows, err := s.r.QueryContext(t.Context(), `PRAGMA foreign_key_check`)
	if err != nil {
		t.Fatal(err)
	}
	if rows.Next() {
		t.Errorf("foreign_key_check reports violations")
	}
	rows.Close()

	u, err := s.GetUser(t.Context(), "alice")
	if err != nil {
		t.Fatalf("GetUser(alice) after crash: %v", err)
	}
	if u.State != store.StateActive || u.LastStep < 1000+int64(last) {
		t.Errorf("alice after crash: State %s LastStep %d, want active and >= %d", u.State, u.LastStep, 1000+last)
	}
	// Every failure acknowledged is still counted.
	for _, id := range []string{"bob", "carol"} {
		if got, err := s.GetUser(t.Context(), id); err != nil || got.Failures < last {
			t.Errorf("%s after crash: Failures %d (%v), want >= %d", id, got.Failures, err, last)
		}
	}
	// The recovery codes are one whole set, never a mix or a partial one.
	cs, err := s.RecoveryCodes(t.Context(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != crashCodes || u.RecoveryRemaining != crashCodes {
		t.Fatalf("alice has %d recovery codes (RecoveryRemaining %d), want %d", len(cs), u.RecoveryRemaining, crashCodes)
	}
	set := string(cs[0].Hash[:len("set-000000")])
	setN, _ := strconv.Atoi(strings.TrimPrefix(set, "set-"))
	if setN < last {
		t.Errorf("recovery code set %d is older than the last acknowledged %d", setN, last)
	}
	for _, c := range cs {
		if !strings.HasPrefix(string(c.Hash), set+"-") {
			t.Errorf("recovery codes mix sets: %q and %q", cs[0].Hash, c.Hash)
		}
	}
	for i := 1; i <= last; i++ {
		v, err := s.Setting(t.Context(), fmt.Sprintf("k%06d", i))
		if err != nil || string(v) != strconv.Itoa(i) {
			t.Fatalf("setting %d after crash = %q, %v", i, v, err)
		}
		if _, err := s.GetUser(t.Context(), fmt.Sprintf("user-%06d", i)); err != nil {
			t.Fatalf("user %d after crash: %v", i, err)
		}
	}
	// The store still works.
	if r, err := s.SettleAttempt(t.Context(), "alice", store.Match{Step: u.LastStep}, time.Now(), store.Limits{MaxFailures: 5, Window: time.Minute, LockFor: time.Minute}); err != nil || r.Accepted {
		t.Errorf("the last accepted step after crash = %+v, %v; want a replay", r, err)
	}
	if r, err := s.SettleAttempt(t.Context(), "alice", store.Match{Step: u.LastStep + 1}, time.Now(), store.Limits{MaxFailures: 5, Window: time.Minute, LockFor: time.Minute}); err != nil || !r.Accepted {
		t.Errorf("a new step after crash = %+v, %v", r, err)
	}
}
