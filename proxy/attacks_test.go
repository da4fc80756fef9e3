package proxy

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Attacks found by reviewing the gate; each test is what the attacker
// tried, and what must not go out.

// A login answer that carries the token in a body the gate does not parse
// as JSON (XML, HTML around JSON, a meta refresh, msgpack: formats a client
// picks with Accept) is not released as "no session".
func TestAttackTokenInABodyThatIsNotJSON(t *testing.T) {
	p := policy{userIDPointer: "/user/id", refused: RefusalSignal{MinStatus: 400},
		creds: mustCredentials(t, "json:access_token as bearer")}
	for _, a := range []answer{
		{Status: 200, Header: http.Header{"Content-Type": {"application/xml"}}, Body: []byte(`<LoginResponse><user><id>alice</id></user><access_token>S-alice</access_token></LoginResponse>`)},
		{Status: 200, Header: http.Header{"Content-Type": {"text/html; charset=utf-8"}}, Body: []byte(`<pre>{&quot;access_token&quot;: &quot;S-alice&quot;, &quot;user&quot;: {&quot;id&quot;: &quot;alice&quot;}}</pre>`)},
		{Status: 200, Header: http.Header{"Content-Type": {"text/html"}}, Body: []byte(`<meta http-equiv="refresh" content="0;url=/app#access_token=S-alice">`)},
		{Status: 200, Header: http.Header{"Content-Type": {"application/x-msgpack"}}, Body: []byte("\x81\xacaccess_token\xa7S-alice")},
	} {
		v := p.Judge(loginRequest{}, &a, Lookups{Enrolled: testUsers, Whose: testWhose})
		if v.Action == Release {
			t.Errorf("%s answer with alice's token released: %s/%s", a.Header.Get("Content-Type"), v.Action, v.Reason)
		}
	}
}

// a configured session cookie with Max-Age (which browsers honour over
// Expires, RFC 6265 5.3 step 3) and a past Expires is taken for a deletion.
func TestAttackMaxAgeOverridesPastExpires(t *testing.T) {
	line := "sessionid=S-alice; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=1209600; HttpOnly"
	withCreds := policy{refused: RefusalSignal{MinStatus: 400}, creds: mustCredentials(t, "cookie:sessionid")}
	base := policy{userIDPointer: "/user/id", refused: RefusalSignal{MinStatus: 400}}
	for name, p := range map[string]policy{"credentials": withCreds, "heuristics": base} {
		a := answer{Status: 302, Header: http.Header{"Set-Cookie": {line}, "Location": {"/"}}}
		v := p.Judge(loginRequest{}, &a, Lookups{Enrolled: testUsers, Whose: testWhose})
		if v.Action == Release {
			t.Errorf("%s: a live 14-day session cookie of alice released as %s", name, v.Reason)
		}
	}
	if f := withCreds.creds.fromHeaders(http.Header{"Set-Cookie": {line}}); len(f) == 0 {
		t.Errorf("any route: fromHeaders does not see the live cookie, so pass-through releases it")
	}
}

// On any route: a configured cookie that Go's ParseSetCookie rejects but
// browsers store is silently skipped on pass-through (the login route
// refuses the same line as unparsable).
func TestAttackCookieGoCannotParse(t *testing.T) {
	cs := mustCredentials(t, "cookie:sid")
	for _, line := range []string{`sid=S-alice"x; Path=/`, "sid=S-alic\xc3\xa9; Path=/", `sid={"u":"S-alice"}; Path=/`} {
		if f := cs.fromHeaders(http.Header{"Set-Cookie": {line}}); len(f) == 0 {
			t.Errorf("%q: not found on any route; streams through unjudged", line)
		}
	}
}

// Django's MultiPartParser strips the field name (disposition["name"].strip())
// and QueryDict.get returns the last value; the gate compares the raw name.
func TestAttackMultipartFieldNames(t *testing.T) {
	rr := requestReader{codeHeader: "X-TOTP-Code", codeField: foldField("totp_code"), userField: foldField("username"), maxBytes: 4096, normalize: []string{"trim", "nfkc"}}
	body := "--B\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nbob\r\n" +
		"--B\r\nContent-Disposition: form-data; name=\"username \"\r\n\r\nalice\r\n" +
		"--B\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\nalice-pw\r\n--B--\r\n"
	r := httptest.NewRequest("POST", "/login/", strings.NewReader(body))
	r.Header.Set("Content-Type", "multipart/form-data; boundary=B")
	got, err := rr.read(r)
	if err == nil && got.User == "bob" {
		t.Errorf("gate attributes the login to %q, Django logs in alice (last 'username' after strip)", got.User)
	}
	// the same with a Content-Disposition Go cannot parse (Django's parser skips the junk)
	body = "--B\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nbob\r\n" +
		"--B\r\nContent-Disposition: form-data; name=\"username\"; junk\r\n\r\nalice\r\n--B--\r\n"
	r = httptest.NewRequest("POST", "/login/", strings.NewReader(body))
	r.Header.Set("Content-Type", "multipart/form-data; boundary=B")
	got, err = rr.read(r)
	if err == nil && got.User == "bob" {
		t.Errorf("malformed disposition: gate attributes the login to %q, the app sees a second username", got.User)
	}
}

// routes a framework maps to the login action but the gate does not.
func TestAttackLoginRouteSpellings(t *testing.T) {
	rs := newRouteSet([]string{"/login", "/accounts/login/"})
	for _, p := range []string{
		"/login.x-json",      // Rails (.:format) takes any [^/.?]+
		"/login.application", // longer than 8
		"/login.json_api",
		"/accounts/login/%0A", // Django re_path(r'^accounts/login/$'): $ matches before a final newline
	} {
		r := httptest.NewRequest("POST", "/", nil)
		r.URL.Path = p
		if !rs.matches(r) {
			t.Errorf("%q is not gated", p)
		}
	}
}

// two Content-Type headers: the gate reads the first, gunicorn (last
// CONTENT_TYPE wins) and other servers may read the last.
func TestAttackDuplicateContentType(t *testing.T) {
	rr := requestReader{codeHeader: "X-TOTP-Code", codeField: foldField("totp_code"), userField: foldField("username"), maxBytes: 4096, normalize: []string{"trim", "nfkc"}}
	body := `{"username":"bob","x":"&username=alice&password=alice-pw&"}`
	r := httptest.NewRequest("POST", "/login/", strings.NewReader(body))
	r.Header["Content-Type"] = []string{"application/json", "application/x-www-form-urlencoded"}
	got, err := rr.read(r)
	if err == nil {
		t.Errorf("two Content-Types accepted; gate user %q, while a form parser reads username=alice", got.User)
	}
}
