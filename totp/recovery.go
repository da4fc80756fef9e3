package totp

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strings"
)

// Recovery codes are 20 symbols of Crockford base32 (100 bits), shown as
// four groups of five: "xxxxx-xxxxx-xxxxx-xxxxx". Crockford's alphabet has
// no i, l, o or u, so a code read aloud or copied by hand survives the usual
// confusions, which NormalizeRecoveryCode folds back.
const (
	crockford       = "0123456789abcdefghjkmnpqrstvwxyz"
	recoverySymbols = 20
	recoveryGroup   = 5
	// MaxRecoveryCodes bounds one NewRecoveryCodes call.
	MaxRecoveryCodes = 100
	// maxRecoveryInput bounds what the normalizer looks at.
	maxRecoveryInput = 64
)

// NewRecoveryCodes returns n distinct recovery codes in display form. Store
// only their HashRecoveryCode values.
func NewRecoveryCodes(n int) ([]string, error) {
	if n < 1 || n > MaxRecoveryCodes {
		return nil, fmt.Errorf("totp: recovery code count %d outside 1..%d", n, MaxRecoveryCodes)
	}
	codes := make([]string, 0, n)
	seen := make(map[string]bool, n)
	var buf [recoverySymbols]byte
	for len(codes) < n {
		if _, err := rand.Read(buf[:]); err != nil {
			return nil, fmt.Errorf("totp: generate recovery code: %w", err)
		}
		var b strings.Builder
		b.Grow(recoverySymbols + recoverySymbols/recoveryGroup - 1)
		for i, r := range buf {
			if i > 0 && i%recoveryGroup == 0 {
				b.WriteByte('-')
			}
			// 256 is a multiple of 32, so the low five bits are uniform.
			b.WriteByte(crockford[r&31])
		}
		clear(buf[:])
		// A repeat within one set (odds 2^-100) would silently make one
		// code count twice; cheap to rule out.
		if c := b.String(); !seen[c] {
			seen[c] = true
			codes = append(codes, c)
		}
	}
	return codes, nil
}

// NormalizeRecoveryCode returns the 20-symbol canonical form of a recovery
// code as typed: case-insensitive, spaces and dashes ignored, i and l read
// as 1 and o as 0. Anything else (u, punctuation, non-ASCII, a wrong
// number of symbols) is refused.
func NormalizeRecoveryCode(s string) (string, bool) {
	if len(s) > maxRecoveryInput {
		return "", false
	}
	s = strings.TrimSpace(s)
	var out [recoverySymbols]byte
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == ' ' || c == '-' {
			continue
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		switch c {
		case 'i', 'l':
			c = '1'
		case 'o':
			c = '0'
		}
		if strings.IndexByte(crockford, c) < 0 || n == recoverySymbols {
			return "", false
		}
		out[n] = c
		n++
	}
	if n != recoverySymbols {
		return "", false
	}
	return string(out[:]), true
}

// FormatRecoveryCode turns a normalized code back into display form.
// It returns normalized unchanged if it is not 20 symbols long.
func FormatRecoveryCode(normalized string) string {
	if len(normalized) != recoverySymbols {
		return normalized
	}
	var b strings.Builder
	for i := 0; i < recoverySymbols; i += recoveryGroup {
		if i > 0 {
			b.WriteByte('-')
		}
		b.WriteString(normalized[i : i+recoveryGroup])
	}
	return b.String()
}

// HashRecoveryCode returns HMAC-SHA256(key, len(userID) || userID ||
// normalized), with the length as a 64-bit big-endian integer. Binding the
// user id means a code (or a stored hash) of one user never matches
// another's; the length prefix keeps ("ab", "c…") and ("a", "bc…") apart.
// The key is a server secret, so a leaked table of hashes cannot be
// brute-forced offline without it. Compare results with hmac.Equal.
func HashRecoveryCode(key []byte, userID, normalized string) []byte {
	m := hmac.New(sha256.New, key)
	var l [8]byte
	binary.BigEndian.PutUint64(l[:], uint64(len(userID)))
	m.Write(l[:])
	m.Write([]byte(userID))
	m.Write([]byte(normalized))
	return m.Sum(nil)
}

// LooksLikeRecoveryCode tells which kind of code a user typed into a single
// code field, so a mistyped recovery code is reported as a bad recovery
// code rather than a malformed TOTP code. It classifies, it does not
// validate: true means "not a TOTP code, and at least 10 letters or
// digits", and the caller still calls NormalizeRecoveryCode.
func LooksLikeRecoveryCode(s string) bool {
	if len(s) > maxRecoveryInput {
		return false
	}
	if _, ok := NormalizeCode(s); ok {
		return false
	}
	// Same tolerance as NormalizeRecoveryCode: white space around, spaces
	// and dashes inside.
	s = strings.TrimSpace(s)
	n := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case '0' <= c && c <= '9', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
			n++
		case c == ' ' || c == '-':
		default:
			return false
		}
	}
	return n >= 10
}
