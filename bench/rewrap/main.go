// Command rewrap measures the rewrap job against a running Vault: secrets
// per second for N stored secrets, beside Vault's own batch rewrap rate
// (the ceiling) measured in the same run, while real logins go through a
// totpgate sidecar on the same database and Vault key: the app's password
// step, then the TOTP code checked (decrypt in Vault, the step accepted in
// SQLite). Login latency is measured without a rewrap first, then during
// it, side by side.
//
// bench/rewrap.sh starts a Vault dev server and runs this; see there.
package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	vault "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"
	_ "modernc.org/sqlite"

	"github.com/totpgate/totpgate/rotation"
	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/store/postgres"
	"github.com/totpgate/totpgate/store/sqlite"
	"github.com/totpgate/totpgate/totp"
	"github.com/totpgate/totpgate/vaultkeys"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "rewrap bench:", err)
		os.Exit(1)
	}
}

type result struct {
	n            int
	seed         time.Duration
	ceiling, job float64 // secrets per second
	// ceiling is the mean of ceilingBefore (before the logins) and
	// ceilingAfter (after the job).
	ceilingBefore, ceilingAfter float64
	jobTook                     time.Duration
	quiet, during               loginStats
	// quietDecrypt and duringDecrypt are the sidecar's mean Vault decrypt
	// time, to tell Vault's share of a login's latency from the store's.
	quietDecrypt, duringDecrypt time.Duration
	inFlight, batch             int
}

type loginStats struct {
	logins, errors int
	p50, p99, mean time.Duration
}

func run() error {
	addr := flag.String("vault-addr", "http://127.0.0.1:8200", "Vault address")
	token := flag.String("token", "root", "Vault token")
	sizes := flag.String("n", "100000,1000000", "stored secrets, comma separated")
	batch := flag.Int("batch", 1000, "rewrap batch size (job and ceiling)")
	loginRate := flag.Int("login-rate", 50, "sidecar logins per second, without and during the rewrap")
	inFlight := flag.Int("in-flight", rotation.DefaultInFlight, "batches the job keeps at Vault at once")
	sidecar := flag.String("sidecar", "", "totpgate binary (built by bench/rewrap.sh)")
	quiet := flag.Duration("quiet", 10*time.Second, "how long logins are measured without a rewrap")
	jobIn := flag.String("job-in", "sidecar", "where the job runs: sidecar (POST /admin/keys/rewrap, sharing its store) or process (this one, as `totpgate keys rewrap`)")
	dir := flag.String("dir", "", "work directory (default: a temp dir)")
	storeKind := flag.String("store", "sqlite", "the sidecar's store: sqlite (a file in -dir) or postgres (a fresh schema on -pg-dsn)")
	pgDSN := flag.String("pg-dsn", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "PostgreSQL server for -store postgres")
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
		r, err := measure(client, benchConfig{addr: *addr, token: *token, dir: *dir, n: n, batch: *batch, loginRate: *loginRate,
			inFlight: *inFlight, sidecar: *sidecar, quiet: *quiet, jobInSidecar: *jobIn == "sidecar", store: *storeKind, pgDSN: *pgDSN})
		if err != nil {
			return err
		}
		results = append(results, r)
		fmt.Fprintf(os.Stderr, "n=%d done: job %.0f/s, ceiling %.0f/s\n", n, r.job, r.ceiling)
	}
	fmt.Printf("%[1]s store. Job run in the %[2]s; batch size %[3]d, %[4]d batches in flight; %[5]d sidecar logins/s (password at the app, TOTP checked by the sidecar: Vault decrypt, %[1]s write), %[6]s without a rewrap, then during it.\n\n", storeName(*storeKind), *jobIn, *batch, *inFlight, *loginRate, *quiet)
	fmt.Println("| Stored secrets | Seeding | Vault batch rewrap, 1 in flight (ceiling: before / after) | Rewrap job | Job / ceiling | Job time | Logins p50 / p99 without rewrap | Logins p50 / p99 during | p99 during / without | Login errors |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range results {
		fmt.Printf("| %d | %s | %.0f/s (%.0f / %.0f) | %.0f/s | %.2f | %s | %s / %s (%d) | %s / %s (%d) | %.2f | %d |\n",
			r.n, r.seed.Round(time.Second), r.ceiling, r.ceilingBefore, r.ceilingAfter, r.job, r.job/r.ceiling, r.jobTook.Round(100*time.Millisecond),
			ms(r.quiet.p50), ms(r.quiet.p99), r.quiet.logins, ms(r.during.p50), ms(r.during.p99), r.during.logins,
			float64(r.during.p99)/float64(max(r.quiet.p99, 1)), r.quiet.errors+r.during.errors)
	}
	return nil
}

type benchConfig struct {
	addr, token, dir, sidecar string
	n, batch, loginRate       int
	inFlight                  int
	quiet                     time.Duration
	// jobInSidecar runs the job inside the sidecar (POST /admin/keys/rewrap),
	// sharing its store; otherwise in this process, as `totpgate keys
	// rewrap` runs it.
	jobInSidecar bool
	store, pgDSN string // "sqlite" or "postgres", and the server of the latter
}

func storeName(kind string) string {
	if kind == "postgres" {
		return "PostgreSQL"
	}
	return "SQLite"
}

const benchAdminToken = "bench-admin-token-0123456789abcdef"

// rewrap starts the job in the sidecar and waits for its end.
func (s *sidecar) rewrap(batch, inFlight int) (rotation.Job, error) {
	call := func(method, path, body string) (map[string]any, int, error) {
		req, _ := http.NewRequest(method, s.admin+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+benchAdminToken)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, 0, err
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return out, resp.StatusCode, nil
	}
	if out, code, err := call("POST", "/admin/keys/rewrap", fmt.Sprintf(`{"batch_size":%d,"in_flight":%d}`, batch, inFlight)); err != nil || code != http.StatusAccepted {
		return rotation.Job{}, fmt.Errorf("start rewrap in the sidecar: %d %v %v", code, out, err)
	}
	for {
		time.Sleep(50 * time.Millisecond)
		out, code, err := call("GET", "/admin/keys/rewrap", "")
		if err != nil || code != http.StatusOK {
			return rotation.Job{}, fmt.Errorf("rewrap status: %d %v %v", code, out, err)
		}
		switch out["state"] {
		case rotation.StateRunning:
			continue
		case rotation.StateSucceeded:
			done, _ := out["done"].(float64)
			failed, _ := out["failed"].(float64)
			return rotation.Job{State: rotation.StateSucceeded, Done: int(done), Failed: int(failed)}, nil
		default:
			return rotation.Job{}, fmt.Errorf("rewrap in the sidecar: %v", out)
		}
	}
}

func measure(client *vault.Client, c benchConfig) (result, error) {
	ctx := context.Background()
	n := c.n
	res := result{n: n, inFlight: c.inFlight, batch: c.batch}
	key := fmt.Sprintf("bench-%d-%d", n, time.Now().UnixNano())
	if _, err := client.Logical().Write("transit/keys/"+key, map[string]any{"type": "aes256-gcm96", "derived": true}); err != nil {
		return res, fmt.Errorf("create key: %w", err)
	}
	db, err := newBenchDB(ctx, c, key)
	if err != nil {
		return res, err
	}
	defer db.drop()
	start := time.Now()
	cts, secrets, err := seed(ctx, client, key, db, n)
	if err != nil {
		return res, fmt.Errorf("seed: %w", err)
	}
	res.seed = time.Since(start)
	if _, err := client.Logical().Write("transit/keys/"+key+"/rotate", nil); err != nil {
		return res, err
	}

	// Ceiling: Vault's batch rewrap alone, one request in flight, over the
	// first secrets (rewrap does not store, so this does not change what
	// the job has to do). It is measured before the logins and again after
	// the job, and the job is compared with the mean: on a shared machine
	// Vault's rate drifts by ±10 % within minutes.
	ceiling := func() (float64, error) {
		sample := min(n, 100_000)
		start := time.Now()
		for i := 0; i < sample; i += c.batch {
			end := min(i+c.batch, sample)
			items := make([]map[string]any, 0, end-i)
			for j := i; j < end; j++ {
				items = append(items, map[string]any{"ciphertext": cts[j], "context": b64(store.BindingUser.BindTo(userID(j)))})
			}
			if _, err := client.Logical().Write("transit/rewrap/"+key, map[string]any{"batch_input": items}); err != nil {
				return 0, fmt.Errorf("ceiling: %w", err)
			}
		}
		return float64(sample) / time.Since(start).Seconds(), nil
	}
	if res.ceilingBefore, err = ceiling(); err != nil {
		return res, err
	}

	sc, err := startSidecar(c, key, db)
	if err != nil {
		return res, err
	}
	defer sc.stop()
	st, err := db.open(ctx)
	if err != nil {
		return res, err
	}
	defer st.Close()
	keys, err := vaultkeys.Open(ctx, vaultkeys.Config{
		Address: c.addr, Mount: "transit", KeyName: key, Timeout: 30 * time.Second,
		MaxRetries: 2, RetryWaitMin: 50 * time.Millisecond, RetryWaitMax: time.Second,
		Auth: vaultkeys.Token{Value: c.token}, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return res, err
	}
	defer keys.Close()
	m, err := rotation.New(rotation.Config{Store: st, Keys: keys})
	if err != nil {
		return res, err
	}

	// Each login is a user's first, so every code is fresh.
	load := &logins{url: sc.url, secrets: secrets, rate: c.loginRate}
	before := sc.decrypts()
	res.quiet = load.run(func(stop <-chan struct{}) {
		select {
		case <-stop:
		case <-time.After(c.quiet):
		}
	})
	res.quietDecrypt = sc.decrypts().since(before)
	before = sc.decrypts()
	var job rotation.Job
	res.during = load.run(func(<-chan struct{}) {
		start = time.Now()
		if c.jobInSidecar {
			job, err = sc.rewrap(c.batch, c.inFlight)
		} else {
			job, err = m.Rewrap(ctx, rotation.Options{BatchSize: c.batch, InFlight: c.inFlight}, nil)
		}
		res.jobTook = time.Since(start)
	})
	res.duringDecrypt = sc.decrypts().since(before)
	yielded := sc.metrics()["totpgate_rewrap_yielded_seconds_total"]
	fmt.Fprintf(os.Stderr, "n=%d: login mean %s → %s; its Vault decrypt mean %s → %s; the job yielded %.1fs to logins\n", n,
		ms(res.quiet.mean), ms(res.during.mean), ms(res.quietDecrypt), ms(res.duringDecrypt), yielded)
	if err != nil {
		return res, fmt.Errorf("rewrap job: %w", err)
	}
	if job.Done != n || job.Failed != 0 {
		return res, fmt.Errorf("rewrap job: %+v", job)
	}
	if res.ceilingAfter, err = ceiling(); err != nil {
		return res, err
	}
	res.ceiling = (res.ceilingBefore + res.ceilingAfter) / 2
	res.job = float64(n) / res.jobTook.Seconds()
	counts, err := st.CountByKey(ctx)
	if err != nil {
		return res, err
	}
	for k, cnt := range counts {
		if k.Version != 2 {
			return res, fmt.Errorf("%d secrets left on %v", cnt, k)
		}
	}
	return res, nil
}

// logins sends real logins through the sidecar at rate per second, each
// for the next user not yet logged in.
type logins struct {
	url     string
	secrets [][]byte
	rate    int
	next    int
}

// run keeps logging in while during runs, and answers the latencies.
func (l *logins) run(during func(stop <-chan struct{})) loginStats {
	stop := make(chan struct{})
	var mu sync.Mutex
	var lat []time.Duration
	var errs int
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second}
	p := totp.DefaultParams()
	wg.Go(func() {
		t := time.NewTicker(time.Second / time.Duration(l.rate))
		defer t.Stop()
		var inflight sync.WaitGroup
		defer inflight.Wait()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			i := l.next
			l.next++
			if i >= len(l.secrets) {
				return
			}
			inflight.Go(func() {
				user := userID(i)
				code := totp.Code(l.secrets[i], p.Step(time.Now()), p)
				req, _ := http.NewRequest(http.MethodPost, l.url+"/login", strings.NewReader(`{"user":"`+user+`","password":"pw"}`))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-TOTP-Code", code)
				began := time.Now()
				resp, err := client.Do(req)
				took := time.Since(began)
				ok := err == nil && resp.StatusCode == http.StatusOK && len(resp.Cookies()) > 0
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				mu.Lock()
				lat = append(lat, took)
				if !ok {
					errs++
				}
				mu.Unlock()
			})
		}
	})
	during(stop)
	close(stop)
	wg.Wait()
	slices.Sort(lat)
	st := loginStats{logins: len(lat), errors: errs}
	if len(lat) > 0 {
		st.p50 = lat[len(lat)/2]
		st.p99 = lat[int(math.Ceil(float64(len(lat))*0.99))-1]
		var sum time.Duration
		for _, d := range lat {
			sum += d
		}
		st.mean = sum / time.Duration(len(lat))
	}
	return st
}

type sidecar struct {
	url   string
	admin string
	cmd   *exec.Cmd
	app   *http.Server
	logs  *os.File
}

func (s *sidecar) stop() {
	_ = s.cmd.Process.Signal(os.Interrupt)
	_ = s.cmd.Wait()
	_ = s.app.Close()
	_ = s.logs.Close()
}

// startSidecar starts the app (a login that accepts password "pw" for
// anyone and names the user in its answer) and totpgate in front of it,
// on the benchmark's database and Vault key.
func startSidecar(c benchConfig, key string, db *benchDB) (*sidecar, error) {
	if c.sidecar == "" {
		return nil, errors.New("-sidecar is required (bench/rewrap.sh builds it)")
	}
	appLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var creds struct{ User, Password string }
		_ = json.NewDecoder(r.Body).Decode(&creds)
		if r.URL.Path != "/login" || creds.Password != "pw" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		http.SetCookie(w, &http.Cookie{Name: "session", Value: creds.User})
		_ = json.NewEncoder(w).Encode(map[string]any{"user": map[string]string{"id": creds.User}})
	})}
	go func() { _ = app.Serve(appLn) }()
	port := func() (int, error) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer ln.Close()
		return ln.Addr().(*net.TCPAddr).Port, nil
	}
	mainPort, err := port()
	if err != nil {
		return nil, err
	}
	adminPort, err := port()
	if err != nil {
		return nil, err
	}
	logs, err := os.Create(filepath.Join(c.dir, key+"-sidecar.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(c.sidecar, "serve", "--listen", fmt.Sprintf("127.0.0.1:%d", mainPort), "--admin-listen", fmt.Sprintf("127.0.0.1:%d", adminPort),
		"--upstream", "http://"+appLn.Addr().String())
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), append(db.sidecarEnv(), "TOTPGATE_KEYRING_BACKEND=vault",
		"TOTPGATE_KEYRING_VAULT_ADDRESS="+c.addr, "TOTPGATE_KEYRING_VAULT_AUTH_TOKEN="+c.token, "TOTPGATE_KEYRING_VAULT_KEY="+key,
		"TOTPGATE_LOG_LEVEL=warn", "TOTPGATE_ADMIN_TOKEN="+benchAdminToken)...)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &sidecar{url: fmt.Sprintf("http://127.0.0.1:%d", mainPort), admin: fmt.Sprintf("http://127.0.0.1:%d", adminPort), cmd: cmd, app: app, logs: logs}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", adminPort))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("sidecar not ready after 30 s; see %s", logs.Name())
		}
	}
}

// opTotals is a histogram's running sum and count.
type opTotals struct{ sum, count float64 }

// since is the mean of the observations after earlier.
func (t opTotals) since(earlier opTotals) time.Duration {
	if t.count <= earlier.count {
		return 0
	}
	return time.Duration((t.sum - earlier.sum) / (t.count - earlier.count) * float64(time.Second))
}

// decrypts reads the sidecar's Vault decrypt histogram from its metrics.
func (s *sidecar) decrypts() opTotals {
	const series = `totpgate_keyring_operation_duration_seconds_%s{backend="vault",op="decrypt"}`
	m := s.metrics()
	return opTotals{sum: m[fmt.Sprintf(series, "sum")], count: m[fmt.Sprintf(series, "count")]}
}

// metrics reads the sidecar's metrics: each series (name and labels as
// exposed) to its value; empty when they cannot be read.
func (s *sidecar) metrics() map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get(s.admin + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for line := range strings.Lines(string(body)) {
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(line[i+1:]), 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

func ms(d time.Duration) string { return d.Round(10 * time.Microsecond).String() }

func userID(i int) string { return fmt.Sprintf("user-%07d", i) }

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// seed encrypts n random secrets with Vault batch encrypt (4 requests in
// flight) and bulk-inserts them as active users. The schema comes from the
// store's own Open; the rows go in with plain SQL because a million
// enrollments through the API would only measure enrollment.
func seed(ctx context.Context, client *vault.Client, key string, db *benchDB, n int) ([]string, [][]byte, error) {
	st, err := db.open(ctx)
	if err != nil {
		return nil, nil, err
	}
	st.Close()
	cts := make([]string, n)
	secrets := make([][]byte, n) // kept for the logins' codes
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
					secrets[j] = secret
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
			return nil, nil, err
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		return nil, nil, err
	default:
	}
	if cts[n-1] == "" {
		return nil, nil, errors.New("seeding left gaps")
	}
	if err := db.insert(ctx, cts); err != nil {
		return nil, nil, err
	}
	return cts, secrets, nil
}

// benchDB is the sidecar's store for one measurement: an SQLite file in
// the work directory, or a fresh schema on a PostgreSQL server.
type benchDB struct {
	kind   string
	path   string // sqlite
	server string // postgres: the server's DSN, and the schema's
	dsn    string
	schema string
}

func newBenchDB(ctx context.Context, c benchConfig, key string) (*benchDB, error) {
	if c.store != "postgres" {
		return &benchDB{kind: "sqlite", path: filepath.Join(c.dir, key+".db")}, nil
	}
	db := &benchDB{kind: "postgres", server: c.pgDSN, schema: strings.ReplaceAll(key, "-", "_")}
	conn, err := pgx.Connect(ctx, c.pgDSN)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+db.schema); err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	u, err := url.Parse(c.pgDSN)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	q.Set("search_path", db.schema)
	u.RawQuery = q.Encode()
	db.dsn = u.String()
	return db, nil
}

func (db *benchDB) open(ctx context.Context) (store.Store, error) {
	if db.kind == "postgres" {
		return postgres.Open(ctx, db.dsn, postgres.Options{})
	}
	return sqlite.Open(ctx, db.path)
}

func (db *benchDB) sidecarEnv() []string {
	if db.kind == "postgres" {
		return []string{"TOTPGATE_STORE_DRIVER=postgres", "TOTPGATE_STORE_DSN=" + db.dsn}
	}
	return []string{"TOTPGATE_STORE_PATH=" + db.path}
}

// insert adds a user for each ciphertext, active on key version 1.
func (db *benchDB) insert(ctx context.Context, cts []string) error {
	if db.kind == "postgres" {
		conn, err := pgx.Connect(ctx, db.dsn)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.CopyFrom(ctx, pgx.Identifier{"users"},
			[]string{"id", "state", "ciphertext", "key_version", "binding", "algorithm", "digits", "period", "skew", "confirmed_at", "updated_at"},
			pgx.CopyFromSlice(len(cts), func(i int) ([]any, error) {
				return []any{userID(i), "active", cts[i], int64(1), int16(1), "SHA1", int64(6), int64(30), int64(1), int64(1), int64(1)}, nil
			}))
		if err != nil {
			return err
		}
		_, err = conn.Exec(ctx, "ANALYZE users")
		return err
	}
	sdb, err := sql.Open("sqlite", "file:"+db.path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(OFF)")
	if err != nil {
		return err
	}
	defer sdb.Close()
	n := len(cts)
	for i := 0; i < n; i += 50_000 {
		tx, err := sdb.Begin()
		if err != nil {
			return err
		}
		stmt, err := tx.Prepare(`INSERT INTO users (id, state, ciphertext, key_version, binding, algorithm, digits, period, skew, confirmed_at, updated_at)
VALUES (?, 'active', ?, 1, 1, 'SHA1', 6, 30, 1, 1, 1)`)
		if err != nil {
			return err
		}
		for j := i; j < min(i+50_000, n); j++ {
			if _, err := stmt.Exec(userID(j), cts[j]); err != nil {
				return err
			}
		}
		stmt.Close()
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// drop removes the measurement's database.
func (db *benchDB) drop() {
	if db.kind != "postgres" {
		_ = os.Remove(db.path)
		return
	}
	ctx := context.Background()
	if conn, err := pgx.Connect(ctx, db.server); err == nil {
		_, _ = conn.Exec(ctx, "DROP SCHEMA "+db.schema+" CASCADE")
		conn.Close(ctx)
	}
}
