package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/totpgate/totpgate/gen"
	"github.com/totpgate/totpgate/internal/testenv"
)

// replicas are several sidecar processes in front of one app, sharing one
// PostgreSQL database and one keyring, as pods of one Deployment do.
type replicas struct {
	app *loginApp
	env []*loginEnv // one per replica, all on the same app
}

func startReplicas(t *testing.T, n int, dsn string, extra ...string) *replicas {
	t.Helper()
	app := newLoginApp(t)
	keyring := filepath.Join(t.TempDir(), "keyring.json")
	env := append([]string{
		"TOTPGATE_STORE_DRIVER=postgres",
		"TOTPGATE_STORE_DSN=" + dsn,
		"TOTPGATE_KEYRING_LOCAL_PATH=" + keyring,
		"TOTPGATE_ADMIN_TOKEN=" + adminToken,
		"TOTPGATE_API_RATE_PER_SECOND=100000",
		"TOTPGATE_API_RATE_BURST=100000",
	}, extra...)
	r := &replicas{app: app}
	for range n {
		s := startSidecarIn(t, t.TempDir(), env, "--upstream", app.URL)
		c, err := gen.NewClientWithResponses(s.main)
		if err != nil {
			t.Fatal(err)
		}
		r.env = append(r.env, &loginEnv{s: s, app: app, c: c})
	}
	return r
}

func TestReplicasShareOneTruth(t *testing.T) {
	t.Parallel()
	r := startReplicas(t, 3, testenv.Postgres(t))
	a, b, c := r.env[0], r.env[1], r.env[2]

	t.Run("one valid code, 50 concurrent logins over the replicas: one passes", func(t *testing.T) {
		code, _ := a.enroll(t, "race")
		valid := code(0)
		var passed atomic.Int64
		var wg sync.WaitGroup
		for i := range 50 {
			wg.Go(func() {
				res, body, err := tryLogin(r.env[i%3].s.main, "race", valid)
				if err == nil && res.StatusCode == 200 && granted(res, body) {
					passed.Add(1)
				}
			})
		}
		wg.Wait()
		if passed.Load() != 1 {
			t.Fatalf("%d logins passed with one code, want exactly 1", passed.Load())
		}
	})

	t.Run("failures counted on different replicas lock the user everywhere", func(t *testing.T) {
		code, _ := b.enroll(t, "bob")
		for i := range 5 { // mfa.max_failures is 5
			res, body, err := tryLogin(r.env[i%3].s.main, "bob", "000000")
			if err != nil || res.StatusCode == 200 || granted(res, body) {
				t.Fatalf("wrong code %d: %v %v %s", i, err, res, body)
			}
		}
		for i, e := range r.env {
			res, body, err := tryLogin(e.s.main, "bob", code(0))
			if err != nil || res.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, `"mfa_locked"`) {
				t.Fatalf("replica %d after 5 failures spread over 3 replicas: %v %v %s", i, err, res, body)
			}
		}
	})

	t.Run("a recovery code spent on one replica fails on the others", func(t *testing.T) {
		_, recovery := c.enroll(t, "carol")
		res, body, err := tryLogin(b.s.main, "carol", recovery[0])
		if err != nil || res.StatusCode != 200 || !granted(res, body) {
			t.Fatalf("recovery code on replica 1: %v %v %s", err, res, body)
		}
		for _, e := range []*loginEnv{a, c} {
			res, body, err := tryLogin(e.s.main, "carol", recovery[0])
			if err != nil || res.StatusCode == 200 || granted(res, body) {
				t.Fatalf("spent recovery code on another replica: %v %v %s", err, res, body)
			}
		}
	})

	t.Run("a challenge issued by one replica is completed on another", func(t *testing.T) {
		code, _ := a.enroll(t, "dave")
		res, body := c.login(t, "/login", `{"user":"dave","password":"pw"}`, nil)
		var p struct {
			Code        string `json:"code"`
			ChallengeID string `json:"challenge_id"`
		}
		_ = json.Unmarshal([]byte(body), &p)
		if res.StatusCode != 401 || p.Code != "mfa_required" || p.ChallengeID == "" {
			t.Fatalf("login on replica 2: %d %s", res.StatusCode, body)
		}
		good := code(0)
		done, err := a.c.CompleteChallengeWithResponse(context.Background(), gen.ChallengeRequest{ChallengeId: p.ChallengeID, Code: &good})
		if err != nil || done.StatusCode() != 200 || !strings.Contains(string(done.Body), "SESSION-dave") {
			t.Fatalf("challenge completed on replica 0: %v %d %s", err, done.StatusCode(), done.Body)
		}
		again, _ := b.c.CompleteChallengeWithResponse(context.Background(), gen.ChallengeRequest{ChallengeId: p.ChallengeID, Code: &good})
		if again.StatusCode() != http.StatusNotFound {
			t.Fatalf("challenge spent twice across replicas: %d %s", again.StatusCode(), again.Body)
		}
	})
}

// PostgreSQL crashes and comes back while users log in through two
// replicas: logins fail closed while it is down, pass-through does not
// notice, the sidecars recover without a restart and nothing committed is
// lost.
func TestReplicasSurvivePostgresRestart(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPGServer(t)
	r := startReplicas(t, 2, pg.DSN, "TOTPGATE_STORE_STATEMENT_TIMEOUT=2s")
	const users = 16
	codes := make([]func(int64) string, users)
	for i := range users {
		codes[i], _ = r.env[i%2].enroll(t, fmt.Sprintf("u%02d", i))
	}
	// Before the crash: one login per user, so each has a committed last step.
	accepted := make([]string, users)
	for i := range users {
		accepted[i] = codes[i](0)
		res, body, err := tryLogin(r.env[i%2].s.main, fmt.Sprintf("u%02d", i), accepted[i])
		if err != nil || res.StatusCode != 200 || !granted(res, body) {
			t.Fatalf("login before the crash: %v %v %s", err, res, body)
		}
	}

	pg.Stop(t, "immediate")
	for i, e := range r.env {
		start := time.Now()
		res, body, err := tryLogin(e.s.main, "u00", codes[0](1))
		if err != nil || res.StatusCode != http.StatusServiceUnavailable || granted(res, body) || !strings.Contains(body, `"mfa_unavailable"`) {
			t.Fatalf("replica %d login while PostgreSQL is down: %v %v %s", i, err, res, body)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Fatalf("refusal took %v", took)
		}
		page, err := http.Get(e.s.main + "/some/page")
		if err != nil || page.StatusCode != 200 {
			t.Fatalf("pass-through while PostgreSQL is down: %v %v", err, page)
		}
		page.Body.Close()
		res, body, err = tryLogin(e.s.main, "nomfa-user", "")
		if err == nil && res.StatusCode == 200 && granted(res, body) {
			// A user the store cannot vouch for is refused, not waved through:
			// without the store the gate cannot know whether MFA is on.
			t.Fatalf("replica %d let a login through without asking the store: %s", i, body)
		}
	}
	pg.Start(t)

	// Recovery without restarting the sidecars; the step accepted before
	// the crash is still spent (nothing committed was lost).
	for i := range users {
		e := r.env[(i+1)%2] // the other replica than before
		user := fmt.Sprintf("u%02d", i)
		deadline := time.Now().Add(30 * time.Second)
		for {
			res, body, err := tryLogin(e.s.main, user, accepted[i])
			if err == nil && res.StatusCode == http.StatusUnauthorized && strings.Contains(body, `"mfa_invalid"`) {
				break
			}
			if err == nil && res.StatusCode == 200 {
				t.Fatalf("%s: a code accepted before the crash passed again after it: %s", user, body)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not recovered: %v %v %s", user, err, res, body)
			}
			time.Sleep(200 * time.Millisecond)
		}
		// The next step is newer than the one spent and inside the skew.
		res, body, err := tryLogin(e.s.main, user, codes[i](1))
		if err != nil || res.StatusCode != 200 || !granted(res, body) {
			t.Fatalf("%s: login after recovery: %v %v %s", user, err, res, body)
		}
	}
}
