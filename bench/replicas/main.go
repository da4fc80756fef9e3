// Command replicas measures login-path throughput with 1, 2 and 3 sidecar
// replicas sharing one PostgreSQL database: each replica is the real login
// gate (proxy + mfa service + its own connection pool) on its own loopback
// listener in this process, in front of one app; clients spread their
// logins over the replicas round-robin. Every login carries a fresh, valid
// code: a shared clock moves one TOTP period every 100 ms and each user
// logs in at most once per period.
//
// Usage: go run ./bench/replicas [-dsn DSN] [-duration 10s] [-clients 32] [-users 2000]
package main

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/totpgate/totpgate/keyring"
	"github.com/totpgate/totpgate/mfa"
	"github.com/totpgate/totpgate/proxy/proxytest"
	"github.com/totpgate/totpgate/store/postgres"
	"github.com/totpgate/totpgate/totp"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "replicas bench:", err)
		os.Exit(1)
	}
}

// clock is the replicas' shared time, one TOTP period every tick.
type clock struct{ t atomic.Int64 }

func (c *clock) now() time.Time { return time.Unix(c.t.Load(), 0) }

type row struct {
	replicas       int
	rps            float64
	p50, p99       time.Duration
	logins, errors int64
	notGranted     int64
}

func run() error {
	dsn := flag.String("dsn", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "PostgreSQL DSN (a fresh schema is created and dropped)")
	duration := flag.Duration("duration", 10*time.Second, "measurement per replica count")
	clients := flag.Int("clients", 32, "concurrent clients")
	users := flag.Int("users", 2000, "enrolled users")
	flag.Parse()
	ctx := context.Background()

	schema := "bench_" + randHex(6)
	admin, err := pgx.Connect(ctx, *dsn)
	if err != nil {
		return err
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		return err
	}
	defer admin.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
	sep := "?"
	if strings.Contains(*dsn, "?") {
		sep = "&"
	}
	schemaDSN := *dsn + sep + "search_path=" + schema

	dir, err := os.MkdirTemp("", "totpgate-replicas-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	keys, err := keyring.OpenLocal(filepath.Join(dir, "keys.json"))
	if err != nil {
		return err
	}
	clk := &clock{}
	clk.t.Store(1_800_000_000)

	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var creds struct{ User string }
		_ = json.NewDecoder(r.Body).Decode(&creds)
		http.SetCookie(w, &http.Cookie{Name: "session", Value: creds.User})
		fmt.Fprintf(w, `{"token":"t","user":{"id":%q}}`, creds.User)
	}))
	defer app.Close()
	upstream, _ := url.Parse(app.URL)

	newReplica := func() (replica, *mfa.Service, error) {
		st, err := postgres.Open(ctx, schemaDSN, postgres.Options{MaxConns: 10, StatementTimeout: 5 * time.Second})
		if err != nil {
			return replica{}, nil, err
		}
		svc, err := mfa.New(ctx, st, keys, mfa.DefaultConfig(), clk.now)
		if err != nil {
			return replica{}, nil, err
		}
		front, err := proxytest.LoginFront(upstream, svc, 256)
		if err != nil {
			return replica{}, nil, err
		}
		srv := httptest.NewServer(front)
		return replica{url: srv.URL, close: func() { srv.Close(); st.Close() }}, svc, nil
	}

	// Enroll through one replica's service.
	first, svc, err := newReplica()
	if err != nil {
		return err
	}
	p := totp.DefaultParams()
	secrets := make([][]byte, *users)
	fmt.Fprintf(os.Stderr, "enrolling %d users\n", *users)
	var wg sync.WaitGroup
	var enrollErr atomic.Value
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < *users; i += 8 {
				u := fmt.Sprintf("user%05d", i)
				en, err := svc.StartEnrollment(ctx, u, u)
				if err != nil {
					enrollErr.Store(err)
					return
				}
				secrets[i], _ = base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(en.Secret)
				if _, err := svc.ConfirmEnrollment(ctx, u, totp.Code(secrets[i], p.Step(clk.now()), p)); err != nil {
					enrollErr.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, ok := enrollErr.Load().(error); ok {
		return err
	}
	reps := []replica{first}
	defer func() {
		for _, r := range reps {
			r.close()
		}
	}()

	var rows []row
	for n := 1; n <= 3; n++ {
		for len(reps) < n {
			r, _, err := newReplica()
			if err != nil {
				return err
			}
			reps = append(reps, r)
		}
		rows = append(rows, measure(reps[:n], secrets, clk, p, *clients, *duration))
		fmt.Fprintf(os.Stderr, "%d replicas: %.0f logins/s\n", n, rows[len(rows)-1].rps)
	}
	fmt.Printf("%d enrolled users, %d concurrent clients, %s per run; every login carries a fresh valid code (header) and must be granted.\n\n", *users, *clients, *duration)
	fmt.Println("| Replicas | Logins/s | p50 | p99 | Logins | Errors | Not granted |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Printf("| %d | %.0f | %s | %s | %d | %d | %d |\n", r.replicas, r.rps,
			r.p50.Round(10*time.Microsecond), r.p99.Round(10*time.Microsecond), r.logins, r.errors, r.notGranted)
	}
	return nil
}

// replica is one login gate on its own listener.
type replica struct {
	url   string
	close func()
}

func measure(reps []replica, secrets [][]byte, clk *clock, p totp.Params, clients int, d time.Duration) row {
	r := row{replicas: len(reps)}
	// Start in a fresh period so no user's last step is current.
	clk.t.Add(int64(2 * p.Period))
	stop := make(chan struct{})
	var tick sync.WaitGroup
	tick.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				clk.t.Add(int64(p.Period))
			}
		}
	})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	var wg sync.WaitGroup
	lat := make([][]time.Duration, clients)
	var logins, errs, refused atomic.Int64
	deadline := time.Now().Add(d)
	for c := range clients {
		wg.Go(func() {
			last := map[int]int64{}
			k := 0
			for time.Now().Before(deadline) {
				// This client's users are c, c+clients, ...
				u := c + (k%(len(secrets)/clients))*clients
				k++
				step := p.Step(clk.now())
				if last[u] >= step {
					if k%(len(secrets)/clients) == 0 {
						time.Sleep(5 * time.Millisecond) // every user used this period
					}
					continue
				}
				last[u] = step
				base := reps[int(logins.Load())%len(reps)].url
				req, _ := http.NewRequest("POST", base+"/login", strings.NewReader(fmt.Sprintf(`{"user":"user%05d","password":"pw"}`, u)))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-TOTP-Code", totp.Code(secrets[u], step, p))
				start := time.Now()
				res, err := client.Do(req)
				if err != nil {
					errs.Add(1)
					continue
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				lat[c] = append(lat[c], time.Since(start))
				logins.Add(1)
				if res.StatusCode != 200 || !strings.Contains(string(body), `"token"`) {
					// A step boundary between reading the clock and the
					// check can push the code out of the skew window; the
					// ticker makes that rare, and it is counted.
					refused.Add(1)
				}
			}
		})
	}
	start := time.Now()
	wg.Wait()
	elapsed := time.Since(start)
	close(stop)
	tick.Wait()
	all := slices.Concat(lat...)
	slices.Sort(all)
	r.logins, r.errors, r.notGranted = logins.Load(), errs.Load(), refused.Load()
	r.rps = float64(r.logins) / elapsed.Seconds()
	if len(all) > 0 {
		r.p50, r.p99 = all[len(all)/2], all[len(all)*99/100]
	}
	return r
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
