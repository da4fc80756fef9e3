package totp

import (
	"encoding/base64"
	"strings"
	"testing"
)

func pbBytes(num int, b []byte) []byte {
	out := []byte{byte(num<<3 | 2), byte(len(b))}
	return append(out, b...)
}

func pbVarint(num int, v byte) []byte { return []byte{byte(num << 3), v} }

// Secrets anyone can guess pass the length check: 16 zero bytes, the RFC
// 6238 / 4226 test seed, the classic documentation example doubled.
func TestAttackImportWeakSecrets(t *testing.T) {
	defaults := Params{Algorithm: SHA1, Digits: 6, Period: 30, Skew: 1}
	file := strings.Join([]string{
		"zero,AAAAAAAAAAAAAAAAAAAAAAAAAA",
		"rfc,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ",     // "12345678901234567890"
		"example,JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", // JBSWY3DPEHPK3PXP twice
		"ones,77777777777777777777777777",          // 0xff...
	}, "\n")
	recs, errs, _ := ParseImport(strings.NewReader(file), defaults, "ACME")
	for _, r := range recs {
		t.Errorf("line %d: user %q imported with a guessable secret (%d bytes)", r.Line, r.UserID, len(r.Secret))
	}
	_ = errs
}

// An authenticator export holds every account of the phone: the issuer is
// never compared with mfa.issuer, so another service's entry becomes a user
// of this app (by the account part of its name).
func TestAttackImportForeignIssuer(t *testing.T) {
	secret := []byte("q7Zp2Lx9Kd4Vr8Ws1Ny6")
	entry := func(name, issuer string) []byte {
		var b []byte
		b = append(b, pbBytes(1, secret)...)
		b = append(b, pbBytes(2, []byte(name))...)
		b = append(b, pbBytes(3, []byte(issuer))...)
		b = append(b, pbVarint(6, 2)...)
		return b
	}
	var payload []byte
	payload = append(payload, pbBytes(1, entry("ACME:alice", "ACME"))...)
	payload = append(payload, pbBytes(1, entry("GitHub:bob", "GitHub"))...)
	line := "otpauth-migration://offline?data=" + base64.StdEncoding.EncodeToString(payload)
	recs, errs, _ := ParseImport(strings.NewReader(line), Params{Algorithm: SHA1, Digits: 6, Period: 30, Skew: 1}, "ACME")
	if len(recs) != 1 || recs[0].UserID != "alice" {
		t.Errorf("ACME's own entry not imported: %+v %v", recs, errs)
	}
	for _, r := range recs {
		if r.UserID == "bob" {
			t.Errorf("GitHub's entry imported as user %q of this app (errs %v)", r.UserID, errs)
		}
	}
	// same with an otpauth URI whose issuer parameter is another service
	recs, _, _ = ParseImport(strings.NewReader("otpauth://totp/GitHub:carol?secret="+EncodeSecret(secret)+"&issuer=GitHub"), Params{Algorithm: SHA1, Digits: 6, Period: 30, Skew: 1}, "ACME")
	if len(recs) == 1 {
		t.Errorf("otpauth URI of issuer GitHub imported as user %q", recs[0].UserID)
	}
}

// User ids printed to the operator's terminal: C1 controls and bidi
// overrides pass checkImported (only C0 and DEL are refused).
func TestAttackImportUserIDDisplay(t *testing.T) {
	for _, id := range []string{"ali\u009b31mce", "\u202eecila", "alice\u200b"} {
		recs, _, _ := ParseImport(strings.NewReader(id+","+EncodeSecret([]byte("q7Zp2Lx9Kd4Vr8Ws1Ny6"))), Params{Algorithm: SHA1, Digits: 6, Period: 30, Skew: 1}, "*")
		if len(recs) == 1 {
			t.Errorf("user id %q accepted (printed raw with %%s on stdout)", id)
		}
	}
}
