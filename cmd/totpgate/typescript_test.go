package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The TypeScript client in examples/typescript is generated from
// openapi.yaml at build time, type-checked by tsc, and runs the full
// journeys (login, trusted devices, step-up) against this sidecar and a
// real app: the contract works beyond Go.
func TestTypeScriptClientJourney(t *testing.T) {
	t.Parallel()
	dir, err := filepath.Abs(filepath.Join("..", "..", "examples", "typescript"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", ".bin", "tsc")); err != nil {
		t.Fatalf("examples/typescript has no node_modules: run `make ts-deps` (make test does): %v", err)
	}
	build := exec.Command("npm", "run", "--silent", "build")
	build.Dir = dir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("generate + tsc: %v\n%s", err, out)
	}
	// The app's session cookie is named and POST /settings/password is a
	// step-up route, for the step-up journey (stepup.test.ts).
	e := newLoginEnv(t, "TOTPGATE_SESSION_CREDENTIALS=cookie:session", "TOTPGATE_IDENTITY_FORWARD_HEADERS=Cookie",
		"TOTPGATE_STEP_UP_ROUTES=POST /settings/password 5m")
	run := exec.Command("node", "--test", "dist/")
	run.Dir = dir
	run.Env = append(os.Environ(), "TOTPGATE_URL="+e.s.main)
	out, err := run.CombinedOutput()
	if err != nil {
		t.Fatalf("node journey: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
