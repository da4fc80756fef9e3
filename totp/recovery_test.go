package totp_test

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/totpgate/totpgate/totp"
)

var recoveryFormat = regexp.MustCompile(`^[0-9a-hjkmnp-tv-z]{5}(-[0-9a-hjkmnp-tv-z]{5}){3}$`)

func TestNewRecoveryCodes(t *testing.T) {
	t.Parallel()
	codes, err := totp.NewRecoveryCodes(10)
	if err != nil {
		t.Fatal(err)
	}
	if len(codes) != 10 {
		t.Fatalf("got %d codes, want 10", len(codes))
	}
	seen := map[string]bool{}
	for _, c := range codes {
		if !recoveryFormat.MatchString(c) {
			t.Errorf("code %q is not xxxxx-xxxxx-xxxxx-xxxxx in Crockford base32", c)
		}
		n, ok := totp.NormalizeRecoveryCode(c)
		if !ok || len(n) != 20 || totp.FormatRecoveryCode(n) != c {
			t.Errorf("code %q does not normalize and format back: %q, %v", c, n, ok)
		}
		if !totp.LooksLikeRecoveryCode(c) {
			t.Errorf("LooksLikeRecoveryCode(%q) = false", c)
		}
		if seen[c] {
			t.Errorf("duplicate code %q", c)
		}
		seen[c] = true
	}
	for _, n := range []int{0, -1, totp.MaxRecoveryCodes + 1} {
		if _, err := totp.NewRecoveryCodes(n); err == nil {
			t.Errorf("NewRecoveryCodes(%d) succeeded", n)
		}
	}
}

// TestRecoveryCodeEntropy checks the generator uses the whole alphabet at
// every position and roughly uniformly: 20 symbols x 5 bits = 100 bits only
// if no position or symbol is favoured.
func TestRecoveryCodeEntropy(t *testing.T) {
	t.Parallel()
	const sets, per = 40, 50 // 2000 codes, 40000 symbols
	var counts [20][32]int
	var total [32]int
	alphabet := "0123456789abcdefghjkmnpqrstvwxyz"
	for range sets {
		codes, err := totp.NewRecoveryCodes(per)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range codes {
			n, _ := totp.NormalizeRecoveryCode(c)
			for i := range len(n) {
				s := strings.IndexByte(alphabet, n[i])
				counts[i][s]++
				total[s]++
			}
		}
	}
	// Each symbol is expected 1250 times overall (sd ~35); allow +-25%.
	for s, n := range total {
		if n < 937 || n > 1563 {
			t.Errorf("symbol %q appears %d times, expected about 1250", alphabet[s], n)
		}
	}
	// Every position sees most symbols (expected 62.5 each).
	for i := range counts {
		missing := 0
		for _, n := range counts[i] {
			if n == 0 {
				missing++
			}
		}
		if missing > 0 {
			t.Errorf("position %d never used %d symbols", i, missing)
		}
	}
}

func TestNormalizeRecoveryCode(t *testing.T) {
	t.Parallel()
	const canon = "0123456789abcdefghjk"
	tests := []struct {
		name, in, want string
		ok             bool
	}{
		{"display form", "01234-56789-abcde-fghjk", canon, true},
		{"bare", canon, canon, true},
		{"upper case", "01234-56789-ABCDE-FGHJK", canon, true},
		{"spaces", " 01234 56789 abcde fghjk\n", canon, true},
		{"mixed separators", "0123-4567 89ab-cdef ghjk", canon, true},
		{"O for 0", "o1234-56789-abcde-fghjk", canon, true},
		{"I and L for 1", "0i234-56789-abcde-fghjk", canon, true},
		{"L for 1", "0L234-56789-abcde-fghjk", canon, true},
		{"too short", "01234-56789-abcde-fghj", "", false},
		{"too long", "01234-56789-abcde-fghjkm", "", false},
		{"u not in alphabet", "01234-56789-abcde-fghju", "", false},
		{"punctuation", "01234_56789_abcde_fghjk", "", false},
		{"non-ASCII", "01234-56789-abcdé-fghjk", "", false},
		{"full-width", "０1234-56789-abcde-fghjk", "", false},
		{"TOTP code", "123456", "", false},
		{"empty", "", "", false},
		{"very long", strings.Repeat("-", 100) + canon, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := totp.NormalizeRecoveryCode(tt.in)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("NormalizeRecoveryCode(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestHashRecoveryCode(t *testing.T) {
	t.Parallel()
	key := []byte("server-side recovery hmac key 32")
	codes, err := totp.NewRecoveryCodes(1)
	if err != nil {
		t.Fatal(err)
	}
	code, _ := totp.NormalizeRecoveryCode(codes[0])

	a := totp.HashRecoveryCode(key, "alice", code)
	if len(a) != 32 {
		t.Fatalf("hash is %d bytes, want 32", len(a))
	}
	if !bytes.Equal(a, totp.HashRecoveryCode(key, "alice", code)) {
		t.Fatal("hash is not deterministic")
	}
	// Typed differently, same code, same hash.
	typed, _ := totp.NormalizeRecoveryCode(strings.ToUpper(strings.ReplaceAll(codes[0], "-", " ")))
	if !bytes.Equal(a, totp.HashRecoveryCode(key, "alice", typed)) {
		t.Fatal("normalized forms hash differently")
	}
	tests := []struct {
		name       string
		key        []byte
		user, code string
	}{
		{"another user", key, "bob", code},
		{"another key", []byte("another key"), "alice", code},
		{"another code", key, "alice", code[:19] + string("01"[(strings.IndexByte("01", code[19])+1)%2])},
		// Without the length prefix these two would hash the same bytes.
		{"user/code boundary", key, "alice" + code[:1], code[1:]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if bytes.Equal(a, totp.HashRecoveryCode(tt.key, tt.user, tt.code)) {
				t.Fatal("hash collides with alice's")
			}
		})
	}
}

func TestLooksLikeRecoveryCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want bool
	}{
		{"123456", false},
		{"123 456", false},
		{"12345678", false},
		{"1234-5678", false},
		{"1234567", false},
		{"", false},
		{"abc", false},
		{"01234-56789-abcde-fghjk", true},
		{"01234 56789 ABCDE FGHJK", true},
		{"01234-56789-abcde-fghj", true}, // mistyped: still a recovery attempt
		{"0123456789ab", true},
		{"01234_56789_abcde_fghjk", false},
		{strings.Repeat("a", 100), false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			if got := totp.LooksLikeRecoveryCode(tt.in); got != tt.want {
				t.Fatalf("LooksLikeRecoveryCode(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func FuzzNormalizeRecoveryCode(f *testing.F) {
	for _, s := range []string{
		"01234-56789-abcde-fghjk", "0i234-56789-abcde-fghjk", "O1234 56789 ABCDE FGHJK", "u", "",
		"01234-56789-abcde-fghju", "0123456789abcdefghjk", "----------------------------------------",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := totp.NormalizeRecoveryCode(s)
		if !ok {
			if got != "" {
				t.Fatalf("refusal returned %q", got)
			}
			return
		}
		if len(got) != 20 {
			t.Fatalf("NormalizeRecoveryCode(%q) = %q: not 20 symbols", s, got)
		}
		for i := 0; i < len(got); i++ {
			if !strings.ContainsRune("0123456789abcdefghjkmnpqrstvwxyz", rune(got[i])) {
				t.Fatalf("NormalizeRecoveryCode(%q) = %q: symbol %q outside the alphabet", s, got, got[i])
			}
		}
		disp := totp.FormatRecoveryCode(got)
		if !recoveryFormat.MatchString(disp) {
			t.Fatalf("FormatRecoveryCode(%q) = %q", got, disp)
		}
		if again, ok := totp.NormalizeRecoveryCode(disp); !ok || again != got {
			t.Fatalf("display form does not normalize back: %q -> %q", disp, again)
		}
		if !totp.LooksLikeRecoveryCode(s) && len(s) <= 64 {
			t.Fatalf("valid recovery code %q not recognised", s)
		}
	})
}
