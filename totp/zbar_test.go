package totp_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/totpgate/totpgate/totp"
)

// The QR PNG decodes, with an independent decoder (Debian zbarimg), to
// exactly the otpauth URI.
func TestQRDecodesToURI(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("zbarimg")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("zbarimg not on PATH; CI must install it (Debian: apt-get install zbar-tools)")
		}
		t.Skip("zbarimg not on PATH")
	}
	secret, err := totp.GenerateSecret(20)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ issuer, account string }{
		{"totpgate", "alice@example.com"},
		{"Acme Corp: Prod", "bob+mfa@example.org"},
	} {
		uri := totp.URI(tc.issuer, tc.account, secret, totp.DefaultParams())
		png, err := totp.QRPNG(uri, 256)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "qr.png")
		if err := os.WriteFile(path, png, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "--quiet", "--raw", path).Output()
		if err != nil {
			t.Fatalf("zbarimg: %v", err)
		}
		if got := strings.TrimSpace(string(out)); got != uri {
			t.Errorf("QR decodes to %q, want %q", got, uri)
		}
	}
}
