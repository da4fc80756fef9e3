// Package totp implements the TOTP side of totpgate (RFC 6238): secrets,
// the otpauth:// enrollment URI and its QR code, code verification that
// reports the matched time step (for one-use-per-step replay protection),
// and recovery codes.
//
// Code generation is delegated to github.com/pquerna/otp; this package adds
// strict input handling and the step bookkeeping pquerna does not expose.
package totp

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base32"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"strconv"
	"strings"
	"time"

	"github.com/boombuler/barcode/qr"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"
)

// Algorithm names accepted in Params.Algorithm, as written in the URI.
const (
	SHA1   = "SHA1"
	SHA256 = "SHA256"
	SHA512 = "SHA512"
)

// Secret sizes in bytes. RFC 4226 §4 requires at least 128 bits and
// recommends 160, which is what callers should use by default.
const (
	MinSecretSize     = 16
	DefaultSecretSize = 20
	maxSecretSize     = 128
)

// QR image limits, in pixels.
const (
	MinQRSize = 64
	MaxQRSize = 4096
	// qrQuietZone is the blank border, in modules, that ISO/IEC 18004
	// requires around a QR code; without it scanners struggle on dark pages.
	qrQuietZone = 4
)

// ErrInvalidParams is wrapped by every problem Params.Validate reports.
var ErrInvalidParams = errors.New("totp: invalid parameters")

// Params are the TOTP parameters shared by the server and the
// authenticator app.
type Params struct {
	Algorithm string // SHA1, SHA256 or SHA512
	Digits    int    // 6 or 8
	Period    int    // time step in seconds, 15..300
	Skew      int    // steps accepted before and after the current one, 0..3
}

// DefaultParams are what every authenticator app understands: SHA1, 6
// digits, 30 s, and one step of skew for clock drift and typing time.
func DefaultParams() Params {
	return Params{Algorithm: SHA1, Digits: 6, Period: 30, Skew: 1}
}

// Validate reports every problem with p at once (errors.Join), each
// wrapping ErrInvalidParams.
func (p Params) Validate() error {
	var errs []error
	if _, ok := algorithm(p.Algorithm); !ok {
		errs = append(errs, fmt.Errorf("%w: algorithm %q is not SHA1, SHA256 or SHA512", ErrInvalidParams, p.Algorithm))
	}
	if p.Digits != 6 && p.Digits != 8 {
		errs = append(errs, fmt.Errorf("%w: digits %d is not 6 or 8", ErrInvalidParams, p.Digits))
	}
	if p.Period < 15 || p.Period > 300 {
		errs = append(errs, fmt.Errorf("%w: period %d is outside 15..300 seconds", ErrInvalidParams, p.Period))
	}
	if p.Skew < 0 || p.Skew > 3 {
		errs = append(errs, fmt.Errorf("%w: skew %d is outside 0..3", ErrInvalidParams, p.Skew))
	}
	return errors.Join(errs...)
}

// Step returns the RFC 6238 time step T = floor(unix / period) at t, or 0
// if p.Period is not positive.
func (p Params) Step(t time.Time) int64 {
	u, period := t.Unix(), int64(p.Period)
	if period <= 0 {
		return 0
	}
	s := u / period
	if u%period < 0 {
		s-- // floor, not truncation, for times before 1970
	}
	return s
}

func algorithm(name string) (otp.Algorithm, bool) {
	switch name {
	case SHA1:
		return otp.AlgorithmSHA1, true
	case SHA256:
		return otp.AlgorithmSHA256, true
	case SHA512:
		return otp.AlgorithmSHA512, true
	}
	return 0, false
}

// b32 is the secret encoding of the Key Uri Format: RFC 4648 base32
// without padding.
var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// GenerateSecret returns size random bytes from crypto/rand. size must be
// at least MinSecretSize (16); use DefaultSecretSize (20) unless there is a
// reason not to.
func GenerateSecret(size int) ([]byte, error) {
	if size < MinSecretSize || size > maxSecretSize {
		return nil, fmt.Errorf("totp: secret size %d outside %d..%d bytes", size, MinSecretSize, maxSecretSize)
	}
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("totp: generate secret: %w", err)
	}
	return b, nil
}

// EncodeSecret returns the secret as unpadded upper-case base32, the form
// authenticator apps accept for manual entry and in the URI.
func EncodeSecret(secret []byte) string {
	return b32.EncodeToString(secret)
}

// URI returns the otpauth:// Key Uri Format URI for enrolling secret:
//
//	otpauth://totp/Issuer:account?secret=...&issuer=...&algorithm=...&digits=...&period=...
//
// The format forbids a colon inside the issuer or account part of the
// label (literal or percent-encoded), because apps split the label at the
// first colon. So in the label, colons and runs of white space in each part
// become one space; the issuer parameter keeps the issuer exactly and is
// what apps display. Everything outside RFC 3986's unreserved characters
// (and '@', which the format's own examples leave literal) is
// percent-encoded, spaces as %20, never '+'.
//
// pquerna's totp.Generate is not used: it puts the issuer into the label
// verbatim, so an issuer with a colon yields a label that decodes to the
// wrong account name.
func URI(issuer, account string, secret []byte, p Params) string {
	var b strings.Builder
	b.WriteString("otpauth://totp/")
	if li := labelPart(issuer); li != "" {
		b.WriteString(escape(li))
		b.WriteByte(':')
	}
	b.WriteString(escape(labelPart(account)))
	b.WriteString("?secret=")
	b.WriteString(EncodeSecret(secret))
	if issuer != "" {
		b.WriteString("&issuer=")
		b.WriteString(escape(issuer))
	}
	b.WriteString("&algorithm=")
	b.WriteString(escape(p.Algorithm))
	b.WriteString("&digits=")
	b.WriteString(strconv.Itoa(p.Digits))
	b.WriteString("&period=")
	b.WriteString(strconv.Itoa(p.Period))
	return b.String()
}

// labelPart makes s safe for one side of the label: no colons, no control
// characters, single spaces.
func labelPart(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == ':' || r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	return strings.Join(strings.Fields(s), " ")
}

// escape percent-encodes every byte except RFC 3986 unreserved characters
// and '@'.
func escape(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '-', c == '.', c == '_', c == '~', c == '@':
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		}
	}
	return b.String()
}

// QRPNG renders uri as a black-on-white QR code PNG of size×size pixels,
// with the quiet zone the standard requires. Modules are whole pixels (no
// blurry scaling); any spare pixels widen the white border.
func QRPNG(uri string, size int) ([]byte, error) {
	if size < MinQRSize || size > MaxQRSize {
		return nil, fmt.Errorf("totp: QR size %d outside %d..%d pixels", size, MinQRSize, MaxQRSize)
	}
	code, err := qr.Encode(uri, qr.M, qr.Auto)
	if err != nil {
		return nil, fmt.Errorf("totp: encode QR: %w", err)
	}
	bounds := code.Bounds()
	modules := bounds.Dx()
	scale := size / (modules + 2*qrQuietZone)
	if scale < 1 {
		return nil, fmt.Errorf("totp: QR size %d too small for a %d-module code (need %d)",
			size, modules, modules+2*qrQuietZone)
	}
	offset := (size - modules*scale) / 2
	// Index 0 is white, so the new image starts blank; two colours make a
	// 1-bit PNG.
	img := image.NewPaletted(image.Rect(0, 0, size, size), color.Palette{color.White, color.Black})
	for my := 0; my < modules; my++ {
		for mx := 0; mx < modules; mx++ {
			if r, _, _, _ := code.At(bounds.Min.X+mx, bounds.Min.Y+my).RGBA(); r >= 0x8000 {
				continue // light module
			}
			x0, y0 := offset+mx*scale, offset+my*scale
			for y := y0; y < y0+scale; y++ {
				row := img.Pix[y*img.Stride:]
				for x := x0; x < x0+scale; x++ {
					row[x] = 1
				}
			}
		}
	}
	var buf bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.BestCompression}).Encode(&buf, img); err != nil {
		return nil, fmt.Errorf("totp: encode PNG: %w", err)
	}
	return buf.Bytes(), nil
}

// Code returns the code for secret at time step step, or "" when p is
// invalid, the secret is empty or step is negative. For tests and tools;
// servers call Verify.
func Code(secret []byte, step int64, p Params) string {
	if len(secret) == 0 || step < 0 || p.Validate() != nil {
		return ""
	}
	alg, _ := algorithm(p.Algorithm)
	code, err := hotp.GenerateCodeCustom(EncodeSecret(secret), uint64(step), hotp.ValidateOpts{
		Digits:    otp.Digits(p.Digits),
		Algorithm: alg,
	})
	if err != nil {
		return ""
	}
	return code
}

// Verify reports whether code is valid for secret at now, accepting any
// step in [now-skew, now+skew], and returns the matched time step so the
// caller can accept each step at most once per user (RFC 6238 §5.2).
//
// code must already be normalized (see NormalizeCode): exactly p.Digits
// ASCII digits. Anything else, invalid params or an empty secret is refused
// before any HMAC is computed.
//
// Every candidate is computed and compared in constant time, with no early
// exit, so timing does not tell how close a guess came. In the (1 in 10^6
// per pair) case that two steps in the window share a code, the later step
// is returned: recording it blocks more replays.
func Verify(secret []byte, code string, now time.Time, p Params) (step int64, ok bool) {
	if len(secret) == 0 || p.Validate() != nil || len(code) != p.Digits || !allDigits(code) {
		return 0, false
	}
	current := p.Step(now)
	matched := 0
	for d := -p.Skew; d <= p.Skew; d++ {
		s := current + int64(d)
		want := Code(secret, s, p) // "" for s < 0, which never equals code
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 {
			step, matched = s, 1
		}
	}
	return step, matched == 1
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// maxCodeInput bounds what NormalizeCode looks at; a code field needs no
// more.
const maxCodeInput = 32

// NormalizeCode accepts what a user types for a TOTP code: 6 or 8 ASCII
// digits, optionally surrounded by white space and split into groups by
// single spaces or dashes ("123 456", "123-456", "1234 5678"). It returns
// the bare digits. Other digits (full-width, Arabic-Indic) are refused.
func NormalizeCode(s string) (string, bool) {
	if len(s) > maxCodeInput {
		return "", false
	}
	s = strings.TrimSpace(s)
	var out [8]byte
	n := 0
	sep := true // no separator at the start
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			if n == len(out) {
				return "", false
			}
			out[n] = c
			n++
			sep = false
		case c == ' ' || c == '-':
			if sep {
				return "", false // leading or doubled separator
			}
			sep = true
		default:
			return "", false
		}
	}
	if sep || (n != 6 && n != 8) {
		return "", false
	}
	return string(out[:n]), true
}
