package proxy

import (
	"errors"
	"net/http"
	"testing"

	"github.com/totpgate/totpgate/identity"
)

// users: alice has MFA, bob has none, carol's state cannot be read.
func testUsers(user string) (bool, error) {
	switch user {
	case "alice":
		return true, nil
	case "carol":
		return false, errors.New("store down")
	}
	return false, nil
}

// testWhose is the app's identity endpoint: S-<user> tokens are sessions
// of <user>, S-down fails, anything else is no session.
func testWhose(f Found) (string, error) {
	switch {
	case f.Value == "S-down":
		return "", errors.New("app down")
	case len(f.Value) > 2 && f.Value[:2] == "S-":
		return f.Value[2:], nil
	}
	return "", nil
}

func mustCredentials(t *testing.T, specs ...string) *credentials {
	t.Helper()
	var list []Credential
	for _, s := range specs {
		c, err := identity.ParseCredential(s)
		if err != nil {
			t.Fatal(err)
		}
		list = append(list, c)
	}
	return newCredentials(list)
}

func TestJudge(t *testing.T) {
	t.Parallel()
	base := policy{userIDPointer: "/user/id", refused: RefusalSignal{MinStatus: 400}, nonSessionCookies: map[string]bool{"csrftoken": true}}
	withField := base
	withField.userIDPointer, withField.requestField = "", true
	withHeader := base
	withHeader.userIDHeader = "X-User-Id"
	okPointer := base
	okPointer.refused.Pointer, okPointer.refused.Value = "/ok", "false"
	required := base
	required.required = true
	requiredByApp := base
	requiredByApp.requiredPointer = "/mfa_required"
	withCreds := base
	withCreds.userIDPointer = ""
	withCreds.creds = mustCredentials(t, "cookie:sessionid", "json:sessionToken", "location:access_token", "header:X-Session-Token")
	json := http.Header{"Content-Type": {"application/json"}}
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Add(kv[i], kv[i+1])
		}
		return h
	}
	tests := []struct {
		name   string
		p      policy
		req    loginRequest
		a      answer
		action Action
		reason string
		user   string
	}{
		{"app refused by status", base, loginRequest{}, answer{Status: 401, Header: json, Body: []byte(`{"error":"x"}`)}, Release, ReasonAppRefused, ""},
		{"app refused 5xx with a cookie", base, loginRequest{}, answer{Status: 500, Header: hdr("Set-Cookie", "sid=1")}, Release, ReasonAppRefused, ""},
		{"refused by pointer", okPointer, loginRequest{}, answer{Status: 200, Header: json, Body: []byte(`{"ok":false}`)}, Release, ReasonAppRefused, ""},
		{"pointer says ok: judged", okPointer, loginRequest{}, answer{Status: 200, Header: json, Body: []byte(`{"ok":true,"user":{"id":"alice"}}`)}, Hold, ReasonEnrolled, "alice"},
		{"refused by header", policy{userIDPointer: "/user/id", refused: RefusalSignal{MinStatus: 400, Header: "X-Login-Failed"}}, loginRequest{}, answer{Status: 200, Header: hdr("X-Login-Failed", "1", "Set-Cookie", "sid=1")}, Release, ReasonAppRefused, ""},
		{"enrolled user from body", base, loginRequest{}, answer{Status: 200, Header: json, Body: []byte(`{"user":{"id":"alice"}}`)}, Hold, ReasonEnrolled, "alice"},
		{"numeric id", base, loginRequest{}, answer{Status: 200, Header: json, Body: []byte(`{"user":{"id":42}}`)}, Release, ReasonNoMFA, "42"},
		{"user without MFA", base, loginRequest{}, answer{Status: 200, Header: json, Body: []byte(`{"user":{"id":"bob"}}`)}, Release, ReasonNoMFA, "bob"},
		{"store down", base, loginRequest{}, answer{Status: 200, Header: json, Body: []byte(`{"user":{"id":"carol"}}`)}, Refuse, ReasonUnavailable, "carol"},
		{"required policy", required, loginRequest{}, answer{Status: 200, Header: json, Body: []byte(`{"user":{"id":"bob"}}`)}, Hold, ReasonEnrollmentRequired, "bob"},
		{"required by app", requiredByApp, loginRequest{}, answer{Status: 200, Header: json, Body: []byte(`{"user":{"id":"bob"},"mfa_required":true}`)}, Hold, ReasonEnrollmentRequired, "bob"},
		{"not required by app", requiredByApp, loginRequest{}, answer{Status: 200, Header: json, Body: []byte(`{"user":{"id":"bob"},"mfa_required":false}`)}, Release, ReasonNoMFA, "bob"},
		{"required flag unreadable counts as required", requiredByApp, loginRequest{}, answer{Status: 200, Header: json, Body: []byte(`{"user":{"id":"bob"},"mfa_required":"yes"}`)}, Hold, ReasonEnrollmentRequired, "bob"},
		{"required pointer on a non-JSON answer", func() policy { p := requiredByApp; p.userIDHeader = "X-User-Id"; return p }(), loginRequest{}, answer{Status: 302, Header: hdr("X-User-Id", "bob", "Location", "/")}, Hold, ReasonEnrollmentRequired, "bob"},
		{"user from header", withHeader, loginRequest{}, answer{Status: 302, Header: hdr("X-User-Id", "alice", "Set-Cookie", "sessionid=x")}, Hold, ReasonEnrolled, "alice"},
		{"header and body disagree", withHeader, loginRequest{}, answer{Status: 200, Header: hdr("X-User-Id", "bob", "Content-Type", "application/json"), Body: []byte(`{"user":{"id":"alice"}}`)}, Refuse, ReasonAmbiguousUser, ""},
		{"two header values", withHeader, loginRequest{}, answer{Status: 200, Header: hdr("X-User-Id", "bob", "X-User-Id", "alice")}, Refuse, ReasonAmbiguousUser, ""},
		{"duplicate keys name two users", base, loginRequest{}, answer{Status: 200, Header: json, Body: []byte(`{"user":{"id":"bob"},"user":{"id":"alice"}}`)}, Refuse, ReasonAmbiguousUser, ""},
		{"1xx as final", base, loginRequest{}, answer{Status: 100, Header: hdr("Set-Cookie", "sid=1")}, Refuse, ReasonUnreadable, ""},
		{"unknown encoding", base, loginRequest{}, answer{Status: 200, Header: json, Body: []byte("xx"), Unreadable: "br"}, Refuse, ReasonUnreadable, ""},
		{"JSON that is not", base, loginRequest{}, answer{Status: 200, Header: json, Body: []byte(`{"user":`)}, Refuse, ReasonUnreadable, ""},
		{"JSON with trailing data", base, loginRequest{}, answer{Status: 200, Header: json, Body: []byte(`{"user":{"id":"bob"}} {"user":{"id":"alice"}}`)}, Refuse, ReasonUnreadable, ""},
		{"form page", base, loginRequest{}, answer{Status: 200, Header: hdr("Content-Type", "text/html"), Body: []byte("<form>")}, Release, ReasonNoSession, ""},
		{"form page with csrf cookie", base, loginRequest{}, answer{Status: 200, Header: hdr("Content-Type", "text/html", "Set-Cookie", "csrftoken=abc; Path=/")}, Release, ReasonNoSession, ""},
		{"cookie deleted", base, loginRequest{}, answer{Status: 200, Header: hdr("Set-Cookie", "sid=; Max-Age=0")}, Release, ReasonNoSession, ""},
		{"cookie expired", base, loginRequest{}, answer{Status: 200, Header: hdr("Set-Cookie", "sid=x; Expires=Thu, 01 Jan 1970 00:00:00 GMT")}, Release, ReasonNoSession, ""},
		{"plain redirect", base, loginRequest{}, answer{Status: 302, Header: hdr("Location", "/dashboard")}, Release, ReasonNoSession, ""},
		{"redirect with a hash route", base, loginRequest{}, answer{Status: 302, Header: hdr("Location", "/app#/home")}, Release, ReasonNoSession, ""},
		{"redirect with token in fragment", base, loginRequest{}, answer{Status: 302, Header: hdr("Location", "/app#access_token=abc")}, Refuse, ReasonUnattributed, ""},
		{"redirect with OAuth code", base, loginRequest{}, answer{Status: 303, Header: hdr("Location", "https://x/cb?code=abc&state=1")}, Refuse, ReasonUnattributed, ""},
		{"redirect with encoded token", base, loginRequest{}, answer{Status: 302, Header: hdr("Location", "/app?next=%2Fx%3Fsession%3Dabc")}, Refuse, ReasonUnattributed, ""},
		{"session cookie, nobody named", base, loginRequest{}, answer{Status: 302, Header: hdr("Set-Cookie", "sessionid=abc", "Location", "/")}, Refuse, ReasonUnattributed, ""},
		{"session in a header", base, loginRequest{}, answer{Status: 200, Header: hdr("X-Session-Token", "abc")}, Refuse, ReasonUnattributed, ""},
		{"Authorization answer header", base, loginRequest{}, answer{Status: 204, Header: hdr("Authorization", "Bearer abc")}, Refuse, ReasonUnattributed, ""},
		{"token in JSON at depth", base, loginRequest{}, answer{Status: 200, Header: json, Body: []byte(`{"data":[{"login":{"sessionToken":"abc"}}]}`)}, Refuse, ReasonUnattributed, ""},
		{"token in JSON served as text", base, loginRequest{}, answer{Status: 200, Header: hdr("Content-Type", "text/plain"), Body: []byte(`{"access_token":"abc"}`)}, Refuse, ReasonUnattributed, ""},
		{"empty token is nothing", base, loginRequest{}, answer{Status: 200, Header: json, Body: []byte(`{"token":"","csrfToken":"x"}`)}, Release, ReasonNoSession, ""},
		{"request field attributes a session", withField, loginRequest{User: "alice", UserSet: true}, answer{Status: 302, Header: hdr("Set-Cookie", "sessionid=abc")}, Hold, ReasonEnrolled, "alice"},
		{"request field without a session", withField, loginRequest{User: "alice", UserSet: true}, answer{Status: 200, Header: hdr("Content-Type", "text/html")}, Release, ReasonNoSession, ""},
		{"request field missing", withField, loginRequest{}, answer{Status: 302, Header: hdr("Set-Cookie", "sessionid=abc")}, Refuse, ReasonUnattributed, ""},
		{"introspected cookie of an enrolled user", withCreds, loginRequest{}, answer{Status: 302, Header: hdr("Set-Cookie", "sessionid=S-alice", "Set-Cookie", "csrftoken=x", "Location", "/")}, Hold, ReasonEnrolled, "alice"},
		{"introspected cookie of a user without MFA", withCreds, loginRequest{}, answer{Status: 302, Header: hdr("Set-Cookie", "sessionid=S-bob")}, Release, ReasonNoMFA, "bob"},
		{"introspection says no session", withCreds, loginRequest{}, answer{Status: 200, Header: hdr("Set-Cookie", "sessionid=anon", "Content-Type", "text/html")}, Release, ReasonNoSession, ""},
		{"introspection down", withCreds, loginRequest{}, answer{Status: 200, Header: hdr("Set-Cookie", "sessionid=S-down")}, Refuse, ReasonUnavailable, ""},
		{"token in a redirect introspected", withCreds, loginRequest{}, answer{Status: 302, Header: hdr("Location", "/app#access_token=S-alice")}, Hold, ReasonEnrolled, "alice"},
		{"batch: one enrolled among many", withCreds, loginRequest{}, answer{Status: 200, Header: json, Body: []byte(`[{"data":{"sessionToken":"S-bob"}},{"data":{"sessionToken":"S-alice"}}]`)}, Hold, ReasonEnrolled, "alice"},
		{"batch: nobody needs MFA", withCreds, loginRequest{}, answer{Status: 200, Header: json, Body: []byte(`[{"sessionToken":"S-bob"},{"sessionToken":"S-dan"}]`)}, Release, ReasonNoMFA, "bob"},
		{"credential plus an unknown cookie", withCreds, loginRequest{}, answer{Status: 302, Header: hdr("Set-Cookie", "sessionid=S-bob", "Set-Cookie", "remember_token=x")}, Refuse, ReasonUnattributed, ""},
		{"answer id wins over the request field", func() policy { p := withField; p.userIDPointer = "/user/id"; return p }(), loginRequest{User: "bob", UserSet: true}, answer{Status: 200, Header: json, Body: []byte(`{"user":{"id":"alice"}}`)}, Hold, ReasonEnrolled, "alice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := tc.a
			if a.Header == nil {
				a.Header = http.Header{}
			}
			v := tc.p.Judge(tc.req, &a, Lookups{Enrolled: testUsers, Whose: testWhose})
			if v.Action != tc.action || v.Reason != tc.reason || v.User != tc.user {
				t.Fatalf("Judge = %s/%s user %q (marker %q), want %s/%s user %q", v.Action, v.Reason, v.User, v.Marker, tc.action, tc.reason, tc.user)
			}
		})
	}
}

func TestAnswerDecode(t *testing.T) {
	t.Parallel()
	gz := gzipBytes(t, []byte(`{"user":{"id":"alice"}}`))
	tests := []struct {
		name, enc  string
		body       []byte
		want       string
		unreadable bool
		tooLarge   bool
	}{
		{"identity", "", []byte("x"), "x", false, false},
		{"gzip", "gzip", gz, `{"user":{"id":"alice"}}`, false, false},
		{"gzip twice", "gzip, gzip", gzipBytes(t, gz), `{"user":{"id":"alice"}}`, false, false},
		{"deflate", "deflate", zlibBytes(t, []byte("hello")), "hello", false, false},
		{"brotli", "br", []byte("x"), "x", true, false},
		{"corrupt gzip", "gzip", []byte("nope"), "nope", true, false},
		{"gzip bomb", "gzip", gzipBytes(t, make([]byte, 1<<20)), "", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := &answer{Status: 200, Header: http.Header{}, Body: tc.body}
			if tc.enc != "" {
				a.Header.Set("Content-Encoding", tc.enc)
			}
			err := a.decode(64 << 10)
			if tc.tooLarge {
				if !errors.Is(err, errAnswerTooLarge) {
					t.Fatalf("decode = %v, want too large", err)
				}
				return
			}
			if err != nil || (a.Unreadable != "") != tc.unreadable || string(a.Body) != tc.want {
				t.Fatalf("decode: err %v unreadable %q body %q", err, a.Unreadable, a.Body)
			}
			if !tc.unreadable && a.Header.Get("Content-Encoding") != "" {
				t.Fatal("Content-Encoding kept on a decoded body")
			}
		})
	}
}
