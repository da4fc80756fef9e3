package proxy_test

import (
	"context"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/totpgate/totpgate/internal/testenv"
	"github.com/totpgate/totpgate/keyring"
	"github.com/totpgate/totpgate/mfa"
	"github.com/totpgate/totpgate/proxy/proxytest"
	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/postgres"
	"github.com/totpgate/totpgate/store/sqlite"
	"github.com/totpgate/totpgate/totp"
)

// benchClock is the service's clock: it stands at one TOTP step per
// round, and a round is over when every user has logged in once, so each
// login carries a fresh, valid code.
type benchClock struct {
	base  time.Time
	round atomic.Int64
}

func (c *benchClock) now() time.Time { return c.at(c.round.Load()) }

func (c *benchClock) at(round int64) time.Time {
	return c.base.Add(time.Duration(round) * 30 * time.Second)
}

// reach moves the clock forward to round r (never back). A login of the
// round before that is still in flight is checked one step late, which
// the default skew of one step accepts.
func (c *benchClock) reach(r int64) {
	for {
		cur := c.round.Load()
		if cur >= r || c.round.CompareAndSwap(cur, r) {
			return
		}
	}
}

// loginBench is an app on loopback, the login gate in front of it, and
// users enrolled in the gate's store.
type loginBench struct {
	up, gate *httptest.Server
	clock    *benchClock
	secrets  [][]byte
	client   *http.Client
}

// newLoginBench enrolls users in st and starts the app and the gate.
func newLoginBench(b *testing.B, st store.Store, users int) *loginBench {
	b.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var creds struct{ User string }
		json.NewDecoder(r.Body).Decode(&creds)
		http.SetCookie(w, &http.Cookie{Name: "session", Value: creds.User})
		fmt.Fprintf(w, `{"token":"t","user":{"id":%q}}`, creds.User)
	}))
	b.Cleanup(up.Close)
	ctx := context.Background()
	keys, err := keyring.OpenLocal(filepath.Join(b.TempDir(), "keys.json"))
	if err != nil {
		b.Fatal(err)
	}
	clock := &benchClock{base: time.Unix(1_800_000_000, 0)}
	svc, err := mfa.New(ctx, st, keys, mfa.DefaultConfig(), clock.now)
	if err != nil {
		b.Fatal(err)
	}
	p := totp.DefaultParams()
	secrets := make([][]byte, users)
	for i := range users {
		u := fmt.Sprintf("user%03d", i)
		en, err := svc.StartEnrollment(ctx, u, u)
		if err != nil {
			b.Fatal(err)
		}
		secrets[i], _ = base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(en.Secret)
		if _, err := svc.ConfirmEnrollment(ctx, u, totp.Code(secrets[i], p.Step(clock.now()), p)); err != nil {
			b.Fatal(err)
		}
	}
	clock.reach(1) // the confirming codes' step is spent
	u, _ := url.Parse(up.URL)
	front, err := proxytest.LoginFront(u, svc, 64)
	if err != nil {
		b.Fatal(err)
	}
	gate := httptest.NewServer(front)
	b.Cleanup(gate.Close)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.Cleanup(client.CloseIdleConnections)
	return &loginBench{up: up, gate: gate, clock: clock, secrets: secrets, client: client}
}

// login sends login number i (user i%users, in round 1+i/users) to base,
// with that round's code when withCode, and checks that it was let in. It
// returns the time it took. Logins of one user are a round apart, so with
// fewer clients than users each code is fresh; a client stalled for a
// whole round would send a code the clock has left behind (refused).
func (lb *loginBench) login(base string, i int, withCode bool) (time.Duration, error) {
	users := len(lb.secrets)
	n := i % users
	req, _ := http.NewRequest("POST", base+"/login", strings.NewReader(fmt.Sprintf(`{"user":"user%03d","password":"pw"}`, n)))
	req.Header.Set("Content-Type", "application/json")
	if withCode {
		round := 1 + int64(i/users)
		lb.clock.reach(round)
		p := totp.DefaultParams()
		req.Header.Set("X-TOTP-Code", totp.Code(lb.secrets[n], p.Step(lb.clock.at(round)), p))
	}
	start := time.Now()
	res, err := lb.client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	took := time.Since(start)
	if res.StatusCode != http.StatusOK || len(res.Header.Values("Set-Cookie")) == 0 {
		return took, fmt.Errorf("login %d: status %d", i, res.StatusCode)
	}
	return took, nil
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

func openBenchSQLite(b *testing.B) store.Store {
	st, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

// BenchmarkLoginPath compares a login sent to the app directly with the same
// login through the gate for an enrolled user with a valid code in the
// header: upstream + SQLite (on disk, synchronous=FULL) + local keyring +
// TOTP. One client, one login at a time. It reports p50/p99 of both.
func BenchmarkLoginPath(b *testing.B) {
	lb := newLoginBench(b, openBenchSQLite(b), 200)
	run := func(b *testing.B, base string, withCode bool) {
		var lat []time.Duration
		i := 0
		for b.Loop() {
			took, err := lb.login(base, i, withCode)
			if err != nil {
				b.Fatal(err)
			}
			lat = append(lat, took)
			i++
		}
		reportPercentiles(b, lat)
	}
	b.Run("upstream-alone", func(b *testing.B) { run(b, lb.up.URL, false) })
	b.Run("through-gate-with-code", func(b *testing.B) { run(b, lb.gate.URL, true) })
}

// BenchmarkLoginThroughput runs logins with a valid code through the gate
// from 1, 8 and 32 concurrent clients, on SQLite (on disk,
// synchronous=FULL) and on PostgreSQL (the test server), and reports
// logins/s besides p50/p99. Every login must be let in.
func BenchmarkLoginThroughput(b *testing.B) {
	stores := []struct {
		name string
		open func(b *testing.B) store.Store
	}{
		{"sqlite", openBenchSQLite},
		{"postgres", func(b *testing.B) store.Store {
			st, err := postgres.Open(context.Background(), testenv.Postgres(b), postgres.Options{MaxConns: 32})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { st.Close() })
			return st
		}},
	}
	for _, sc := range stores {
		b.Run(sc.name, func(b *testing.B) {
			lb := newLoginBench(b, sc.open(b), 1000)
			next := 0 // logins are numbered on across the sub-benchmarks: codes are never reused
			for _, clients := range []int{1, 8, 32} {
				b.Run(fmt.Sprintf("clients-%d", clients), func(b *testing.B) {
					first := next
					next += b.N
					var (
						issued atomic.Int64
						mu     sync.Mutex
						lat    = make([]time.Duration, 0, b.N)
						wg     sync.WaitGroup
					)
					b.ResetTimer()
					start := time.Now()
					for range clients {
						wg.Go(func() {
							var mine []time.Duration
							for {
								i := int(issued.Add(1)) - 1
								if i >= b.N {
									break
								}
								took, err := lb.login(lb.gate.URL, first+i, true)
								if err != nil {
									b.Error(err)
									issued.Store(int64(b.N)) // stop every client
									break
								}
								mine = append(mine, took)
							}
							mu.Lock()
							lat = append(lat, mine...)
							mu.Unlock()
						})
					}
					wg.Wait()
					elapsed := time.Since(start)
					b.StopTimer()
					if b.Failed() {
						return
					}
					b.ReportMetric(float64(b.N)/elapsed.Seconds(), "logins/s")
					reportPercentiles(b, lat)
				})
			}
		})
	}
}
