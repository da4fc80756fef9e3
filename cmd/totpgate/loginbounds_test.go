package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// The gate holds what it judges in memory, so what it may hold is bounded:
// the login request by login.max_request_bytes (the attacker's side), the
// answer by login.max_answer_bytes, and both by login.max_concurrent. The
// numbers are the real binary's peak RSS (VmHWM), as the large-transfer
// test measures it.
func TestLoginMemoryIsBounded(t *testing.T) {
	t.Parallel()
	// The app answers the login of bob (no MFA) with ~900 KiB of JSON.
	big := bigLoginAnswer(900 << 10)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write(big)
	}))
	t.Cleanup(up.Close)
	s := startSidecar(t, nil, "--upstream", up.URL)
	before := s.rssHighWaterKiB(t)

	// 40 unauthenticated clients each send 1 MiB of JSON to the login route.
	body := []byte(`{"username":"x","pad":"` + strings.Repeat("a", 1<<20) + `"}`)
	statuses := parallelPosts(t, 40, s.main+"/login", body)
	for _, st := range statuses {
		if st != http.StatusRequestEntityTooLarge && st != 0 { // 0: the server closed the upload early, as it may
			t.Fatalf("1 MiB login body answered %d, want 413", st)
		}
	}
	afterRequests := s.rssHighWaterKiB(t)

	// 40 logins at once whose answers are 900 KiB each.
	statuses = parallelPosts(t, 40, s.main+"/login", []byte(`{"username":"bob","password":"pw"}`))
	for _, st := range statuses {
		if st != http.StatusOK {
			t.Fatalf("login with a 900 KiB answer = %d, want 200 (bob has no MFA)", st)
		}
	}
	afterAnswers := s.rssHighWaterKiB(t)
	t.Logf("sidecar peak RSS: %d KiB at start, %d KiB after 40 x 1 MiB login bodies, %d KiB after 40 x 900 KiB answers", before, afterRequests, afterAnswers)
	// The old gate grew by ~1.5 GB on the first load. Request bodies are
	// cut at 64 KiB; an answer costs about its size while judged (read
	// once, sized from Content-Length, scanned in place), 40 at once.
	// Measured without the race detector: +4 MiB and +48 MiB.
	if grew := afterRequests - before; grew > memoryFactor*16<<10 {
		t.Errorf("40 oversized login bodies grew peak RSS by %d KiB", grew)
	}
	if grew := afterAnswers - before; grew > memoryFactor*80<<10 {
		t.Errorf("40 large login answers grew peak RSS by %d KiB", grew)
	}
}

func bigLoginAnswer(size int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"user":{"id":"bob"},"items":[`)
	for i := 0; b.Len() < size; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"n":%d,"label":"item %d"}`, i, i)
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

func parallelPosts(t *testing.T, n int, target string, body []byte) []int {
	t.Helper()
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", target, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			statuses[i] = res.StatusCode
		})
	}
	wg.Wait()
	return statuses
}

// An answer larger than login.max_answer_bytes is a 502 problem, an audit
// event and a log line: never a panic or a cut connection.
func TestOversizedLoginAnswer(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(bigLoginAnswer(3 << 20))
	}))
	t.Cleanup(up.Close)
	s := startSidecar(t, []string{"TOTPGATE_LOGIN_MAX_ANSWER_BYTES=1048576"}, "--upstream", up.URL)
	res, err := http.Post(s.main+"/login", "application/json", strings.NewReader(`{"username":"bob"}`))
	if err != nil {
		t.Fatalf("the connection was cut: %v", err)
	}
	defer res.Body.Close()
	var p struct{ Code string }
	json.NewDecoder(res.Body).Decode(&p)
	if res.StatusCode != http.StatusBadGateway || p.Code != "upstream_unavailable" || res.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("oversized answer = %d %q (%s), want 502 upstream_unavailable problem", res.StatusCode, p.Code, res.Header.Get("Content-Type"))
	}
	waitForLog(t, s, `"event":"login_refused"`, `"outcome":"oversized_answer"`)
	waitForLog(t, s, "larger than login.max_answer_bytes")
	if strings.Contains(s.logs.String(), "panic") {
		t.Fatal("the sidecar logged a panic")
	}
}

// login.max_concurrent caps the gated requests in flight; the rest wait
// briefly, then get 503 with Retry-After, while pass-through traffic flows.
func TestLoginConcurrencyCap(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/login") {
			<-release
		}
		w.WriteHeader(http.StatusUnauthorized)
	}))
	t.Cleanup(up.Close)
	t.Cleanup(func() { close(release) })
	s := startSidecar(t, []string{"TOTPGATE_LOGIN_MAX_CONCURRENT=1"}, "--upstream", up.URL)
	go http.Post(s.main+"/login", "application/json", strings.NewReader(`{}`)) // takes the one slot
	time.Sleep(300 * time.Millisecond)
	res, err := http.Post(s.main+"/login", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
		t.Fatalf("login over the cap = %d (Retry-After %q), want 503 with Retry-After", res.StatusCode, res.Header.Get("Retry-After"))
	}
	if code, _ := get(t, s.main+"/other"); code != http.StatusUnauthorized {
		t.Fatalf("pass-through while logins are capped = %d", code)
	}
	waitForLog(t, s, `"event":"login_refused"`, `"outcome":"busy"`)
}

// waitForLog waits until one log line holds every part.
func waitForLog(t *testing.T, s *sidecar, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for line := range strings.SplitSeq(s.logs.String(), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q", parts)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
