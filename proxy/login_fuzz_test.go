package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/login", "//Login/", "/%6Cogin", "/login;a=b", "/a/../login", `\login`, "/%252F", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		n := NormalizePath(p)
		if n != "" && !strings.HasPrefix(n, "/") {
			t.Fatalf("NormalizePath(%q) = %q, not absolute", p, n)
		}
		if n != strings.ToLower(n) || strings.HasSuffix(n, "/") {
			t.Fatalf("NormalizePath(%q) = %q, not folded", p, n)
		}
	})
}

// Whatever the login body, taking the code never panics, and a JSON body
// the code was taken from no longer carries the field.
func FuzzTakeCode(f *testing.F) {
	f.Add("application/json", `{"user":"a","totp_code":"123456"}`, "/login?totp_code=1")
	f.Add("application/x-www-form-urlencoded", `user=a&totp_code=123456`, "/login")
	f.Add("application/json", `{"totp_code":5}`, "/login")
	f.Add("text/plain", `totp_code=1`, "/login?x=%zz")
	g := &loginGate{opts: LoginOptions{CodeHeader: "X-TOTP-Code", CodeField: "totp_code", MaxBodyBytes: 4096}}
	f.Fuzz(func(t *testing.T, contentType, body, target string) {
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(target, " \r\n#") {
			return
		}
		r, err := http.NewRequest("POST", "http://x"+target, strings.NewReader(body))
		if err != nil {
			return
		}
		r.Header.Set("Content-Type", contentType)
		if _, _, err := g.takeCode(r); err != nil {
			return
		}
		if r.URL.Query().Has("totp_code") {
			t.Fatalf("query still carries the code field: %q", r.URL.RawQuery)
		}
		rest, _ := io.ReadAll(r.Body)
		if contentType == "application/json" {
			var doc map[string]any
			if json.Unmarshal(rest, &doc) == nil {
				if _, ok := doc["totp_code"]; ok {
					t.Fatalf("JSON body still carries the code field: %s", rest)
				}
			}
		}
	})
}
