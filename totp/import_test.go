package totp

import (
	"errors"
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
	wantErr := map[int]struct {
		reason string
		code   ImportCode
	}{
		5: {"80 bits", ImportWeakSecret}, 6: {"not base32", ImportNotBase32}, 7: {"hotp", ImportUnsupported},
		8: {"already on line 3", ImportDuplicateUser}, 9: {"algorithm", ImportBadParameters},
	}
	if len(errs) != len(wantErr) {
		t.Fatalf("errors %v", errs)
	}
	for _, e := range errs {
		if w := wantErr[e.Line]; !strings.Contains(e.Reason, w.reason) || e.Code != w.code {
			t.Errorf("line %d: %s %q, want %s mentioning %q", e.Line, e.Code, e.Reason, w.code, w.reason)
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

// What ExportLine writes, ParseImport reads back as the same user, secret
// and parameters, in either format; an id a format would change is
// refused, never written as somebody else.
func TestExportLineReadsBack(t *testing.T) {
	t.Parallel()
	secret := []byte("q7Zp2Lx9Kd4Vr8Ws1Ny6")
	p := Params{Algorithm: SHA256, Digits: 8, Period: 60, Skew: 1}
	tests := []struct {
		user         string
		otpauth, csv bool // representable
	}{
		{"alice", true, true},
		{"alice@example.com", true, true},
		{"Alice Smith", true, true},
		{`carol "the second", jr`, true, true},
		{"#admin", true, true},
		{"otpauth://totp/x", false, true},
		{"tenant:42", false, true},
		{"two  spaces", false, true},
		{" padded", false, false},
		{"line\nbreak", false, false},
		{"bidi\u202eevil", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.user, func(t *testing.T) {
			t.Parallel()
			for format, ok := range map[ExportFormat]bool{ExportOTPAuth: tt.otpauth, ExportCSV: tt.csv} {
				line, err := ExportLine(format, "Shop", tt.user, secret, p)
				if !ok {
					if !errors.Is(err, ErrNotRepresentable) || line != "" {
						t.Errorf("%s: %q, %v; want ErrNotRepresentable", format, line, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", format, err)
				}
				recs, bad, skipped := ParseImport(strings.NewReader("# export\n"+line+"\n"), DefaultParams(), "Shop")
				if len(bad) > 0 || len(skipped) > 0 || len(recs) != 1 || recs[0].UserID != tt.user || string(recs[0].Secret) != string(secret) ||
					recs[0].Params.Algorithm != SHA256 || recs[0].Params.Digits != 8 || recs[0].Params.Period != 60 {
					t.Errorf("%s: %q reads back as %+v %v %v", format, line, recs, bad, skipped)
				}
			}
		})
	}
	if _, err := ExportLine("xml", "Shop", "alice", secret, p); err == nil {
		t.Error("an unknown format was written")
	}
}
