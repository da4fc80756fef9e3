package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/login", "//Login/", "/%6Cogin", "/login;a=b", "/a/../login", `\login`, "/%252F", "", "/log%C4%B1n", "/login.json", "/ｌｏｇｉｎ"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		n := NormalizePath(p)
		if !strings.HasPrefix(n, "/") && n != "" {
			t.Fatalf("NormalizePath(%q) = %q, not absolute", p, n)
		}
		if n != foldRunes(n) || (len(n) > 1 && strings.HasSuffix(n, "/")) {
			t.Fatalf("NormalizePath(%q) = %q, not folded", p, n)
		}
	})
}

// Whatever the login request, reading it never panics, and a request it
// accepts reaches the app without the code field anywhere the app reads.
func FuzzReadLoginRequest(f *testing.F) {
	f.Add("application/json", `{"user":"a","totp_code":"123456"}`, "/login?totp_code=1")
	f.Add("application/x-www-form-urlencoded", `user=a&totp_code=123456`, "/login")
	f.Add("application/json", `{"totp_code":5}`, "/login")
	f.Add("text/plain", `{"user":"a","TOTP_CODE":"1"}`, "/login?x=%zz")
	f.Add("multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=\"totp_code\"\r\n\r\n1\r\n--b--\r\n", "/login")
	f.Add("application/json", `{"user":"a","user":"b"}`, "/login?user=c")
	rr := &requestReader{codeHeader: "X-TOTP-Code", codeField: foldField("totp_code"), userField: foldField("user"), maxBytes: 4096, normalize: []string{"trim", "nfkc", "casefold"}}
	f.Fuzz(func(t *testing.T, contentType, body, target string) {
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(target, " \r\n#") {
			return
		}
		r, err := http.NewRequest("POST", "http://x"+target, strings.NewReader(body))
		if err != nil {
			return
		}
		r.Header.Set("Content-Type", contentType)
		if _, err := rr.read(r); err != nil {
			return
		}
		q, _ := url.ParseQuery(r.URL.RawQuery)
		for k := range q {
			if foldField(k) == rr.codeField {
				t.Fatalf("query still carries the code field: %q", r.URL.RawQuery)
			}
		}
		rest, _ := io.ReadAll(r.Body)
		var doc map[string]json.RawMessage
		if json.Unmarshal(rest, &doc) == nil {
			for k := range doc {
				if foldField(k) == rr.codeField {
					t.Fatalf("JSON body still carries the code field: %s", rest)
				}
			}
		}
		if strings.HasPrefix(contentType, "application/x-www-form-urlencoded") {
			form, _ := url.ParseQuery(string(rest))
			for k := range form {
				if foldField(k) == rr.codeField {
					t.Fatalf("form still carries the code field: %s", rest)
				}
			}
		}
	})
}

// Whatever the app answers, the verdict for an enrolled user never
// releases an answer that sets a cookie or names the user: only a refused
// login or an answer with nothing that could be a session goes out.
func FuzzJudge(f *testing.F) {
	f.Add(200, "application/json", "", "sid=1", "", `{"user":{"id":"alice"}}`)
	f.Add(302, "", "", "", "/app#access_token=x", "")
	f.Add(200, "application/json", "gzip", "", "", "\x1f\x8b")
	f.Add(200, "text/html", "", "", "", "<form>")
	f.Add(103, "", "", "a=b", "", "")
	f.Add(200, "application/json", "", "", "", `{"data":[{"sessionToken":"x"}]}`)
	p := &policy{userIDPointer: "/user/id", refused: RefusalSignal{MinStatus: 400}, nonSessionCookies: map[string]bool{"csrftoken": true}}
	enrolled := func(string) (bool, error) { return true, nil }
	f.Fuzz(func(t *testing.T, status int, contentType, encoding, cookie, location, body string) {
		h := http.Header{}
		for k, v := range map[string]string{"Content-Type": contentType, "Content-Encoding": encoding, "Set-Cookie": cookie, "Location": location} {
			if v != "" {
				h.Set(k, v)
			}
		}
		a := &answer{Status: status, Header: h, Body: []byte(body)}
		if err := a.decode(1 << 16); err != nil {
			return
		}
		v := p.Judge(loginRequest{}, a, Lookups{Enrolled: enrolled})
		if v.Action != Release {
			return
		}
		switch {
		case v.Reason == ReasonAppRefused && status >= 400:
		case v.Reason == ReasonNoSession && status >= 200 && status < 400:
			if c, err := http.ParseSetCookie(cookie); cookie != "" && (err != nil || (!deletes(c) && c.Name != "csrftoken")) {
				t.Fatalf("released an answer that sets cookie %q", cookie)
			}
		default:
			t.Fatalf("released status %d for an enrolled user: %+v", status, v)
		}
	})
}
