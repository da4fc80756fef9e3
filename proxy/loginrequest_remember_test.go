package proxy

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// The remember-device flag is read like the code: one source, taken out
// before the app sees the request, true/1 or false/0, anything else 400.
func TestReadRememberDevice(t *testing.T) {
	t.Parallel()
	rr := requestReader{codeHeader: "X-TOTP-Code", codeField: foldField("totp_code"), rememberHeader: "X-TOTP-Remember-Device",
		rememberField: foldField("totp_remember_device"), userField: foldField("username"), maxBytes: 1024}
	mp := "--B\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nalice\r\n" +
		"--B\r\nContent-Disposition: form-data; name=\"totp_remember_device\"\r\n\r\n1\r\n--B--\r\n"
	tests := []struct {
		name, method, target, ctype, body string
		header                            http.Header
		status                            int // 0: accepted
		remember                          bool
		forwarded, forwardedQuery         string
	}{
		{name: "header true", target: "/login", header: http.Header{"X-Totp-Remember-Device": {"true"}}, remember: true},
		{name: "header 1", target: "/login", header: http.Header{"X-Totp-Remember-Device": {" 1 "}}, remember: true},
		{name: "header TRUE", target: "/login", header: http.Header{"X-Totp-Remember-Device": {"TRUE"}}, remember: true},
		{name: "header false", target: "/login", header: http.Header{"X-Totp-Remember-Device": {"false"}}},
		{name: "header 0", target: "/login", header: http.Header{"X-Totp-Remember-Device": {"0"}}},
		{name: "header yes", target: "/login", header: http.Header{"X-Totp-Remember-Device": {"yes"}}, status: 400},
		{name: "header empty", target: "/login", header: http.Header{"X-Totp-Remember-Device": {""}}, status: 400},
		{name: "header twice", target: "/login", header: http.Header{"X-Totp-Remember-Device": {"true", "true"}}, status: 400},
		{name: "json boolean", target: "/login", ctype: "application/json", body: `{"username":"alice","totp_code":"1","totp_remember_device":true}`,
			remember: true, forwarded: `{"username":"alice"}`},
		{name: "json false", target: "/login", ctype: "application/json", body: `{"username":"alice","totp_remember_device":false}`, forwarded: `{"username":"alice"}`},
		{name: "json string", target: "/login", ctype: "application/json", body: `{"totp_remember_device":"1","username":"alice"}`, remember: true, forwarded: `{"username":"alice"}`},
		{name: "json number", target: "/login", ctype: "application/json", body: `{"totp_remember_device":1}`, remember: true, forwarded: `{}`},
		{name: "json spelled in upper case", target: "/login", ctype: "application/json", body: `{"TOTP_REMEMBER_DEVICE":true}`, remember: true, forwarded: `{}`},
		{name: "json null", target: "/login", ctype: "application/json", body: `{"totp_remember_device":null}`, status: 400},
		{name: "json object", target: "/login", ctype: "application/json", body: `{"totp_remember_device":{"x":1}}`, status: 400},
		{name: "json 2", target: "/login", ctype: "application/json", body: `{"totp_remember_device":2}`, status: 400},
		{name: "json twice", target: "/login", ctype: "application/json", body: `{"totp_remember_device":true,"totp_remember_device":false}`, status: 400},
		{name: "json twice by case", target: "/login", ctype: "application/json", body: `{"totp_remember_device":true,"Totp_Remember_Device":true}`, status: 400},
		{name: "header and body", target: "/login", ctype: "application/json", body: `{"totp_remember_device":true}`,
			header: http.Header{"X-Totp-Remember-Device": {"true"}}, status: 400},
		{name: "form", target: "/login", ctype: "application/x-www-form-urlencoded", body: "username=alice&totp_remember_device=true&password=pw",
			remember: true, forwarded: "username=alice&password=pw"},
		{name: "query", method: "GET", target: "/login?username=alice&totp_remember_device=1", remember: true, forwardedQuery: "username=alice"},
		{name: "query and form", target: "/login?totp_remember_device=1", ctype: "application/x-www-form-urlencoded", body: "totp_remember_device=1", status: 400},
		{name: "multipart", target: "/login", ctype: "multipart/form-data; boundary=B", body: mp, remember: true},
		{name: "json untouched without the gate's fields", target: "/login", ctype: "application/json", body: `{"username":"alice", "remember":true}`,
			forwarded: `{"username":"alice", "remember":true}`},
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
				if re, ok := err.(*requestError); !ok || re.Status != tc.status {
					t.Fatalf("read = %+v, %v; want status %d", got, err, tc.status)
				}
				return
			}
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if got.Remember != tc.remember {
				t.Errorf("Remember = %v, want %v", got.Remember, tc.remember)
			}
			fwd, _ := io.ReadAll(r.Body)
			if len(r.Header.Values("X-Totp-Remember-Device")) > 0 || strings.Contains(strings.ToLower(string(fwd)), "remember_device") ||
				strings.Contains(r.URL.RawQuery, "remember") {
				t.Errorf("the flag reached the app: header %q body %q query %q", r.Header.Values("X-Totp-Remember-Device"), fwd, r.URL.RawQuery)
			}
			if tc.forwarded != "" && string(fwd) != tc.forwarded {
				t.Errorf("forwarded body %q, want %q", fwd, tc.forwarded)
			}
			if tc.forwardedQuery != "" && r.URL.RawQuery != tc.forwardedQuery {
				t.Errorf("forwarded query %q, want %q", r.URL.RawQuery, tc.forwardedQuery)
			}
			if int64(len(fwd)) != r.ContentLength {
				t.Errorf("Content-Length %d for a %d-byte body", r.ContentLength, len(fwd))
			}
		})
	}
}
