package proxy

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestReadLoginRequest(t *testing.T) {
	t.Parallel()
	rr := requestReader{codeHeader: "X-TOTP-Code", codeField: foldField("totp_code"), userField: foldField("username"), maxBytes: 1024, normalize: []string{"trim", "nfkc", "casefold"},
		rememberHeader: "X-TOTP-Remember-Device", rememberField: foldField("totp_remember_device")}
	mp := func(parts ...string) string {
		var b strings.Builder
		for i := 0; i < len(parts); i += 2 {
			b.WriteString("--B\r\nContent-Disposition: form-data; name=\"" + parts[i] + "\"\r\n\r\n" + parts[i+1] + "\r\n")
		}
		return b.String() + "--B--\r\n"
	}
	tests := []struct {
		name, method, target, ctype, body string
		header                            http.Header
		status                            int // 0: accepted
		code, user                        string
		remember                          bool
		forwarded                         string // body the app gets ("" skips the check)
		forwardedQuery                    string
	}{
		{name: "json", target: "/login", ctype: "application/json", body: `{"username":"Alice","password":"pw","totp_code":"123456"}`, code: "123456", user: "alice", forwarded: `{"username":"Alice","password":"pw"}`},
		{name: "json untouched without a code", target: "/login", ctype: "application/json", body: `{"username":"alice", "password":"pw"}`, user: "alice", forwarded: `{"username":"alice", "password":"pw"}`},
		{name: "json as text/plain", target: "/login", ctype: "text/plain;charset=UTF-8", body: `{"username":"bob","totp_code":"1"}`, code: "1", user: "bob", forwarded: `{"username":"bob"}`},
		{name: "json field spelled in upper case", target: "/login", ctype: "application/json", body: `{"USERNAME":"bob","TOTP_CODE":"1"}`, code: "1", user: "bob", forwarded: `{"USERNAME":"bob"}`},
		{name: "json repeated user", target: "/login", ctype: "application/json", body: `{"username":"nobody","username":"alice"}`, status: 400},
		{name: "json user twice by case", target: "/login", ctype: "application/json", body: `{"username":"nobody","UserName":"alice"}`, status: 400},
		{name: "json repeated code", target: "/login", ctype: "application/json", body: `{"totp_code":"1","totp_code":"2"}`, status: 400},
		{name: "json trailing data", target: "/login", ctype: "application/json", body: `{"username":"bob"}{"username":"alice"}`, status: 400},
		{name: "json user not a string", target: "/login", ctype: "application/json", body: `{"username":["alice"]}`, status: 400},
		{name: "json not an object", target: "/login", ctype: "application/json", body: `["alice"]`, status: 400},
		{name: "json invalid utf-8", target: "/login", ctype: "application/json", body: "{\"username\":\"al\xffice\"}", status: 400},
		{name: "form", target: "/login", ctype: "application/x-www-form-urlencoded", body: "username=alice&password=pw&totp_code=42", code: "42", user: "alice", forwarded: "username=alice&password=pw"},
		{name: "form repeated user", target: "/login", ctype: "application/x-www-form-urlencoded", body: "username=nobody&username=alice", status: 400},
		{name: "form with semicolons", target: "/login", ctype: "application/x-www-form-urlencoded", body: "username=nobody;username=alice", status: 400},
		{name: "form fullwidth user", target: "/login", ctype: "application/x-www-form-urlencoded", body: "username=%EF%BD%81%EF%BD%8C%EF%BD%89%EF%BD%83%EF%BD%85", user: "alice"},
		{name: "form control character", target: "/login", ctype: "application/x-www-form-urlencoded", body: "username=alice%00", status: 400},
		{name: "form zero-width character", target: "/login", ctype: "application/x-www-form-urlencoded", body: "username=al%E2%80%8Bice", status: 400},
		{name: "query and body", target: "/login?username=alice", ctype: "application/x-www-form-urlencoded", body: "username=nobody", status: 400},
		{name: "code in header and body", target: "/login", ctype: "application/json", body: `{"totp_code":"1"}`, header: http.Header{"X-Totp-Code": {"2"}}, status: 400},
		{name: "code header twice", target: "/login", header: http.Header{"X-Totp-Code": {"1", "2"}}, status: 400},
		{name: "get with query", method: "GET", target: "/login?username=alice&password=pw&totp_code=9", code: "9", user: "alice", forwardedQuery: "username=alice&password=pw"},
		{name: "bad query escape", target: "/login?username=%zz", status: 400},
		{name: "multipart", target: "/login", ctype: "multipart/form-data; boundary=B", body: mp("username", "alice", "totp_code", "7", "password", "pw"), code: "7", user: "alice"},
		{name: "multipart repeated user", target: "/login", ctype: "multipart/form-data; boundary=B", body: mp("username", "nobody", "username", "alice"), status: 400},
		{name: "unknown type with a user field", target: "/login", ctype: "application/xml", body: "<username>alice</username>", status: 415},
		{name: "utf-16 charset", target: "/login", ctype: "application/json; charset=utf-16", body: `{}`, status: 415},
		{name: "gzip body", target: "/login", ctype: "application/json", body: "x", header: http.Header{"Content-Encoding": {"gzip"}}, status: 415},
		{name: "byte-order mark", target: "/login", ctype: "application/json", body: "\ufeff{\"username\":\"alice\"}", status: 400},
		{name: "too large", target: "/login", ctype: "application/json", body: `{"username":"` + strings.Repeat("a", 2000) + `"}`, status: 413},
		// The remember-device flag is read like the code: one source, taken
		// out before the app sees the request, true/1 or false/0, else 400.
		{name: "remember header true", target: "/login", header: http.Header{"X-Totp-Remember-Device": {"true"}}, remember: true},
		{name: "remember header 1", target: "/login", header: http.Header{"X-Totp-Remember-Device": {" 1 "}}, remember: true},
		{name: "remember header TRUE", target: "/login", header: http.Header{"X-Totp-Remember-Device": {"TRUE"}}, remember: true},
		{name: "remember header false", target: "/login", header: http.Header{"X-Totp-Remember-Device": {"false"}}},
		{name: "remember header 0", target: "/login", header: http.Header{"X-Totp-Remember-Device": {"0"}}},
		{name: "remember header yes", target: "/login", header: http.Header{"X-Totp-Remember-Device": {"yes"}}, status: 400},
		{name: "remember header empty", target: "/login", header: http.Header{"X-Totp-Remember-Device": {""}}, status: 400},
		{name: "remember header twice", target: "/login", header: http.Header{"X-Totp-Remember-Device": {"true", "true"}}, status: 400},
		{name: "remember json boolean", target: "/login", ctype: "application/json", body: `{"username":"alice","totp_code":"1","totp_remember_device":true}`,
			code: "1", user: "alice", remember: true, forwarded: `{"username":"alice"}`},
		{name: "remember json false", target: "/login", ctype: "application/json", body: `{"username":"alice","totp_remember_device":false}`, user: "alice", forwarded: `{"username":"alice"}`},
		{name: "remember json string", target: "/login", ctype: "application/json", body: `{"totp_remember_device":"1","username":"alice"}`, user: "alice", remember: true, forwarded: `{"username":"alice"}`},
		{name: "remember json number", target: "/login", ctype: "application/json", body: `{"totp_remember_device":1}`, remember: true, forwarded: `{}`},
		{name: "remember json upper case", target: "/login", ctype: "application/json", body: `{"TOTP_REMEMBER_DEVICE":true}`, remember: true, forwarded: `{}`},
		{name: "remember json null", target: "/login", ctype: "application/json", body: `{"totp_remember_device":null}`, status: 400},
		{name: "remember json object", target: "/login", ctype: "application/json", body: `{"totp_remember_device":{"x":1}}`, status: 400},
		{name: "remember json 2", target: "/login", ctype: "application/json", body: `{"totp_remember_device":2}`, status: 400},
		{name: "remember json twice", target: "/login", ctype: "application/json", body: `{"totp_remember_device":true,"totp_remember_device":false}`, status: 400},
		{name: "remember json twice by case", target: "/login", ctype: "application/json", body: `{"totp_remember_device":true,"Totp_Remember_Device":true}`, status: 400},
		{name: "remember header and body", target: "/login", ctype: "application/json", body: `{"totp_remember_device":true}`,
			header: http.Header{"X-Totp-Remember-Device": {"true"}}, status: 400},
		{name: "remember form", target: "/login", ctype: "application/x-www-form-urlencoded", body: "username=alice&totp_remember_device=true&password=pw",
			user: "alice", remember: true, forwarded: "username=alice&password=pw"},
		{name: "remember query", method: "GET", target: "/login?username=alice&totp_remember_device=1", user: "alice", remember: true, forwardedQuery: "username=alice"},
		{name: "remember query and form", target: "/login?totp_remember_device=1", ctype: "application/x-www-form-urlencoded", body: "totp_remember_device=1", status: 400},
		{name: "remember multipart", target: "/login", ctype: "multipart/form-data; boundary=B", body: mp("username", "alice", "totp_remember_device", "1"), user: "alice", remember: true},
		{name: "json untouched without the gate's fields", target: "/login", ctype: "application/json", body: `{"username":"alice", "remember":true}`,
			user: "alice", forwarded: `{"username":"alice", "remember":true}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			method := tc.method
			if method == "" {
				method = "POST"
			}
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			r, _ := http.NewRequest(method, "http://app"+tc.target, body)
			if tc.ctype != "" {
				r.Header.Set("Content-Type", tc.ctype)
			}
			for k, v := range tc.header {
				r.Header[k] = v
			}
			got, err := rr.read(r)
			if tc.status != 0 {
				re, ok := err.(*requestError)
				if !ok || re.Status != tc.status {
					t.Fatalf("read = %v, want status %d", err, tc.status)
				}
				return
			}
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if got.Code != tc.code || got.User != tc.user || got.UserSet != (tc.user != "") || got.Remember != tc.remember {
				t.Fatalf("read = %+v, want code %q user %q remember %v", got, tc.code, tc.user, tc.remember)
			}
			if len(r.Header.Values("X-Totp-Code")) > 0 || len(r.Header.Values("X-Totp-Remember-Device")) > 0 {
				t.Fatal("code or remember header forwarded")
			}
			fwd, _ := io.ReadAll(r.Body)
			if tc.forwarded != "" && string(fwd) != tc.forwarded {
				t.Fatalf("forwarded body %q, want %q", fwd, tc.forwarded)
			}
			for _, field := range []string{"totp_code", "totp_remember_device"} {
				if strings.Contains(strings.ToLower(string(fwd)), field) || strings.Contains(r.URL.RawQuery, field) {
					t.Fatalf("%s forwarded: %q %q", field, fwd, r.URL.RawQuery)
				}
			}
			if tc.forwardedQuery != "" && r.URL.RawQuery != tc.forwardedQuery {
				t.Fatalf("forwarded query %q, want %q", r.URL.RawQuery, tc.forwardedQuery)
			}
			if int64(len(fwd)) != r.ContentLength {
				t.Fatalf("Content-Length %d for a %d-byte body", r.ContentLength, len(fwd))
			}
		})
	}
}

func TestNormalizePath(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"/login", "/Login", "//login/", "/login;jsessionid=x", "/%6Cogin", "/%256Cogin", "/a/../login", `\login`,
		"/login.json", "/LOGIN.JSON", "/login.html", "/log%C4%B1n", "/LOG%C4%B0N", "/%EF%BD%8C%EF%BD%8F%EF%BD%87%EF%BD%89%EF%BD%8E", "/lo%C5%BFin"[:0] + "/login/.", "/login.x-json", "/login.json_api", "/login.application", "/login/%0A", "/login%20"} {
		if got := NormalizePath(p); got != "/login" {
			t.Errorf("NormalizePath(%q) = %q, want /login", p, got)
		}
	}
	for _, p := range []string{"/logins", "/login/x", "/log", "/"} {
		if got := NormalizePath(p); got == "/login" {
			t.Errorf("NormalizePath(%q) = /login", p)
		}
	}
	if got := NormalizePath("/%E2%84%AAey"); got != NormalizePath("/key") { // Kelvin sign
		t.Errorf("Kelvin sign: %q", got)
	}
	if got := NormalizePath("/%C5%BFession"); got != NormalizePath("/session") { // long s
		t.Errorf("long s: %q", got)
	}
}
