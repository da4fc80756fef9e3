package proxy_test

import (
	"context"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/totpgate/totpgate/audit"
	"github.com/totpgate/totpgate/keyring"
	"github.com/totpgate/totpgate/mfa"
	"github.com/totpgate/totpgate/proxy"
	"github.com/totpgate/totpgate/store/sqlite"
	"github.com/totpgate/totpgate/totp"
)

// benchClock advances one TOTP period each time every user has logged in,
// so each login carries a fresh, valid code.
type benchClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *benchClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

// BenchmarkLoginPath compares a login sent to the app directly with the same
// login through the gate for an enrolled user with a valid code in the
// header: upstream + SQLite (on disk, synchronous=FULL) + local keyring +
// TOTP. It reports p50/p99 of both.
func BenchmarkLoginPath(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var creds struct{ User string }
		json.NewDecoder(r.Body).Decode(&creds)
		http.SetCookie(w, &http.Cookie{Name: "session", Value: creds.User})
		fmt.Fprintf(w, `{"token":"t","user":{"id":%q}}`, creds.User)
	}))
	defer up.Close()

	ctx := context.Background()
	dir := b.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	keys, err := keyring.OpenLocal(filepath.Join(dir, "keys.json"))
	if err != nil {
		b.Fatal(err)
	}
	clock := &benchClock{t: time.Unix(1_800_000_000, 0)}
	svc, err := mfa.New(ctx, st, keys, mfa.DefaultConfig(), clock.now)
	if err != nil {
		b.Fatal(err)
	}
	const users = 200
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
	clock.t = clock.t.Add(30 * time.Second) // the confirming codes' step is spent
	u, _ := url.Parse(up.URL)
	front, err := proxy.New(proxy.Options{
		Upstream:  u,
		Transport: proxy.NewTransport(proxy.TransportOptions{DialTimeout: time.Second, ResponseHeaderTimeout: 5 * time.Second, IdleConnTimeout: time.Minute, MaxIdleConns: 64}),
		APIPrefix: "/mfa", API: http.NotFoundHandler(), Logger: slog.New(slog.DiscardHandler),
		Login: &proxy.LoginOptions{
			Paths: []string{"/login"}, CodeHeader: "X-TOTP-Code", CodeField: "totp_code", UserIDPointer: "/user/id",
			Challenge: mfa.ChallengeConfig{TTL: time.Minute, MaxAttempts: 5}, ChallengeURL: "/mfa/challenge",
			MFA: svc, MaxAnswerBytes: 1 << 20, Audit: audit.NewLog(slog.New(slog.DiscardHandler)),
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	gate := httptest.NewServer(front)
	defer gate.Close()
	client := &http.Client{}

	run := func(b *testing.B, base string, withCode bool) {
		var lat []time.Duration
		i := 0
		for b.Loop() {
			n := i % users
			if withCode && n == 0 && i > 0 {
				clock.mu.Lock()
				clock.t = clock.t.Add(30 * time.Second)
				clock.mu.Unlock()
			}
			i++
			req, _ := http.NewRequest("POST", base+"/login", strings.NewReader(fmt.Sprintf(`{"user":"user%03d","password":"pw"}`, n)))
			req.Header.Set("Content-Type", "application/json")
			if withCode {
				req.Header.Set("X-TOTP-Code", totp.Code(secrets[n], p.Step(clock.now()), p))
			}
			start := time.Now()
			res, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			lat = append(lat, time.Since(start))
			if res.StatusCode != http.StatusOK || len(res.Header.Values("Set-Cookie")) == 0 {
				b.Fatalf("login %d: status %d", i, res.StatusCode)
			}
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
	b.Run("upstream-alone", func(b *testing.B) { run(b, up.URL, false) })
	b.Run("through-gate-with-code", func(b *testing.B) { run(b, gate.URL, true) })
}
