package main

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/totpgate/totpgate/internal/testenv"
)

// startDemo runs `totpgate demo` on free loopback ports and returns the
// URL it says to open and the metrics URL.
func startDemo(t *testing.T) (open, metrics string) {
	t.Helper()
	cmd := cliCommand(t.TempDir(), nil, "demo", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--dir", t.TempDir())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr testenv.LockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	urlOf := regexp.MustCompile(`^\s+(Open|Metrics)\s+(http://\S+)`)
	deadline := time.After(30 * time.Second)
	for open == "" || metrics == "" {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("demo exited:\n%s", stderr.String())
			}
			if m := urlOf.FindStringSubmatch(line); m != nil {
				if m[1] == "Open" {
					open = strings.TrimSuffix(m[2], "/")
				} else {
					metrics = m[2]
				}
			}
		case <-deadline:
			t.Fatalf("demo did not say what to open:\n%s", stderr.String())
		}
	}
	go func() {
		for range lines {
		}
	}()
	return open, metrics
}

// The demo works with nothing else installed: its page, a login through
// the gate, the settings page and the metrics.
func TestDemo(t *testing.T) {
	t.Parallel()
	open, metrics := startDemo(t)
	for _, u := range []string{open + "/", open + "/mfa/", metrics} {
		code, _ := get(t, u)
		if code != 200 {
			t.Fatalf("GET %s = %d", u, code)
		}
	}
	res, err := http.Post(open+"/login", "application/json", strings.NewReader(`{"username":"bob","password":"demo"}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || len(res.Cookies()) != 1 {
		t.Fatalf("demo login of bob (no MFA) = %d, cookies %v", res.StatusCode, res.Cookies())
	}
}

// A person walks the demo in headless Chromium: password login, turning
// on two-factor login with a phone-sized window, then logging in with a
// code and with a recovery code.
func TestDemoInChromium(t *testing.T) {
	t.Parallel()
	script, artifacts := browserScript(t, "demo")
	open, _ := startDemo(t)
	cmd := exec.Command("node", script)
	cmd.Env = append(os.Environ(), "DEMO_URL="+open, "ARTIFACTS="+artifacts)
	out, runErr := cmd.Output()
	var got struct {
		Steps   []string
		Codes   []string
		Errors  []string
		Failure string
	}
	if err := json.Unmarshal(out, &got); err != nil || runErr != nil {
		var stderr []byte
		if ee, ok := runErr.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("browser run: %v %v\n%s\n%s", runErr, err, out, stderr)
	}
	t.Logf("screenshots in %s; steps %v", artifacts, got.Steps)
	if len(got.Steps) != 4 || len(got.Codes) != 10 {
		t.Fatalf("walked %v (codes %d), want all four steps", got.Steps, len(got.Codes))
	}
	if len(got.Errors) > 0 {
		t.Errorf("console errors: %v", got.Errors)
	}
}
