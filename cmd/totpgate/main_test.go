package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/totpgate/totpgate/internal/testenv"
)

// The test binary doubles as the totpgate binary: a child started with
// TOTPGATE_TEST_AS_MAIN=1 runs main() with its own arguments. The tests then
// drive a real process, with real signals and its own memory.
func TestMain(m *testing.M) {
	if os.Getenv("TOTPGATE_TEST_AS_MAIN") == "1" {
		var args []string
		if err := json.Unmarshal([]byte(os.Getenv("TOTPGATE_TEST_ARGS")), &args); err != nil {
			panic(err)
		}
		os.Args = append([]string{"totpgate"}, args...)
		main()
		os.Exit(0)
	}
	if err := installContract(); err != nil {
		panic(err)
	}
	code := m.Run()
	if code == 0 {
		code = contract.report()
	}
	os.Exit(code)
}

// sidecar is a running totpgate process.
type sidecar struct {
	cmd         *exec.Cmd
	main, admin string // base URLs
	logs        *testenv.LockedBuffer
	exited      chan struct{} // closed when the process has exited
	exitErr     error
}

// startSidecar runs `totpgate serve` on random loopback ports with a clean
// environment (only env is set) and waits until it says it started.
func startSidecar(t *testing.T, env []string, args ...string) *sidecar {
	t.Helper()
	return startSidecarIn(t, t.TempDir(), env, args...)
}

// startSidecarIn is startSidecar with a given working directory, so a test
// can restart a sidecar on the same state.
func startSidecarIn(t *testing.T, dir string, env []string, args ...string) *sidecar {
	t.Helper()
	args = append([]string{"serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"}, args...)
	cmd := exec.Command(os.Args[0])
	cmd.Dir = dir
	encoded, _ := json.Marshal(args)
	cmd.Env = append([]string{"TOTPGATE_TEST_AS_MAIN=1", "TOTPGATE_TEST_ARGS=" + string(encoded), "HOME=" + cmd.Dir}, env...)
	pr, pw := io.Pipe()
	logs := &testenv.LockedBuffer{}
	cmd.Stderr = io.MultiWriter(logs, pw) // logs first: a line is in logs before the scanner sees it
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &sidecar{cmd: cmd, logs: logs, exited: make(chan struct{})}
	go func() { s.exitErr = cmd.Wait(); pw.Close(); close(s.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-s.exited
		if t.Failed() {
			t.Logf("sidecar logs:\n%s", logs.String())
		}
	})
	started := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == "totpgate started" {
				started <- line
			}
		}
		io.Copy(io.Discard, pr)
	}()
	select {
	case line := <-started:
		s.main, s.admin = "http://"+line["listen"].(string), "http://"+line["admin_listen"].(string)
		contract.watch(s.main, "main")
		contract.watch(s.admin, "admin")
	case <-s.exited:
		t.Fatalf("sidecar exited before starting: %v\n%s", s.exitErr, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("sidecar did not start in time:\n%s", logs.String())
	}
	return s
}

func (s *sidecar) rssHighWaterKiB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	t.Fatal("VmHWM not found")
	return 0
}

func TestServeWithEmbeddedDefaults(t *testing.T) {
	t.Parallel()
	s := startSidecar(t, nil)
	logs := s.logs.String()
	for _, want := range []string{`"upstream":"http://127.0.0.1:3000"`, "upstream is not reachable yet"} {
		if !strings.Contains(logs, want) {
			t.Errorf("start-up log lacks %q:\n%s", want, logs)
		}
	}
	if code, _ := get(t, s.admin+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d", code)
	}
	code, body := get(t, s.admin+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `"name":"upstream","status":"failing"`) {
		t.Errorf("/readyz = %d %s, want 503 naming the upstream", code, body)
	}
}

func TestListenerSeparation(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "app")
	}))
	t.Cleanup(up.Close)
	s := startSidecar(t, []string{"TOTPGATE_ADMIN_TOKEN=an-admin-token-of-some-length"}, "--upstream", up.URL)
	tests := []struct {
		name, url, auth string
		want            int
	}{
		{"readyz ready with upstream up", s.admin + "/readyz", "", 200},
		{"metrics on admin", s.admin + "/metrics", "", 200},
		{"user API not on admin listener", s.admin + "/mfa/status", "", 404},
		{"admin API needs a token", s.admin + "/admin/keys", "", 401},
		{"admin API refuses a wrong token", s.admin + "/admin/keys", "Bearer wrong", 401},
		{"admin API with the token", s.admin + "/admin/keys", "Bearer an-admin-token-of-some-length", 200},
		{"admin API not on main listener", s.main + "/mfa/admin/keys", "Bearer an-admin-token-of-some-length", 404},
		{"admin path on main listener goes to the app", s.main + "/admin/keys", "", 200},
		{"spec served under the prefix", s.main + "/mfa/openapi.yaml", "", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", tt.url, nil)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != tt.want {
				t.Errorf("GET %s = %d, want %d", tt.url, res.StatusCode, tt.want)
			}
		})
	}
}

func TestSpecViolationsNameTheField(t *testing.T) {
	t.Parallel()
	s := startSidecar(t, nil)
	tests := []struct {
		name, path, contentType, body string
		wantStatus                    int
		wantCode, wantField           string
	}{
		{"wrong type", "/mfa/enroll/confirm", "application/json", `{"code": 123456}`, 400, "validation_failed", "body.code"},
		{"missing field", "/mfa/challenge", "application/json", `{"code": "123456"}`, 400, "validation_failed", "body.challenge_id"},
		{"bad pattern", "/mfa/challenge", "application/json", `{"challenge_id": "short", "code": "123456"}`, 400, "validation_failed", "body.challenge_id"},
		{"too short", "/mfa/disable", "application/json", `{"code": "1"}`, 400, "validation_failed", "body.code"},
		{"not JSON", "/mfa/disable", "application/json", `{"code": `, 400, "validation_failed", "body"},
		{"wrong media type", "/mfa/disable", "text/plain", `code=123456`, 415, "unsupported_media_type", "body"},
		{"unknown endpoint", "/mfa/nope", "application/json", `{}`, 404, "not_found", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := http.Post(s.main+tt.path, tt.contentType, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var p struct {
				Code   string `json:"code"`
				Status int    `json:"status"`
				Errors []struct {
					Field, Message string
				} `json:"errors"`
			}
			if ct := res.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("Content-Type = %q", ct)
			}
			if err := json.NewDecoder(res.Body).Decode(&p); err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tt.wantStatus || p.Code != tt.wantCode || p.Status != tt.wantStatus {
				t.Fatalf("got %d %q, want %d %q", res.StatusCode, p.Code, tt.wantStatus, tt.wantCode)
			}
			if tt.wantField == "" {
				return
			}
			var fields []string
			for _, e := range p.Errors {
				fields = append(fields, e.Field)
			}
			if !strings.Contains(strings.Join(fields, " "), tt.wantField) {
				t.Errorf("errors name %v, want %q among them", fields, tt.wantField)
			}
		})
	}
}

// SIGTERM lets an in-flight request finish before the process exits 0.
func TestGracefulShutdownOnSIGTERM(t *testing.T) {
	t.Parallel()
	inFlight := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(inFlight)
		time.Sleep(time.Second)
		io.WriteString(w, "finished")
	}))
	t.Cleanup(up.Close)
	s := startSidecar(t, nil, "--upstream", up.URL)
	type result struct {
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		res, err := http.Get(s.main + "/slow")
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		done <- result{string(b), err}
	}()
	<-inFlight
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.body != "finished" {
		t.Fatalf("in-flight request: body %q, err %v", r.body, r.err)
	}
	select {
	case <-s.exited:
		if s.exitErr != nil {
			t.Fatalf("exit after SIGTERM: %v", s.exitErr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("sidecar did not exit after SIGTERM")
	}
	if !strings.Contains(s.logs.String(), `"msg":"stopped"`) {
		t.Errorf("no clean stop in logs:\n%s", s.logs.String())
	}
}

// 50 MiB each way through the real process; its peak RSS shows nothing was
// buffered whole.
func TestLargeTransfersKeepMemoryBounded(t *testing.T) {
	t.Parallel()
	const size = 50 << 20
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodPut:
			h := sha256.New()
			n, _ := io.Copy(h, r.Body)
			fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
		default:
			w.Header().Set("Content-Length", strconv.Itoa(size))
			chunk := bytes.Repeat([]byte("z"), 64<<10)
			for range size / len(chunk) {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		}
	}))
	t.Cleanup(up.Close)
	s := startSidecar(t, nil, "--upstream", up.URL)
	before := s.rssHighWaterKiB(t)

	payload := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	want := sha256.Sum256(payload)
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPut, s.main+"/upload", bytes.NewReader(payload))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(got) != fmt.Sprintf("%d %x", size, want) {
		t.Fatalf("upload: upstream saw %q", got)
	}
	res, err = http.Get(s.main + "/download")
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if err != nil || n != size {
		t.Fatalf("download: %d bytes, err %v", n, err)
	}
	after := s.rssHighWaterKiB(t)
	t.Logf("sidecar peak RSS: %d KiB before, %d KiB after 2 x 50 MiB", before, after)
	// Buffering either body would add 50 MiB; streaming adds a few buffers.
	if grew := after - before; grew > 20<<10 {
		t.Errorf("peak RSS grew by %d KiB moving 50 MiB each way: bodies are being buffered", grew)
	}
}

func TestRunReportsEveryConfigProblem(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"TOTPGATE_UPSTREAM_URL":    "ftp://nowhere",
		"TOTPGATE_API_PREFIX":      "no-slash",
		"TOTPGATE_TRUSTED_PROXIES": "not-a-cidr",
		"TOTPGATE_LOG_LEVEL":       "loud",
	}
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"check-config"}, func(k string) string { return env[k] }, &stdout, &stderr)
	if err == nil {
		t.Fatal("check-config accepted a broken configuration")
	}
	for _, want := range []string{"upstream.url", "api.prefix", "trusted_proxies", "log.level"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestCheckConfigHidesSecrets(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	env := map[string]string{"TOTPGATE_ADMIN_TOKEN": "a-very-secret-admin-token"}
	if err := run(context.Background(), []string{"check-config"}, func(k string) string { return env[k] }, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stdout.String(), env["TOTPGATE_ADMIN_TOKEN"]) || !strings.Contains(stdout.String(), "configuration is valid") {
		t.Fatalf("check-config output:\n%s", stdout.String())
	}
}

// check-config explains the step-up routes, and refuses them without the
// session credentials they identify the caller by.
func TestCheckConfigStepUp(t *testing.T) {
	t.Parallel()
	env := map[string]string{"TOTPGATE_STEP_UP_ROUTES": "POST /settings/password 5m, /account/delete 30s"}
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"check-config"}, func(k string) string { return env[k] }, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "step_up.routes: set session.credentials too") {
		t.Fatalf("step-up routes without session credentials: %v", err)
	}
	env["TOTPGATE_SESSION_CREDENTIALS"] = "cookie:sessionid"
	stdout.Reset()
	if err := run(context.Background(), []string{"check-config"}, func(k string) string { return env[k] }, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"step_up.routes=POST /settings/password 5m0s, /account/delete 30s\n",
		"# step-up: /settings/password (POST) needs a second factor given within 5m0s",
		"# step-up: /account/delete (every method) needs a second factor given within 30s",
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("check-config output lacks %q:\n%s", want, stdout.String())
		}
	}
}

func TestUnknownCommand(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"frobnicate"}, os.Getenv, &stdout, &stderr); err == nil || !strings.Contains(stderr.String(), "Usage") {
		t.Fatalf("err = %v, stderr = %q", err, stderr.String())
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// The Dockerfile copies a CGO_ENABLED=0 build into a distroless image with
// no libc: the binary must be static and run on its own.
func TestStaticBinary(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "totpgate")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v\n%s", err, b)
	}
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("binary has an ELF interpreter: it is dynamically linked")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Fatalf("binary needs shared libraries: %v", libs)
	}
	v, err := exec.Command(out, "version").Output()
	if err != nil || !strings.HasPrefix(string(v), "totpgate ") {
		t.Fatalf("static binary version: %q, %v", v, err)
	}
}
