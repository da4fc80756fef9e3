package totp

import (
	"strings"
	"testing"
)

func TestParseImport(t *testing.T) {
	t.Parallel()
	secret := EncodeSecret([]byte("q7Zp2Lx9Kd4Vr8Ws1Ny6"))
	in := strings.Join([]string{
		"# comment",
		"otpauth://totp/Issuer:Alice%20Smith?secret=" + secret + "&algorithm=sha512&digits=8&period=45",
		"otpauth://totp/bob?secret=" + strings.ToLower(secret),
		`"carol, the second",` + secret + `,SHA256,6,30`,
		"dave," + secret[:16],
		"erin,not base32!",
		"otpauth://hotp/x?secret=" + secret,
		"bob," + secret,
		"frank," + secret + ",MD5",
	}, "\n")
	recs, errs, _ := ParseImport(strings.NewReader(in), DefaultParams(), "*")
	want := []struct {
		user string
		p    Params
	}{
		{"Alice Smith", Params{Algorithm: SHA512, Digits: 8, Period: 45, Skew: 1}},
		{"bob", DefaultParams()},
		{"carol, the second", Params{Algorithm: SHA256, Digits: 6, Period: 30, Skew: 1}},
	}
	if len(recs) != len(want) {
		t.Fatalf("records %+v", recs)
	}
	for i, w := range want {
		if recs[i].UserID != w.user || recs[i].Params != w.p || string(recs[i].Secret) != "q7Zp2Lx9Kd4Vr8Ws1Ny6" {
			t.Errorf("record %d = %q %+v", i, recs[i].UserID, recs[i].Params)
		}
	}
	wantErr := map[int]string{5: "80 bits", 6: "not base32", 7: "hotp", 8: "already on line 3", 9: "algorithm"}
	if len(errs) != len(wantErr) {
		t.Fatalf("errors %v", errs)
	}
	for _, e := range errs {
		if !strings.Contains(e.Reason, wantErr[e.Line]) {
			t.Errorf("line %d: %q, want it to mention %q", e.Line, e.Reason, wantErr[e.Line])
		}
		if strings.Contains(e.Error(), secret) {
			t.Errorf("error quotes the secret: %v", e)
		}
	}
}

// Whatever the file, parsing never panics and never keeps a short secret.
func FuzzParseImport(f *testing.F) {
	f.Add("alice,JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")
	f.Add("otpauth://totp/a:b?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&digits=8")
	f.Add("otpauth-migration://offline?data=CgoKBWhlbGxvEgFh")
	f.Fuzz(func(t *testing.T, s string) {
		recs, _, _ := ParseImport(strings.NewReader(s), DefaultParams(), "*")
		for _, r := range recs {
			if len(r.Secret) < MinSecretSize || r.UserID == "" || r.Params.Validate() != nil {
				t.Fatalf("accepted %+v", r)
			}
		}
	})
}
