package totp_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/totpgate/totpgate/totp"
)

// Codes from the npm otplib (another independent implementation) match Code
// for every algorithm and length. otplib is installed project-locally into
// .tools/npm by `make test`.
func TestOtplibAgrees(t *testing.T) {
	t.Parallel()
	mod, _ := filepath.Abs("../.tools/npm/node_modules/otplib")
	node, err := exec.LookPath("node")
	if _, serr := os.Stat(mod); err != nil || serr != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("node or otplib missing; `make test` installs otplib into .tools/npm")
		}
		t.Skip("node or otplib missing (run `make test`)")
	}
	secret, err := totp.GenerateSecret(32)
	if err != nil {
		t.Fatal(err)
	}
	b32 := totp.EncodeSecret(secret)
	at := time.Date(2026, 11, 22, 8, 0, 7, 0, time.UTC)
	for _, alg := range []string{totp.SHA1, totp.SHA256, totp.SHA512} {
		for _, digits := range []int{6, 8} {
			p := totp.Params{Algorithm: alg, Digits: digits, Period: 30, Skew: 1}
			script := fmt.Sprintf(`const {authenticator} = require(%q);
authenticator.options = {digits: %d, step: 30, algorithm: %q, epoch: %d};
process.stdout.write(authenticator.generate(%q));`, mod, digits, strings.ToLower(alg), at.UnixMilli(), b32)
			out, err := exec.Command(node, "-e", script).Output()
			if err != nil {
				t.Fatalf("node: %v", err)
			}
			if got := totp.Code(secret, p.Step(at), p); got != string(out) {
				t.Errorf("%s/%d: Code = %s, otplib = %s", alg, digits, got, out)
			}
		}
	}
}
