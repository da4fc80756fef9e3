package proxy

import (
	"net/http"
	"testing"
	"unicode/utf16"
)

func utf16le(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = append(b, byte(u), byte(u>>8))
	}
	return b
}

// T1..: a login answer that is not JSON, names nobody (no /user/id), and
// carries alice's session in its body. No session.credentials configured:
// everything credential-looking must give a marker (unattributed, refused).
func TestAttack2TextScanMisses(t *testing.T) {
	p := policy{userIDPointer: "/user/id", refused: RefusalSignal{MinStatus: 400}}
	ct := func(v string) http.Header {
		if v == "-" {
			return http.Header{}
		}
		return http.Header{"Content-Type": {v}}
	}
	cases := []struct {
		name, ct string
		body     []byte
	}{
		{"form_post with unquoted attributes (HTML5, minified)", "text/html",
			[]byte(`<form method=post action=https://rp.example/cb><input type=hidden name=access_token value=S-alice-0123456789></form><script>document.forms[0].submit()</script>`)},
		{"meta refresh, percent-encoded token value", "text/html",
			[]byte(`<meta http-equiv="refresh" content="0;url=/app#access_token=%2Fa1b2c3d4e5f6">`)},
		{"JSON in a script, PHP json_encode escapes the slash", "text/html",
			[]byte(`<script>window.__AUTH__ = {"token":"ab\/cdEFgh12ijk"};</script>`)},
		{"JSON in a script, unicode escape in the member name", "text/html",
			[]byte(`<script>window.__AUTH__ = {"access_to\u006ben":"S-alice-0123456789"};</script>`)},
		{"UTF-16 HTML page", "text/html; charset=utf-16le",
			utf16le(`<meta http-equiv="refresh" content="0;url=/app#access_token=S-alice-0123456789">`)},
		{"PHP trans_sid link", "text/html",
			[]byte(`<a href="/app/?PHPSESSID=S-alice-0123456789">Continue</a>`)},
		{"sid in a JS redirect", "text/html",
			[]byte(`<script>location.href="/app/?sid=S-alice-0123456789"</script>`)},
		{"SAML POST binding (IdP)", "text/html",
			[]byte(`<form method="post" action="https://sp.example/acs"><input type="hidden" name="SAMLResponse" value="PHNhbWxwOlJlc3BvbnNlIElEPSJ4Ij4="></form>`)},
		{"msgpack with member key", "application/x-msgpack",
			[]byte("\x81\xa3key\xb2S-alice-0123456789")},
		{"msgpack without Content-Type (read as text)", "-",
			[]byte("\x81\xacaccess_token\xb2S-alice-0123456789")},
		{"msgpack with a malformed Content-Type (read as text)", "application/x-msgpack/v2",
			[]byte("\x81\xacaccess_token\xb2S-alice-0123456789")},
		{"text/html that is also valid JSON", "text/html",
			[]byte(`["<meta http-equiv=refresh content='0;url=/app#access_token=S-alice-0123456789'>"]`)},
		{"JSON: token inside a string value (redirect for the SPA)", "application/json",
			[]byte(`{"redirect":"/app#access_token=S-alice-0123456789"}`)},
		{"JSON: form_post HTML inside a JSON string", "application/json",
			[]byte(`{"html":"<form><input name=\"access_token\" value=\"S-alice-0123456789\"></form>"}`)},
	}
	for _, tc := range cases {
		a := answer{Status: 200, Header: ct(tc.ct), Body: tc.body}
		v := p.Judge(loginRequest{}, &a, Lookups{Enrolled: testUsers, Whose: testWhose})
		if v.Action == Release {
			t.Errorf("%s: alice's session released as %s/%s", tc.name, v.Action, v.Reason)
		}
	}
}

// With a configured json credential and introspection, the same bodies:
// the credential must be found (and attributed to alice) or refused.
func TestAttack2TextScanConfiguredKey(t *testing.T) {
	p := policy{userIDPointer: "/user/id", refused: RefusalSignal{MinStatus: 400},
		creds: mustCredentials(t, "json:access_token as bearer")}
	for name, body := range map[string]string{
		"unquoted input":         `<input type=hidden name=access_token value=S-alice>`,
		"XML with attribute":     `<Login><access_token type="bearer">S-alice-0123</access_token></Login>`,
		"XML CDATA":              `<Login><access_token><![CDATA[S-alice-0123]]></access_token></Login>`,
		"short token (<6 chars)": `<meta http-equiv=refresh content="0;url=/app#access_token=S-al1">`,
	} {
		a := answer{Status: 200, Header: http.Header{"Content-Type": {"text/html"}}, Body: []byte(body)}
		v := p.Judge(loginRequest{}, &a, Lookups{Enrolled: testUsers, Whose: func(f Found) (string, error) {
			if len(f.Value) >= 4 && f.Value[:4] == "S-al" {
				return "alice", nil
			}
			return "", nil
		}})
		if v.Action == Release {
			t.Errorf("%s: released as %s", name, v.Reason)
		}
	}
}
