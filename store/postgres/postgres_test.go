package postgres

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/totpgate/totpgate/internal/testenv"
	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/migration"
	"github.com/totpgate/totpgate/store/sqlite"
	"github.com/totpgate/totpgate/store/storetest"
)

// openFresh opens a store on a fresh schema of its own.
func openFresh(t *testing.T, opts Options) (*Store, string) {
	t.Helper()
	dsn := testenv.Postgres(t)
	s, err := Open(t.Context(), dsn, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dsn
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, storetest.Named(
		func(t *testing.T) string { return testenv.Postgres(t) },
		func(ctx context.Context, dsn string) (store.Store, error) { return Open(ctx, dsn, Options{}) },
		func(t *testing.T, s store.Store, dsn string) string {
			cutSessions(t, s.(*Store))
			return dsn
		},
	))
}

// cutSessions ends every server session of s from the server's side, as
// the death of its process would: nothing of s is closed gracefully (its
// later Close finds dead connections).
func cutSessions(t *testing.T, s *Store) {
	t.Helper()
	conns := s.pool.AcquireAllIdle(t.Context())
	pids := make([]uint32, 0, len(conns))
	for _, c := range conns {
		pids = append(pids, c.Conn().PgConn().PID())
		c.Release()
	}
	if len(pids) == 0 {
		t.Fatal("cutSessions: the store has no idle session")
	}
	raw := rawPool(t, testenv.PostgresDSN())
	for _, pid := range pids {
		var done bool
		if err := raw.QueryRow(t.Context(), `SELECT pg_terminate_backend($1, 10000)`, int64(pid)).Scan(&done); err != nil || !done {
			t.Fatalf("pg_terminate_backend(%d) = %v, %v", pid, done, err)
		}
	}
}

// A real crash of the database server (pg_ctl stop -m immediate: no
// checkpoint, recovery from the WAL at the next start) right after
// SettleAttempt answered loses nothing it answered. It runs on a private
// server, since it kills it.
func TestSettleSurvivesServerCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a private PostgreSQL server")
	}
	t.Parallel()
	pg := testenv.StartPGServer(t)
	open := func(t *testing.T) store.Store {
		s, err := Open(t.Context(), pg.DSN, Options{MaxConns: 20})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	storetest.RunCrash(t, storetest.Harness{
		Open: open,
		Crash: func(t *testing.T, old store.Store) store.Store {
			pg.Stop(t, "immediate")
			pg.Start(t)
			return open(t)
		},
	})
}

// rawPool connects to dsn without the Store, for inspecting and tampering.
func rawPool(t *testing.T, dsn string) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// schemaOf is the schema testenv.Postgres put in dsn.
func schemaOf(t *testing.T, dsn string) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.RuntimeParams["search_path"]
	if !strings.HasPrefix(s, "t_") {
		t.Fatalf("DSN has search_path %q, want the test schema", s)
	}
	return s
}

// outside is db as the schema and migration tests see it; the tables
// are those of the DSN's search_path, the test's schema.
func outside(db *pgxpool.Pool) storetest.DB {
	return storetest.DB{
		Query: func(t *testing.T, query string, args ...any) storetest.Rows {
			rows, _ := db.Query(t.Context(), query, args...) // an error comes back from rows.Err
			t.Cleanup(rows.Close)
			return rows
		},
		Exec: func(t *testing.T, query string, args ...any) {
			if _, err := db.Exec(t.Context(), query, args...); err != nil {
				t.Fatalf("%s: %v", query, err)
			}
		},
		TableQuery:      `SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1`,
		IndexQuery:      `SELECT COUNT(*) FROM pg_indexes WHERE schemaname = current_schema() AND indexname = $1`,
		ErrSchemaTooNew: ErrSchemaTooNew,
	}
}

func TestSchema(t *testing.T) {
	t.Parallel()
	storetest.RunSchema(t, func(t *testing.T) storetest.Schema {
		dsn := testenv.Postgres(t)
		db := rawPool(t, dsn)
		return storetest.Schema{
			DB:         outside(db),
			Open:       func(ctx context.Context) (store.Store, error) { return Open(ctx, dsn, Options{}) },
			Migrations: len(migrations),
			Migrate:    func(ctx context.Context, ms []migration.Migration) error { return migrate(ctx, db, ms) },
		}
	})
}

// What TestSchema does not check: the tables are in the test's schema
// (TestSchema looks in current_schema()), ids sort by bytes, and CHECK
// constraints hold.
func TestMigrationsFresh(t *testing.T) {
	t.Parallel()
	s, dsn := openFresh(t, Options{})
	schema := schemaOf(t, dsn)
	// The tables are in the test's schema (search_path from the DSN
	// reached the server), not in public.
	var current string
	if err := s.pool.QueryRow(t.Context(), `SELECT current_schema()`).Scan(&current); err != nil || current != schema {
		t.Fatalf("current_schema() = %q, %v; want %q", current, err, schema)
	}
	// User ids sort by bytes.
	var collation string
	if err := s.pool.QueryRow(t.Context(), `
SELECT c.collname FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation
WHERE a.attrelid = 'users'::regclass AND a.attname = 'id'`).Scan(&collation); err != nil || collation != "C" {
		t.Errorf("users.id collation = %q, %v; want C", collation, err)
	}
	// CHECK constraints hold.
	if _, err := s.pool.Exec(t.Context(), `INSERT INTO users (id, state, ciphertext, key_version, algorithm, digits, period, skew)
VALUES ('x', 'bogus', 'vault:v1:x', 1, 'SHA1', 6, 30, 1)`); err == nil {
		t.Errorf("users accepted state 'bogus'")
	}
}

func TestMigrationsConcurrentOpen(t *testing.T) {
	t.Parallel()
	dsn := testenv.Postgres(t)
	const n = 5
	stores := make([]*Store, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			stores[i], errs[i] = Open(t.Context(), dsn, Options{MaxConns: 2})
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open #%d: %v", i, err)
			continue
		}
		stores[i].Close()
	}
	db := rawPool(t, dsn)
	var rows, distinct int
	if err := db.QueryRow(t.Context(), `SELECT COUNT(*), COUNT(DISTINCT version) FROM schema_migrations`).Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	if rows != len(migrations) || distinct != len(migrations) {
		t.Errorf("schema_migrations has %d rows, %d versions; want exactly one row for each of %d", rows, distinct, len(migrations))
	}
	if got := outside(db).Applied(t); len(got) != len(migrations) || got[len(got)-1].Version != len(migrations) {
		t.Errorf("schema_migrations = %v", got)
	}
}

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	for _, o := range []Options{
		{},
		{MaxConns: 1, StatementTimeout: time.Microsecond, ConnectTimeout: time.Hour},
		{MaxConns: 100, StatementTimeout: maxStatementTimeout},
	} {
		if err := o.Validate(); err != nil {
			t.Errorf("%+v.Validate() = %v, want nil", o, err)
		}
	}
	err := Options{MaxConns: -1, StatementTimeout: -time.Second, ConnectTimeout: -time.Second}.Validate()
	if err == nil {
		t.Fatal("Validate accepted negative values")
	}
	for _, want := range []string{"MaxConns", "StatementTimeout", "ConnectTimeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error %q does not report %s", err, want)
		}
	}
	if err := (Options{StatementTimeout: maxStatementTimeout + time.Millisecond}).Validate(); err == nil || !strings.Contains(err.Error(), "StatementTimeout") {
		t.Errorf("Validate(too long a statement timeout) = %v", err)
	}
	// Open refuses invalid options before connecting anywhere.
	if _, err := Open(t.Context(), "postgres://nobody@127.0.0.1:1/x", Options{MaxConns: -1}); err == nil || !strings.Contains(err.Error(), "MaxConns") {
		t.Errorf("Open(invalid options) = %v, want the Validate error", err)
	}
}

func TestOptionsApplied(t *testing.T) {
	t.Parallel()
	show := func(s *Store, setting string) string {
		t.Helper()
		var v string
		if err := s.pool.QueryRow(t.Context(), "SHOW "+setting).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	s, dsn := openFresh(t, Options{})
	if got := show(s, "statement_timeout"); got != "5s" {
		t.Errorf("default statement_timeout = %s, want 5s", got)
	}
	if got := show(s, "application_name"); got != "totpgate" {
		t.Errorf("application_name = %s, want totpgate", got)
	}
	if c := s.pool.Config(); c.MaxConns != DefaultMaxConns || c.ConnConfig.ConnectTimeout != DefaultConnectTimeout {
		t.Errorf("pool MaxConns %d ConnectTimeout %v, want the defaults", c.MaxConns, c.ConnConfig.ConnectTimeout)
	}

	s2, err := Open(t.Context(), dsn, Options{MaxConns: 3, StatementTimeout: 200 * time.Millisecond, ConnectTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got := show(s2, "statement_timeout"); got != "200ms" {
		t.Errorf("statement_timeout = %s, want 200ms", got)
	}
	if c := s2.pool.Config(); c.MaxConns != 3 || c.ConnConfig.ConnectTimeout != 2*time.Second {
		t.Errorf("pool MaxConns %d ConnectTimeout %v, want 3 and 2s", c.MaxConns, c.ConnConfig.ConnectTimeout)
	}
	// The server enforces it.
	_, err = s2.pool.Exec(t.Context(), `SELECT pg_sleep(2)`)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57014" {
		t.Errorf("a statement longer than statement_timeout: err = %v, want query_canceled (57014)", err)
	}
}

// Migrations are not cut short by the statement timeout meant for logins.
// A replica waiting for another's migration must not fail on the statement
// timeout meant for logins: the lock is held here three times longer than
// the timeout, and Open still succeeds.
func TestMigrationsIgnoreStatementTimeout(t *testing.T) {
	t.Parallel()
	dsn := testenv.Postgres(t)
	holder := rawPool(t, dsn)
	tx, err := holder.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), `SELECT pg_advisory_xact_lock($1)`, migrateLockKey); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		_ = tx.Rollback(context.Background())
	}()
	s, err := Open(t.Context(), dsn, Options{StatementTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("Open while another replica migrates: %v", err)
	}
	defer s.Close()
	if got := outside(holder).Applied(t); len(got) != len(migrations) {
		t.Errorf("applied %d migrations, want %d", len(got), len(migrations))
	}
}

func TestOpenDoesNotRepeatDSN(t *testing.T) {
	t.Parallel()
	for _, dsn := range []string{
		"postgres://user:s3cretpw@127.0.0.1:notaport/db",
		"host=127.0.0.1 password=s3cretpw sslmode=bogus",
	} {
		_, err := Open(t.Context(), dsn, Options{})
		if err == nil {
			t.Errorf("Open(%q) succeeded", dsn)
			continue
		}
		if strings.Contains(err.Error(), "s3cretpw") {
			t.Errorf("Open error repeats the password: %v", err)
		}
		t.Logf("Open(bad DSN): %v", err)
	}
}

func TestDeleteExpiredChallengesBatches(t *testing.T) {
	t.Parallel()
	s, _ := openFresh(t, Options{})
	ctx := t.Context()
	now := time.Date(2031, time.March, 4, 5, 6, 7, 0, time.UTC)
	const expired = 2*expiredBatch + 500
	if _, err := s.pool.Exec(ctx, `
INSERT INTO challenges (id_hash, user_id, sealed, enroll, created_at, expires_at)
SELECT convert_to('expired-' || i, 'UTF8'), 'u', '', 0, $1::bigint - 3600000, $1::bigint - i
FROM generate_series(0, $2 - 1) AS i`, now.UnixMilli(), expired); err != nil {
		t.Fatal(err)
	}
	var live []store.Challenge
	for i := range 5 {
		c := store.Challenge{IDHash: []byte(fmt.Sprintf("live-%d", i)), UserID: "u", Sealed: []byte("x"),
			CreatedAt: now, ExpiresAt: now.Add(time.Duration(i+1) * time.Second)}
		if err := s.CreateChallenge(ctx, c); err != nil {
			t.Fatal(err)
		}
		live = append(live, c)
	}
	n, err := s.DeleteExpiredChallenges(ctx, now)
	if err != nil || n != expired {
		t.Fatalf("DeleteExpiredChallenges = %d, %v; want %d", n, err, expired)
	}
	var left int
	if err := s.pool.QueryRow(ctx, `SELECT COUNT(*) FROM challenges`).Scan(&left); err != nil || left != len(live) {
		t.Errorf("%d challenges left (%v), want the %d live ones", left, err, len(live))
	}
	for _, c := range live {
		if _, err := s.GetChallenge(ctx, c.IDHash, now); err != nil {
			t.Errorf("live challenge deleted: %v", err)
		}
	}
	if n, err := s.DeleteExpiredChallenges(ctx, now); err != nil || n != 0 {
		t.Errorf("second DeleteExpiredChallenges = %d, %v; want 0", n, err)
	}
}

// The sweep skips a challenge another transaction holds instead of waiting
// for it (a login spending it must not queue behind the sweep, nor the
// sweep behind the login).
func TestDeleteExpiredChallengesSkipsLocked(t *testing.T) {
	t.Parallel()
	s, dsn := openFresh(t, Options{})
	ctx := t.Context()
	now := time.Date(2031, time.March, 4, 5, 6, 7, 0, time.UTC)
	for i := range 3 {
		c := store.Challenge{IDHash: []byte{byte(i)}, UserID: "u", Sealed: []byte("x"), CreatedAt: now.Add(-time.Hour), ExpiresAt: now.Add(-time.Minute)}
		if err := s.CreateChallenge(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	tx, err := rawPool(t, dsn).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT 1 FROM challenges WHERE id_hash = $1 FOR UPDATE`, []byte{1}); err != nil {
		t.Fatal(err)
	}
	sweepCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if n, err := s.DeleteExpiredChallenges(sweepCtx, now); err != nil || n != 2 {
		t.Fatalf("DeleteExpiredChallenges with one row locked = %d, %v; want 2 without waiting", n, err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := s.DeleteExpiredChallenges(ctx, now); err != nil || n != 1 {
		t.Fatalf("DeleteExpiredChallenges after the lock ended = %d, %v; want 1", n, err)
	}
}

// Spending recovery codes while they are being replaced (and the user
// deleted and re-enrolled) never deadlocks: every transaction locks the
// user's row before any recovery_codes row.
func TestRecoveryCodesNoDeadlock(t *testing.T) {
	t.Parallel()
	lenient := store.Limits{MaxFailures: 1 << 20, Window: time.Hour, LockFor: time.Hour}
	s, _ := openFresh(t, Options{MaxConns: 20})
	ctx := t.Context()
	now := time.Date(2031, time.March, 4, 5, 6, 7, 0, time.UTC)
	enroll := func() error {
		u := store.User{ID: "alice", Ciphertext: "vault:v1:a", KeyVersion: 1,
			Params:           store.TOTPParams{Algorithm: "SHA1", Digits: 6, Period: 30, Skew: 1},
			PendingExpiresAt: now.Add(time.Hour), UpdatedAt: now}
		if err := s.StartEnrollment(ctx, u); err != nil && !errors.Is(err, store.ErrConflict) {
			return err
		}
		if err := s.ConfirmEnrollment(ctx, "alice", u.Ciphertext, 1, [][]byte{[]byte("h0"), []byte("h1"), []byte("h2")}, now); err != nil && !errors.Is(err, store.ErrConflict) {
			return err
		}
		return nil
	}
	if err := enroll(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for g := range 20 {
		wg.Go(func() {
			for i := range 15 {
				var err error
				switch (g + i) % 5 {
				case 0:
					_, err = s.ReplaceRecoveryCodes(ctx, "alice", [][]byte{[]byte("a"), []byte("b"), []byte("c")}, now)
					if errors.Is(err, store.ErrConflict) {
						err = nil // deleted meanwhile
					}
				case 1:
					_, err = s.DeleteUser(ctx, "alice")
					if errors.Is(err, store.ErrNotFound) {
						err = nil
					}
					if err == nil {
						err = enroll()
					}
				default:
					var cs []store.RecoveryCode
					cs, err = s.RecoveryCodes(ctx, "alice")
					for _, c := range cs {
						if err == nil {
							_, err = s.SettleAttempt(ctx, "alice", store.Match{RecoveryCodeID: c.ID}, now, lenient)
							if errors.Is(err, store.ErrNotFound) {
								err = nil // deleted meanwhile
							}
						}
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent recovery code work: %v", err)
	}
}

// SwapSecrets gives the same answers as the SQLite store, which applies a
// batch's swaps one after the other, also for batches that name a user
// several times, chain swaps (a->b, b->c) or repeat an Old.
func TestSwapSecretsMatchesSequential(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pg, _ := openFresh(t, Options{})
	lite, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "ref.db"), sqlite.WithSynchronous("NORMAL"))
	if err != nil {
		t.Fatal(err)
	}
	defer lite.Close()
	now := time.Date(2031, time.March, 4, 5, 6, 7, 0, time.UTC)
	users := []string{"u0", "u1", "U2", "u3"}
	cts := []string{"vault:v1:a", "vault:v2:b", "vault:v3:c", "local:v1:d"}
	for _, st := range []store.Store{pg, lite} {
		for i, id := range users {
			u := store.User{ID: id, Ciphertext: cts[i%len(cts)], KeyVersion: 1,
				Params:           store.TOTPParams{Algorithm: "SHA1", Digits: 6, Period: 30, Skew: 1},
				PendingExpiresAt: now.Add(time.Hour), UpdatedAt: now}
			if err := st.StartEnrollment(ctx, u); err != nil {
				t.Fatal(err)
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		batch := make([]store.Swap, 1+rng.IntN(8))
		for i := range batch {
			batch[i] = store.Swap{
				UserID:  users[rng.IntN(len(users))],
				Old:     cts[rng.IntN(len(cts))],
				New:     cts[rng.IntN(len(cts))],
				Version: 1 + rng.IntN(5),
			}
		}
		got, err := pg.SwapSecrets(ctx, batch)
		if err != nil {
			t.Fatalf("round %d: postgres SwapSecrets: %v", round, err)
		}
		want, err := lite.SwapSecrets(ctx, batch)
		if err != nil {
			t.Fatalf("round %d: sqlite SwapSecrets: %v", round, err)
		}
		if got != want {
			t.Fatalf("round %d: SwapSecrets(%+v) = %d, sequential application swaps %d", round, batch, got, want)
		}
		for _, id := range users {
			a, err1 := pg.GetUser(ctx, id)
			b, err2 := lite.GetUser(ctx, id)
			if err1 != nil || err2 != nil {
				t.Fatal(err1, err2)
			}
			if a.Ciphertext != b.Ciphertext || a.KeyVersion != b.KeyVersion {
				t.Fatalf("round %d: after SwapSecrets(%+v) %s holds %s (v%d), sequential application leaves %s (v%d)",
					round, batch, id, a.Ciphertext, a.KeyVersion, b.Ciphertext, b.KeyVersion)
			}
		}
	}
}
