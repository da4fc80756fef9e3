// Command rewrap measures the rewrap job against a running Vault: secrets
// per second for N stored secrets, beside Vault's own batch rewrap rate
// (the ceiling) measured in the same run, while a login-like load (read the
// user's row, decrypt the secret in Vault) keeps going.
//
// bench/rewrap.sh starts a Vault dev server and runs this; see there.
package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	vault "github.com/hashicorp/vault/api"
	_ "modernc.org/sqlite"

	"github.com/totpgate/totpgate/rotation"
	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/sqlite"
	"github.com/totpgate/totpgate/vaultkeys"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "rewrap bench:", err)
		os.Exit(1)
	}
}

type result struct {
	n                   int
	seed                time.Duration
	ceiling, job        float64 // secrets per second
	jobTook             time.Duration
	logins, loginErrors int
	loginP50, loginP99  time.Duration
}

func run() error {
	addr := flag.String("vault-addr", "http://127.0.0.1:8200", "Vault address")
	token := flag.String("token", "root", "Vault token")
	sizes := flag.String("n", "100000,1000000", "stored secrets, comma separated")
	batch := flag.Int("batch", 1000, "rewrap batch size (job and ceiling)")
	loginRate := flag.Int("login-rate", 50, "login-like operations per second during the rewrap")
	dir := flag.String("dir", "", "work directory (default: a temp dir)")
	flag.Parse()
	if *dir == "" {
		d, err := os.MkdirTemp("", "totpgate-rewrap-bench")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	cfg := vault.DefaultConfig()
	cfg.Address = *addr
	client, err := vault.NewClient(cfg)
	if err != nil {
		return err
	}
	client.SetToken(*token)
	var results []result
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return err
		}
		r, err := measure(client, *addr, *token, *dir, n, *batch, *loginRate)
		if err != nil {
			return err
		}
		results = append(results, r)
		fmt.Fprintf(os.Stderr, "n=%d done: job %.0f/s, ceiling %.0f/s\n", n, r.job, r.ceiling)
	}
	fmt.Printf("Batch size %d; login-like load %d/s (read the row, decrypt in Vault) during each rewrap.\n\n", *batch, *loginRate)
	fmt.Println("| Stored secrets | Seeding | Vault batch rewrap alone (ceiling) | Rewrap job | Job / ceiling | Job time | Logins during the job | Login p50 / p99 | Login errors |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	for _, r := range results {
		fmt.Printf("| %d | %s | %.0f/s | %.0f/s | %.2f | %s | %d | %s / %s | %d |\n",
			r.n, r.seed.Round(time.Second), r.ceiling, r.job, r.job/r.ceiling, r.jobTook.Round(100*time.Millisecond),
			r.logins, r.loginP50.Round(10*time.Microsecond), r.loginP99.Round(10*time.Microsecond), r.loginErrors)
	}
	return nil
}

func measure(client *vault.Client, addr, token, dir string, n, batch, loginRate int) (result, error) {
	ctx := context.Background()
	res := result{n: n}
	key := fmt.Sprintf("bench-%d-%d", n, time.Now().UnixNano())
	if _, err := client.Logical().Write("transit/keys/"+key, map[string]any{"type": "aes256-gcm96", "derived": true}); err != nil {
		return res, fmt.Errorf("create key: %w", err)
	}
	dbPath := filepath.Join(dir, key+".db")
	start := time.Now()
	cts, err := seed(ctx, client, key, dbPath, n)
	if err != nil {
		return res, fmt.Errorf("seed: %w", err)
	}
	res.seed = time.Since(start)
	if _, err := client.Logical().Write("transit/keys/"+key+"/rotate", nil); err != nil {
		return res, err
	}

	// Ceiling: Vault's batch rewrap alone, one request in flight like the
	// job, over the first secrets (rewrap does not store, so this does not
	// change what the job has to do).
	sample := min(n, 100_000)
	start = time.Now()
	for i := 0; i < sample; i += batch {
		end := min(i+batch, sample)
		items := make([]map[string]any, 0, end-i)
		for j := i; j < end; j++ {
			items = append(items, map[string]any{"ciphertext": cts[j], "context": b64(store.BindingUser.BindTo(userID(j)))})
		}
		if _, err := client.Logical().Write("transit/rewrap/"+key, map[string]any{"batch_input": items}); err != nil {
			return res, fmt.Errorf("ceiling: %w", err)
		}
	}
	res.ceiling = float64(sample) / time.Since(start).Seconds()

	st, err := sqlite.Open(ctx, dbPath)
	if err != nil {
		return res, err
	}
	defer st.Close()
	keys, err := vaultkeys.Open(ctx, vaultkeys.Config{
		Address: addr, Mount: "transit", KeyName: key, Timeout: 30 * time.Second,
		MaxRetries: 2, RetryWaitMin: 50 * time.Millisecond, RetryWaitMax: time.Second,
		Auth: vaultkeys.Token{Value: token}, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return res, err
	}
	defer keys.Close()
	m, err := rotation.New(rotation.Config{Store: st, Keys: keys})
	if err != nil {
		return res, err
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var lat []time.Duration
	var loginErrs int
	wg.Go(func() {
		t := time.NewTicker(time.Second / time.Duration(loginRate))
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			user := userID(mrand.IntN(n))
			began := time.Now()
			u, err := st.GetUser(ctx, user)
			if err == nil {
				var pt []byte
				pt, err = keys.Decrypt(ctx, u.BindTo(), u.Ciphertext)
				clear(pt)
			}
			lat = append(lat, time.Since(began))
			if err != nil {
				loginErrs++
			}
		}
	})
	start = time.Now()
	job, err := m.Rewrap(ctx, rotation.Options{BatchSize: batch}, nil)
	res.jobTook = time.Since(start)
	close(stop)
	wg.Wait()
	if err != nil {
		return res, fmt.Errorf("rewrap job: %w", err)
	}
	if job.Done != n || job.Failed != 0 {
		return res, fmt.Errorf("rewrap job: %+v", job)
	}
	res.job = float64(n) / res.jobTook.Seconds()
	res.logins, res.loginErrors = len(lat), loginErrs
	slices.Sort(lat)
	if len(lat) > 0 {
		res.loginP50 = lat[len(lat)/2]
		res.loginP99 = lat[int(math.Ceil(float64(len(lat))*0.99))-1]
	}
	counts, err := st.CountByKey(ctx)
	if err != nil {
		return res, err
	}
	for k, c := range counts {
		if k.Version != 2 {
			return res, fmt.Errorf("%d secrets left on %v", c, k)
		}
	}
	_ = os.Remove(dbPath)
	return res, nil
}

func userID(i int) string { return fmt.Sprintf("user-%07d", i) }

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// seed encrypts n random secrets with Vault batch encrypt (4 requests in
// flight) and bulk-inserts them as active users. The schema comes from
// sqlite.Open; the rows go in with plain SQL because a million
// enrollments through the API would only measure enrollment.
func seed(ctx context.Context, client *vault.Client, key, dbPath string, n int) ([]string, error) {
	st, err := sqlite.Open(ctx, dbPath)
	if err != nil {
		return nil, err
	}
	st.Close()
	cts := make([]string, n)
	const chunk = 1000
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	next := make(chan int)
	for range 4 {
		wg.Go(func() {
			for i := range next {
				end := min(i+chunk, n)
				items := make([]map[string]any, 0, end-i)
				for j := i; j < end; j++ {
					secret := make([]byte, 20)
					_, _ = rand.Read(secret)
					items = append(items, map[string]any{"plaintext": base64.StdEncoding.EncodeToString(secret), "context": b64(store.BindingUser.BindTo(userID(j)))})
				}
				s, err := client.Logical().Write("transit/encrypt/"+key, map[string]any{"batch_input": items})
				if err != nil {
					errs <- err
					return
				}
				for j, r := range s.Data["batch_results"].([]any) {
					cts[i+j] = r.(map[string]any)["ciphertext"].(string)
				}
			}
		})
	}
	for i := 0; i < n; i += chunk {
		select {
		case next <- i:
		case err := <-errs:
			close(next)
			wg.Wait()
			return nil, err
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		return nil, err
	default:
	}
	db, err := sql.Open("sqlite", "file:"+dbPath+"?_pragma=journal_mode(WAL)&_pragma=synchronous(OFF)")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	for i := 0; i < n; i += 50_000 {
		tx, err := db.Begin()
		if err != nil {
			return nil, err
		}
		stmt, err := tx.Prepare(`INSERT INTO users (id, state, ciphertext, key_version, binding, algorithm, digits, period, skew, confirmed_at, updated_at)
VALUES (?, 'active', ?, 1, 1, 'SHA1', 6, 30, 1, 1, 1)`)
		if err != nil {
			return nil, err
		}
		for j := i; j < min(i+50_000, n); j++ {
			if _, err := stmt.Exec(userID(j), cts[j]); err != nil {
				return nil, err
			}
		}
		stmt.Close()
		if err := tx.Commit(); err != nil {
			return nil, err
		}
	}
	if cts[n-1] == "" {
		return nil, errors.New("seeding left gaps")
	}
	return cts, nil
}
