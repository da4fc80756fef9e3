package totp_test

import (
	"bytes"
	"encoding/base32"
	"errors"
	"fmt"
	"image/png"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"

	"github.com/totpgate/totpgate/totp"
)

// RFC 6238 Appendix B seeds: the ASCII string "1234567890" repeated to the
// hash's output length.
var rfcSeeds = map[string][]byte{
	totp.SHA1:   []byte("12345678901234567890"),
	totp.SHA256: []byte("12345678901234567890123456789012"),
	totp.SHA512: []byte("1234567890123456789012345678901234567890123456789012345678901234"),
}

// rfcVectors is RFC 6238 Appendix B, all 18 rows.
var rfcVectors = []struct {
	unix int64
	alg  string
	want string
}{
	{59, totp.SHA1, "94287082"},
	{59, totp.SHA256, "46119246"},
	{59, totp.SHA512, "90693936"},
	{1111111109, totp.SHA1, "07081804"},
	{1111111109, totp.SHA256, "68084774"},
	{1111111109, totp.SHA512, "25091201"},
	{1111111111, totp.SHA1, "14050471"},
	{1111111111, totp.SHA256, "67062674"},
	{1111111111, totp.SHA512, "99943326"},
	{1234567890, totp.SHA1, "89005924"},
	{1234567890, totp.SHA256, "91819424"},
	{1234567890, totp.SHA512, "93441116"},
	{2000000000, totp.SHA1, "69279037"},
	{2000000000, totp.SHA256, "90698825"},
	{2000000000, totp.SHA512, "38618901"},
	{20000000000, totp.SHA1, "65353130"},
	{20000000000, totp.SHA256, "77737706"},
	{20000000000, totp.SHA512, "47863826"},
}

func TestRFC6238Vectors(t *testing.T) {
	t.Parallel()
	for _, v := range rfcVectors {
		t.Run(fmt.Sprintf("%s/%d", v.alg, v.unix), func(t *testing.T) {
			t.Parallel()
			p := totp.Params{Algorithm: v.alg, Digits: 8, Period: 30, Skew: 0}
			now := time.Unix(v.unix, 0).UTC()
			wantStep := v.unix / 30
			if got := p.Step(now); got != wantStep {
				t.Fatalf("Step = %d, want %d", got, wantStep)
			}
			if got := totp.Code(rfcSeeds[v.alg], wantStep, p); got != v.want {
				t.Fatalf("Code = %q, want %q", got, v.want)
			}
			step, ok := totp.Verify(rfcSeeds[v.alg], v.want, now, p)
			if !ok || step != wantStep {
				t.Fatalf("Verify = %d, %v; want %d, true", step, ok, wantStep)
			}
			// The 6-digit code is the low six digits of the same value.
			p.Digits = 6
			if got := totp.Code(rfcSeeds[v.alg], wantStep, p); got != v.want[2:] {
				t.Fatalf("6-digit Code = %q, want %q", got, v.want[2:])
			}
		})
	}
}

func TestVerifySkewWindow(t *testing.T) {
	t.Parallel()
	secret := rfcSeeds[totp.SHA1]
	p := totp.DefaultParams() // skew 1
	now := time.Unix(1_700_000_015, 0)
	current := p.Step(now)
	for off := int64(-3); off <= 3; off++ {
		t.Run(fmt.Sprintf("offset %+d", off), func(t *testing.T) {
			t.Parallel()
			code := totp.Code(secret, current+off, p)
			// Skip the rare case where the code also matches an in-window step.
			for d := int64(-1); d <= 1; d++ {
				if d != off && totp.Code(secret, current+d, p) == code {
					t.Skip("code collides with another step in the window")
				}
			}
			step, ok := totp.Verify(secret, code, now, p)
			wantOK := off >= -1 && off <= 1
			if ok != wantOK {
				t.Fatalf("Verify ok = %v, want %v", ok, wantOK)
			}
			if ok && step != current+off {
				t.Fatalf("matched step = %d, want %d", step, current+off)
			}
		})
	}
	t.Run("skew 0 accepts only the current step", func(t *testing.T) {
		t.Parallel()
		p0 := p
		p0.Skew = 0
		if _, ok := totp.Verify(secret, totp.Code(secret, current, p0), now, p0); !ok {
			t.Fatal("current code refused")
		}
		if _, ok := totp.Verify(secret, totp.Code(secret, current-1, p0), now, p0); ok {
			t.Fatal("previous code accepted with skew 0")
		}
	})
	t.Run("step boundary", func(t *testing.T) {
		t.Parallel()
		p0 := p
		p0.Skew = 0
		edge := time.Unix(30*current, 0) // first second of the step
		if _, ok := totp.Verify(secret, totp.Code(secret, current, p0), edge, p0); !ok {
			t.Fatal("code refused in the first second of its step")
		}
		if _, ok := totp.Verify(secret, totp.Code(secret, current, p0), edge.Add(-time.Second), p0); ok {
			t.Fatal("code accepted one second before its step")
		}
		if _, ok := totp.Verify(secret, totp.Code(secret, current, p0), edge.Add(29*time.Second), p0); !ok {
			t.Fatal("code refused in the last second of its step")
		}
	})
	t.Run("near the epoch", func(t *testing.T) {
		t.Parallel()
		// Steps below zero do not exist; the window is cut, not wrapped.
		if step, ok := totp.Verify(secret, totp.Code(secret, 0, p), time.Unix(5, 0), p); !ok || step != 0 {
			t.Fatalf("Verify at t=5 = %d, %v", step, ok)
		}
		if got := totp.Code(secret, -1, p); got != "" {
			t.Fatalf("Code for step -1 = %q, want empty", got)
		}
	})
}

func TestVerifyRefusesMalformed(t *testing.T) {
	t.Parallel()
	secret := rfcSeeds[totp.SHA1]
	p := totp.DefaultParams()
	now := time.Unix(1_700_000_000, 0)
	good := totp.Code(secret, p.Step(now), p)
	if _, ok := totp.Verify(secret, good, now, p); !ok {
		t.Fatal("control: valid code refused")
	}
	tests := []struct {
		name   string
		secret []byte
		code   string
		p      totp.Params
	}{
		{"empty", secret, "", p},
		{"too short", secret, good[:5], p},
		{"too long", secret, good + "0", p},
		{"8 digits with 6-digit params", secret, good + "00", p},
		{"letter", secret, good[:5] + "a", p},
		{"leading space", secret, " " + good[:5], p},
		{"inner space", secret, good[:3] + " " + good[3:5], p},
		{"sign", secret, "+" + good[1:], p},
		{"full-width digits", secret, "１２３４５６", p},
		{"NUL", secret, good[:5] + "\x00", p},
		{"empty secret", nil, good, p},
		{"invalid params", secret, good, totp.Params{Algorithm: "MD5", Digits: 6, Period: 30}},
		{"zero params", secret, good, totp.Params{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if step, ok := totp.Verify(tt.secret, tt.code, now, tt.p); ok || step != 0 {
				t.Fatalf("Verify(%q) = %d, %v; want refusal", tt.code, step, ok)
			}
		})
	}
}

func TestNormalizeCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"123456", "123456", true},
		{"  123456\n", "123456", true},
		{"123 456", "123456", true},
		{"123-456", "123456", true},
		{"12 34 56", "123456", true},
		{"12345678", "12345678", true},
		{"1234 5678", "12345678", true},
		{"1234-5678", "12345678", true},
		{"\t0000-0000 ", "00000000", true},
		{"", "", false},
		{"12345", "", false},
		{"1234567", "", false},
		{"123456789", "", false},
		{"123  456", "", false},
		{"123--456", "", false},
		{"123 -456", "", false},
		{"-123456", "", false},
		{"123456-", "", false},
		{"12a456", "", false},
		{"123_456", "", false},
		{"１２３４５６", "", false},
		{"١٢٣٤٥٦", "", false},
		{"123456\x00", "", false},
		{strings.Repeat(" ", 40) + "123456", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, ok := totp.NormalizeCode(tt.in)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("NormalizeCode(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestParamsValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		p        totp.Params
		problems int
	}{
		{"default", totp.DefaultParams(), 0},
		{"sha256 8 digits", totp.Params{Algorithm: "SHA256", Digits: 8, Period: 60, Skew: 0}, 0},
		{"sha512 limits", totp.Params{Algorithm: "SHA512", Digits: 6, Period: 300, Skew: 3}, 0},
		{"shortest period", totp.Params{Algorithm: "SHA1", Digits: 6, Period: 15, Skew: 1}, 0},
		{"md5", totp.Params{Algorithm: "MD5", Digits: 6, Period: 30, Skew: 1}, 1},
		{"lower-case algorithm", totp.Params{Algorithm: "sha1", Digits: 6, Period: 30, Skew: 1}, 1},
		{"7 digits", totp.Params{Algorithm: "SHA1", Digits: 7, Period: 30, Skew: 1}, 1},
		{"period 14", totp.Params{Algorithm: "SHA1", Digits: 6, Period: 14, Skew: 1}, 1},
		{"period 301", totp.Params{Algorithm: "SHA1", Digits: 6, Period: 301, Skew: 1}, 1},
		{"skew 4", totp.Params{Algorithm: "SHA1", Digits: 6, Period: 30, Skew: 4}, 1},
		{"negative skew", totp.Params{Algorithm: "SHA1", Digits: 6, Period: 30, Skew: -1}, 1},
		{"zero value", totp.Params{}, 3},
		{"everything wrong", totp.Params{Algorithm: "MD5", Digits: 10, Period: 0, Skew: 9}, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.p.Validate()
			if tt.problems == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, totp.ErrInvalidParams) {
				t.Fatalf("Validate() = %v, want ErrInvalidParams", err)
			}
			joined, ok := err.(interface{ Unwrap() []error })
			if !ok {
				t.Fatalf("Validate() error is not joined: %T", err)
			}
			if got := len(joined.Unwrap()); got != tt.problems {
				t.Fatalf("Validate() reported %d problems, want %d: %v", got, tt.problems, err)
			}
		})
	}
}

func TestGenerateSecret(t *testing.T) {
	t.Parallel()
	for _, size := range []int{16, 20, 32, 64} {
		s, err := totp.GenerateSecret(size)
		if err != nil || len(s) != size {
			t.Fatalf("GenerateSecret(%d) = %d bytes, %v", size, len(s), err)
		}
	}
	for _, size := range []int{-1, 0, 10, 15, 1 << 20} {
		if _, err := totp.GenerateSecret(size); err == nil {
			t.Errorf("GenerateSecret(%d) succeeded", size)
		}
	}
	a, _ := totp.GenerateSecret(totp.DefaultSecretSize)
	b, _ := totp.GenerateSecret(totp.DefaultSecretSize)
	if bytes.Equal(a, b) {
		t.Fatal("two secrets are equal")
	}
}

func TestEncodeSecret(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   []byte
		want string
	}{
		{[]byte("12345678901234567890"), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"},
		{[]byte("Hello!\xde\xad\xbe\xef"), "JBSWY3DPEHPK3PXP"},
		{[]byte{0xff}, "74"}, // unpadded
	}
	for _, tt := range tests {
		if got := totp.EncodeSecret(tt.in); got != tt.want {
			t.Errorf("EncodeSecret(%x) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestURI(t *testing.T) {
	t.Parallel()
	secret := []byte("Hello!\xde\xad\xbe\xef")
	t.Run("golden", func(t *testing.T) {
		t.Parallel()
		got := totp.URI("Example", "alice@google.com", secret, totp.DefaultParams())
		want := "otpauth://totp/Example:alice@google.com?secret=JBSWY3DPEHPK3PXP&issuer=Example&algorithm=SHA1&digits=6&period=30"
		if got != want {
			t.Fatalf("URI =\n%s\nwant\n%s", got, want)
		}
		got = totp.URI("ACME Co", "john doe+mfa@ex.com", secret, totp.Params{Algorithm: "SHA256", Digits: 8, Period: 60})
		want = "otpauth://totp/ACME%20Co:john%20doe%2Bmfa@ex.com?secret=JBSWY3DPEHPK3PXP&issuer=ACME%20Co&algorithm=SHA256&digits=8&period=60"
		if got != want {
			t.Fatalf("URI =\n%s\nwant\n%s", got, want)
		}
	})

	tests := []struct {
		name, issuer, account string
		wantLabelIssuer       string // issuer as it appears in the label
		wantAccount           string
		p                     totp.Params
	}{
		{"plain", "Example", "alice", "Example", "alice", totp.DefaultParams()},
		{"spaces", "ACME Corp Ltd", "alice smith", "ACME Corp Ltd", "alice smith", totp.DefaultParams()},
		{"colon in issuer", "Acme: Staging", "alice@example.com", "Acme Staging", "alice@example.com", totp.DefaultParams()},
		{"colon in account", "Acme", "ldap:alice", "Acme", "ldap alice", totp.DefaultParams()},
		{"reserved characters", "A&B=C?D#E/F%G+H", "a+b&c=d?e#f/g%h;i,j", "A&B=C?D#E/F%G+H", "a+b&c=d?e#f/g%h;i,j", totp.DefaultParams()},
		{"unicode", "Ünïcødé 株式会社", "jürgen@例え.jp", "Ünïcødé 株式会社", "jürgen@例え.jp", totp.DefaultParams()},
		{"control characters", "Evil\nCorp", "a\tb", "Evil Corp", "a b", totp.DefaultParams()},
		{"sha512 8 digits", "X", "y", "X", "y", totp.Params{Algorithm: "SHA512", Digits: 8, Period: 45, Skew: 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			uri := totp.URI(tt.issuer, tt.account, secret, tt.p)
			if strings.ContainsAny(uri, " \t\n+#") || strings.Count(uri, "?") != 1 {
				t.Fatalf("URI has unescaped characters: %s", uri)
			}
			u, err := url.Parse(uri)
			if err != nil {
				t.Fatalf("url.Parse: %v", err)
			}
			// Exactly one colon in the decoded label: the separator.
			if label := strings.TrimPrefix(u.Path, "/"); strings.Count(label, ":") != 1 {
				t.Fatalf("label %q must contain exactly one colon", label)
			}
			key, err := otp.NewKeyFromURL(uri)
			if err != nil {
				t.Fatalf("NewKeyFromURL: %v", err)
			}
			if key.Type() != "totp" {
				t.Errorf("Type = %q", key.Type())
			}
			if key.Issuer() != tt.issuer {
				t.Errorf("Issuer = %q, want %q", key.Issuer(), tt.issuer)
			}
			if key.AccountName() != tt.wantAccount {
				t.Errorf("AccountName = %q, want %q", key.AccountName(), tt.wantAccount)
			}
			if li, _, _ := strings.Cut(strings.TrimPrefix(u.Path, "/"), ":"); li != tt.wantLabelIssuer {
				t.Errorf("label issuer = %q, want %q", li, tt.wantLabelIssuer)
			}
			got, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(key.Secret())
			if err != nil || !bytes.Equal(got, secret) {
				t.Errorf("Secret = %q (%v)", key.Secret(), err)
			}
			if key.Algorithm().String() != tt.p.Algorithm || int(key.Digits()) != tt.p.Digits || int(key.Period()) != tt.p.Period {
				t.Errorf("params = %s/%d/%d, want %+v", key.Algorithm(), key.Digits(), key.Period(), tt.p)
			}
		})
	}
}

func TestQRPNG(t *testing.T) {
	t.Parallel()
	uri := totp.URI("ACME Co", "alice@example.com", rfcSeeds[totp.SHA1], totp.DefaultParams())
	for _, size := range []int{256, 300, 512} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			t.Parallel()
			b, err := totp.QRPNG(uri, size)
			if err != nil {
				t.Fatalf("QRPNG: %v", err)
			}
			if !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
				t.Fatal("not a PNG signature")
			}
			img, err := png.Decode(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("png.Decode: %v", err)
			}
			if r := img.Bounds(); r.Dx() != size || r.Dy() != size {
				t.Fatalf("image is %dx%d, want %dx%d", r.Dx(), r.Dy(), size, size)
			}
			// Quiet zone: the corners are white; the finder pattern just
			// inside is black.
			if r, _, _, _ := img.At(0, 0).RGBA(); r < 0x8000 {
				t.Error("top-left corner is not white")
			}
			if r, _, _, _ := img.At(size-1, size-1).RGBA(); r < 0x8000 {
				t.Error("bottom-right corner is not white")
			}
			var dark int
			for y := 0; y < size; y++ {
				for x := 0; x < size; x++ {
					if r, _, _, _ := img.At(x, y).RGBA(); r < 0x8000 {
						dark++
					}
				}
			}
			if dark == 0 || dark > size*size/2 {
				t.Errorf("implausible dark pixel count %d", dark)
			}
		})
	}
	t.Run("too small", func(t *testing.T) {
		t.Parallel()
		if _, err := totp.QRPNG(uri, 10); err == nil {
			t.Fatal("size 10 accepted")
		}
		if _, err := totp.QRPNG(uri+strings.Repeat("x", 500), 64); err == nil {
			t.Fatal("a large code in 64 px accepted")
		}
	})
	t.Run("too large", func(t *testing.T) {
		t.Parallel()
		if _, err := totp.QRPNG(uri, 1<<16); err == nil {
			t.Fatal("size 65536 accepted")
		}
	})
	t.Run("too much data", func(t *testing.T) {
		t.Parallel()
		if _, err := totp.QRPNG(strings.Repeat("x", 5000), 1024); err == nil {
			t.Fatal("5000-byte payload accepted")
		}
	})
}

// TestOathtool checks Code against an independent implementation.
func TestOathtool(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("oathtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("oathtool not on PATH; CI must install it (Debian: apt-get install oathtool)")
		}
		t.Skip("oathtool not on PATH")
	}
	secret20, _ := totp.GenerateSecret(20)
	secret32, _ := totp.GenerateSecret(32)
	secret64, _ := totp.GenerateSecret(64)
	now := time.Now().UTC().Truncate(time.Second)
	times := []time.Time{
		time.Unix(59, 0).UTC(),
		time.Unix(1111111109, 0).UTC(),
		time.Unix(2000000000, 0).UTC(),
		now,
	}
	for _, alg := range []string{totp.SHA1, totp.SHA256, totp.SHA512} {
		for _, digits := range []int{6, 8} {
			for _, period := range []int{30, 60} {
				for i, secret := range [][]byte{secret20, secret32, secret64, rfcSeeds[alg]} {
					for _, at := range times {
						name := fmt.Sprintf("%s/%dd/%ds/secret%d/%d", alg, digits, period, i, at.Unix())
						t.Run(name, func(t *testing.T) {
							t.Parallel()
							p := totp.Params{Algorithm: alg, Digits: digits, Period: period}
							cmd := exec.Command(bin,
								"--totp="+alg,
								"--base32",
								fmt.Sprintf("--digits=%d", digits),
								fmt.Sprintf("--time-step-size=%ds", period),
								"--now="+at.Format("2006-01-02 15:04:05 UTC"),
								"-", // key from stdin, not argv
							)
							cmd.Stdin = strings.NewReader(totp.EncodeSecret(secret) + "\n")
							cmd.Env = append(os.Environ(), "TZ=UTC")
							out, err := cmd.Output()
							if err != nil {
								t.Fatalf("oathtool: %v", err)
							}
							want := strings.TrimSpace(string(out))
							if got := totp.Code(secret, p.Step(at), p); got != want {
								t.Fatalf("Code = %q, oathtool says %q", got, want)
							}
						})
					}
				}
			}
		}
	}
}

func FuzzNormalizeCode(f *testing.F) {
	for _, s := range []string{"123456", "123 456", "123-456", "1234 5678", " 12345678\n", "123  456", "-123456", "１２３４５６", "12a456", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := totp.NormalizeCode(s)
		if !ok {
			if got != "" {
				t.Fatalf("refusal returned %q", got)
			}
			return
		}
		if len(got) != 6 && len(got) != 8 {
			t.Fatalf("NormalizeCode(%q) = %q: wrong length", s, got)
		}
		for i := 0; i < len(got); i++ {
			if got[i] < '0' || got[i] > '9' {
				t.Fatalf("NormalizeCode(%q) = %q: not digits", s, got)
			}
		}
		if again, ok := totp.NormalizeCode(got); !ok || again != got {
			t.Fatalf("not idempotent: %q -> %q -> %q", s, got, again)
		}
	})
}

func FuzzVerify(f *testing.F) {
	f.Add([]byte("12345678901234567890"), "94287082", int64(59), uint8(0), uint8(8), uint16(30), uint8(0))
	f.Add([]byte("12345678901234567890"), "287082", int64(59), uint8(0), uint8(6), uint16(30), uint8(1))
	f.Add([]byte("12345678901234567890123456789012"), "46119246", int64(59), uint8(1), uint8(8), uint16(30), uint8(1))
	f.Add([]byte{}, "123456", int64(0), uint8(2), uint8(6), uint16(30), uint8(3))
	f.Add([]byte("x"), "１２３４５６", int64(-1), uint8(9), uint8(7), uint16(0), uint8(255))
	f.Add([]byte("x"), "000000", int64(-9223372036854775808), uint8(0), uint8(6), uint16(15), uint8(3))
	f.Add([]byte("x"), "000000", int64(9223372036854775807), uint8(0), uint8(6), uint16(300), uint8(3))
	algs := []string{totp.SHA1, totp.SHA256, totp.SHA512, "MD5"}
	f.Fuzz(func(t *testing.T, secret []byte, code string, unix int64, alg, digits uint8, period uint16, skew uint8) {
		p := totp.Params{Algorithm: algs[int(alg)%len(algs)], Digits: int(digits), Period: int(period), Skew: int(skew)}
		now := time.Unix(unix, 0)
		step, ok := totp.Verify(secret, code, now, p)
		if !ok {
			if step != 0 {
				t.Fatalf("refusal returned step %d", step)
			}
			return
		}
		if p.Validate() != nil || len(secret) == 0 {
			t.Fatalf("accepted with invalid input: %+v", p)
		}
		if d := step - p.Step(now); d < -int64(p.Skew) || d > int64(p.Skew) {
			t.Fatalf("matched step %d outside the window around %d", step, p.Step(now))
		}
		if totp.Code(secret, step, p) != code {
			t.Fatalf("matched step %d does not produce %q", step, code)
		}
	})
}
