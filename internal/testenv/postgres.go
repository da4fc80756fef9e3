package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultPostgresDSN is the server tests use when TOTPGATE_TEST_POSTGRES_DSN
// is not set: a local PostgreSQL with trust authentication and a database
// named test.
const DefaultPostgresDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// PostgresDSN is the base DSN of the test server:
// $TOTPGATE_TEST_POSTGRES_DSN, else DefaultPostgresDSN.
func PostgresDSN() string {
	if dsn := os.Getenv("TOTPGATE_TEST_POSTGRES_DSN"); dsn != "" {
		return dsn
	}
	return DefaultPostgresDSN
}

// Postgres creates a fresh, empty schema t_<random hex> on the test server,
// drops it (CASCADE) when the test ends, and returns the base DSN with
// search_path set to that schema, so whatever the test opens on it creates
// its tables there and sees no other test's. pgx sends search_path, like
// any parameter it does not know, as a run-time parameter at connect.
//
// An unreachable server fails the test, with what to do about it; it is
// skipped only with TOTPGATE_SKIP_POSTGRES=1.
func Postgres(t testing.TB) string {
	t.Helper()
	base := PostgresDSN()
	cfg, err := pgx.ParseConfig(base)
	if err != nil {
		t.Fatalf("testenv: TOTPGATE_TEST_POSTGRES_DSN does not parse: %v", err)
	}
	where := fmt.Sprintf("%s:%d (database %q, user %q)", cfg.Host, cfg.Port, cfg.Database, cfg.User)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		if os.Getenv("TOTPGATE_SKIP_POSTGRES") == "1" {
			t.Skipf("TOTPGATE_SKIP_POSTGRES=1: PostgreSQL tests skipped (%s unreachable)", where)
		}
		t.Fatalf("testenv: PostgreSQL at %s is unreachable: %v\n"+
			"Start PostgreSQL there (trust authentication, with a database %q), "+
			"or set TOTPGATE_TEST_POSTGRES_DSN to a server the tests may create schemas on "+
			"(TOTPGATE_SKIP_POSTGRES=1 skips these tests)", where, err, cfg.Database)
	}
	defer conn.Close(context.Background())

	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	schema := "t_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("testenv: create schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Errorf("testenv: drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("testenv: drop schema %s: %v", schema, err)
		}
	})
	return withParam(base, "search_path", schema)
}

// withParam adds key=value to a DSN, a postgres:// URL or a key=value
// connection string. value must need no quoting.
func withParam(dsn, key, value string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err == nil {
			q := u.Query()
			q.Set(key, value)
			u.RawQuery = q.Encode()
			return u.String()
		}
	}
	return strings.TrimSpace(dsn) + " " + key + "=" + value
}
