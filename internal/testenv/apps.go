package testenv

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The upstream apps (test/apps): real web-framework apps the differential
// security tests put behind totpgate. Both know the users alice, bob,
// carol, dave, erin, frank, grace, heidi, ivan and judy, all with password
// "pw", and answer
//
//	GET  /        "home <user or anonymous>", and a session cookie even
//	              to an anonymous visitor
//	     login    Express: /login (any method, JSON, text/plain JSON or
//	              form body, query string on GET; 200 JSON
//	              {"user":{"id":...}}, 401 on failure); Django: /login/
//	              (the stock LoginView form; 302 to / on success, the
//	              form again with 200 on failure)
//	GET  /api/me  200 {"id": user}, else 401
//	POST logout   Express /logout, Django /logout/
//	POST /settings/password/   a sensitive route for the step-up tests:
//	              with the app session 200 {"ok":true,"user":...,"changes":n}
//	              and counted, else 401 (Express takes it without the slash
//	              too)
//	GET  /settings/password/count/   200 {"count": n}: how many times the
//	              password change ran in this process
//
// The login mode is LoginRegenerate (a fresh session id at login, what
// both frameworks' docs say to do) or LoginInPlace (the user is written
// into the session the client already had: session fixation, on purpose).
const (
	LoginRegenerate = "regenerate"
	LoginInPlace    = "inplace"
)

// AppUsers are the users both apps know; AppPassword is each one's
// password.
var AppUsers = []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"}

// AppPassword is the password of every AppUsers user.
const AppPassword = "pw"

// pythonBin is Debian's interpreter, where apt's python3-django lives (not
// whatever python3 comes first on PATH).
const pythonBin = "/usr/bin/python3"

// Express starts test/apps/express (Express 4 + express-session, cookie
// connect.sid, gzip on every answer the client accepts it for) in the
// given login mode on a free loopback port, stops it when the test ends,
// and returns its base URL, http://127.0.0.1:PORT.
//
// Missing npm packages fail the test with the command that installs them
// (`make app-deps`); TOTPGATE_SKIP_APPS=1 skips instead.
func Express(t testing.TB, mode string) string {
	t.Helper()
	checkMode(t, mode)
	dir := filepath.Join(appsRoot(t), "express")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", ".package-lock.json")); err != nil {
		missingApp(t, "Express", "no npm packages in "+filepath.Join(dir, "node_modules"))
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missingApp(t, "Express", "node is not on PATH")
	}
	return startApp(t, "express", dir, []string{node, "server.js"}, func(port int) []string {
		return []string{"PORT=" + fmt.Sprint(port), "LOGIN_MODE=" + mode}
	})
}

// Django starts test/apps/django (Debian's python3-django; SessionMiddleware
// with cookie sessionid, GZipMiddleware, CommonMiddleware with
// APPEND_SLASH, the stock LoginView at /login/) in the given login mode
// on a free loopback port, with a fresh SQLite database in the test's
// temporary directory, stops it when the test ends, and returns its base
// URL. With userHeader every answer to a request that is authenticated
// once the view has run carries X-User-Id: <username>.
//
// A missing Django fails the test with the command that installs it
// (`make app-deps`); TOTPGATE_SKIP_APPS=1 skips instead.
func Django(t testing.TB, mode string, userHeader bool) string {
	t.Helper()
	checkMode(t, mode)
	dir := filepath.Join(appsRoot(t), "django")
	if err := djangoCheck(); err != nil {
		missingApp(t, "Django", err.Error())
	}
	db := filepath.Join(t.TempDir(), "django.sqlite3")
	header := "0"
	if userHeader {
		header = "1"
	}
	return startApp(t, "django", dir, []string{pythonBin, "run.py"}, func(port int) []string {
		return []string{
			"PORT=" + fmt.Sprint(port), "LOGIN_MODE=" + mode, "USER_HEADER=" + header,
			"DJANGO_DB=" + db, "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1",
		}
	})
}

func checkMode(t testing.TB, mode string) {
	t.Helper()
	if mode != LoginRegenerate && mode != LoginInPlace {
		t.Fatalf("testenv: login mode %q: want %q or %q", mode, LoginRegenerate, LoginInPlace)
	}
}

func missingApp(t testing.TB, app, why string) {
	t.Helper()
	if os.Getenv("TOTPGATE_SKIP_APPS") == "1" {
		t.Skipf("TOTPGATE_SKIP_APPS=1: %s upstream tests skipped (%s)", app, why)
	}
	t.Fatalf("testenv: the %s upstream app cannot start: %s: install its dependencies with `make app-deps` (make test does), or set TOTPGATE_SKIP_APPS=1 to skip these tests", app, why)
}

// djangoCheck is run once per test binary: can Debian's python import
// django?
var djangoCheck = sync.OnceValue(func() error {
	out, err := exec.Command(pythonBin, "-c", "import django").CombinedOutput()
	if err != nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		return fmt.Errorf("%s cannot import django: %v: %s", pythonBin, err, lines[len(lines)-1])
	}
	return nil
})

// appsRoot is test/apps at the module root: found from the working
// directory (go test runs in the package's directory), else from this
// file's location at build time.
func appsRoot(t testing.TB) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		_, file, _, ok := runtime.Caller(0)
		if !ok {
			t.Fatalf("testenv: %v", err)
		}
		root = filepath.Join(filepath.Dir(file), "..", "..")
		if _, serr := os.Stat(filepath.Join(root, "go.mod")); serr != nil {
			t.Fatalf("testenv: %v, and none at %s", err, root)
		}
	}
	return filepath.Join(root, "test", "apps")
}

// startApp runs argv in dir as a child in its own process group, with a
// minimal environment plus env(port), until it answers HTTP on
// 127.0.0.1:port. The group is killed when the test ends; the child's
// output is logged if the test failed. A port another process took
// between freePort and the child's bind is retried on a new port.
func startApp(t testing.TB, name, dir string, argv []string, env func(port int) []string) string {
	t.Helper()
	home := t.TempDir()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port := freePort(t)
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Dir = dir
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "LANG=C.UTF-8"}, env(port)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		logs := &LockedBuffer{}
		cmd.Stdout = logs
		cmd.Stderr = logs
		if err := cmd.Start(); err != nil {
			t.Fatalf("testenv: start %s: %v", name, err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		stop := func() {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		base := fmt.Sprintf("http://127.0.0.1:%d", port)
		err := waitHTTP(base, exited, 30*time.Second)
		if err == nil {
			t.Cleanup(func() {
				stop()
				if t.Failed() {
					t.Logf("%s upstream (%s) output:\n%s", name, base, logs.String())
				}
			})
			return base
		}
		stop()
		lastErr = fmt.Errorf("%w\n%s output:\n%s", err, name, logs.String())
		out := logs.String()
		if !errors.Is(err, errExited) || !(strings.Contains(out, "EADDRINUSE") || strings.Contains(out, "Address already in use")) {
			break
		}
	}
	t.Fatalf("testenv: %s upstream did not start: %v", name, lastErr)
	return ""
}

var errExited = errors.New("exited before answering HTTP")

// waitHTTP polls GET base/ until any HTTP answer comes back.
func waitHTTP(base string, exited <-chan struct{}, timeout time.Duration) error {
	client := &http.Client{
		Timeout:       2 * time.Second,
		Transport:     &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-exited:
			return errExited
		default:
		}
		resp, err := client.Get(base + "/")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no HTTP answer at %s within %s: %v", base, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
