package config_test

import (
	"flag"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/totpgate/totpgate/config"
)

func loadWith(t *testing.T, file string, env map[string]string, args ...string) config.Config {
	t.Helper()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	l := config.NewLoader(fs)
	if file != "" {
		args = append([]string{"--config", file}, args...)
	}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	c, err := l.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestStepUpRoutesFromFileEnvAndFlag(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "c.yaml")
	writeFile(t, file, `session:
  credentials: [cookie:sessionid]
step_up:
  routes:
    - {path: /settings/password, methods: [POST], max_age: 5m}
    - path: /account/delete
      max_age: 30s
`)
	want := config.StepUpRoutes{
		{Path: "/settings/password", Methods: []string{"POST"}, MaxAge: 5 * time.Minute},
		{Path: "/account/delete", MaxAge: 30 * time.Second},
	}
	c := loadWith(t, file, nil)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := c.StepUp.Routes.String(); got != want.String() || got != "POST /settings/password 5m0s, /account/delete 30s" {
		t.Fatalf("routes from the file = %q", got)
	}
	// The environment and flags spell them on one line, and replace the file's.
	c = loadWith(t, file, map[string]string{"TOTPGATE_STEP_UP_ROUTES": "PUT|patch /profile 1m"})
	if got := c.StepUp.Routes.String(); got != "PUT|patch /profile 1m0s" {
		t.Fatalf("routes from the environment = %q", got)
	}
	c = loadWith(t, file, nil, "--step-up.routes", "POST /settings/password 5m, /account/delete 30s")
	if got := c.StepUp.Routes.String(); got != want.String() {
		t.Fatalf("routes from a flag = %q", got)
	}
	// What String renders, ParseStepUpRoutes reads back.
	back, err := config.ParseStepUpRoutes(want.String())
	if err != nil || back.String() != want.String() {
		t.Fatalf("round trip = %q, %v", back, err)
	}
}

func TestStepUpValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	c := config.Default()
	c.Identity.IntrospectPath = ""
	c.StepUp.Routes = config.StepUpRoutes{
		{Path: "settings", MaxAge: time.Minute},
		{Path: "/a", MaxAge: 0},
		{Path: "/b", MaxAge: 25 * time.Hour},
		{Path: "/c", Methods: []string{"PO ST"}, MaxAge: time.Minute},
		{Path: "/mfa/status", MaxAge: time.Minute},
	}
	c.StepUp.MaxRequestBytes = 10
	c.StepUp.IdentityCacheTTL = time.Hour
	c.StepUp.IdentityCacheEntries = 0
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate() = nil")
	}
	for _, want := range []string{`path "settings" must start with /`, "/a: max_age 0s", "/b: max_age 25h0m0s", `method "PO ST"`,
		"/mfa/status is under api.prefix", "step_up.max_request_bytes", "step_up.identity_cache_ttl", "step_up.identity_cache_entries",
		"set session.credentials too", "set identity.introspect_path too"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() error lacks %q:\n%v", want, err)
		}
	}
	if _, err := config.ParseStepUpRoutes("POST /a soon, /b, GET POST /c 1m"); err == nil || strings.Count(err.Error(), "\n") != 2 {
		t.Fatalf("ParseStepUpRoutes = %v, want three problems", err)
	}
	// Without routes nothing else is needed.
	c = config.Default()
	c.Identity.IntrospectPath = "/api/me"
	if err := c.Validate(); err != nil {
		t.Fatalf("no routes: %v", err)
	}
}
