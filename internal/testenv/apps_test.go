package testenv_test

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/totpgate/totpgate/internal/testenv"
)

// The apps do what the differential tests rely on, talked to directly
// (no sidecar in between).

// appClient follows no redirect, keeps no cookies and leaves
// Accept-Encoding to the test, so every answer is seen as sent.
var appClient = &http.Client{
	Timeout:       15 * time.Second,
	Transport:     &http.Transport{DisableCompression: true},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

type answer struct {
	status int
	header http.Header
	body   string
}

func (a answer) cookie(name string) *http.Cookie {
	for _, c := range (&http.Response{Header: a.header}).Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func do(t *testing.T, method, u, contentType, body string, cookie *http.Cookie, header ...string) answer {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, r)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if cookie != nil {
		req.AddCookie(&http.Cookie{Name: cookie.Name, Value: cookie.Value})
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := appClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read: %v", method, u, err)
	}
	return answer{resp.StatusCode, resp.Header, string(b)}
}

// me asserts what GET /api/me says about cookie: the user, or "" for 401.
func me(t *testing.T, base string, cookie *http.Cookie, want string) answer {
	t.Helper()
	a := do(t, "GET", base+"/api/me", "", "", cookie)
	if want == "" {
		if a.status != http.StatusUnauthorized {
			t.Fatalf("GET /api/me with %v: %d %q, want 401", cookie, a.status, a.body)
		}
		return a
	}
	var got struct{ ID string }
	if a.status != http.StatusOK || json.Unmarshal([]byte(a.body), &got) != nil || got.ID != want {
		t.Fatalf("GET /api/me with %v: %d %q, want 200 {\"id\":%q}", cookie, a.status, a.body, want)
	}
	return a
}

// expectContinue sends a POST with Expect: 100-continue on a raw
// connection and asserts the server says 100 Continue before the body is
// sent, then answers with status want once it has the body.
func expectContinue(t *testing.T, base, path, contentType, body string, want int) {
	t.Helper()
	u, _ := url.Parse(base)
	conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	head := "POST " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nContent-Type: " + contentType +
		"\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\nExpect: 100-continue\r\n\r\n"
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("Expect: 100-continue to %s: first line %q, %v; want HTTP/1.1 100 Continue before the body", path, line, err)
	}
	for { // the interim answer's empty header block
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if l == "\r\n" {
			break
		}
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, body); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("answer after 100 Continue: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != want {
		t.Fatalf("POST %s after 100 Continue: %d, want %d", path, resp.StatusCode, want)
	}
}

func TestExpressApp(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{testenv.LoginRegenerate, testenv.LoginInPlace} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			base := testenv.Express(t, mode)
			login := func(t *testing.T, user, password string, cookie *http.Cookie) answer {
				t.Helper()
				b, _ := json.Marshal(map[string]string{"username": user, "password": password})
				return do(t, "POST", base+"/login", "application/json", string(b), cookie)
			}

			a := login(t, "alice", "pw", nil)
			if a.status != http.StatusOK || strings.TrimSpace(a.body) != `{"user":{"id":"alice"}}` {
				t.Fatalf("login: %d %q", a.status, a.body)
			}
			sid := a.cookie("connect.sid")
			if sid == nil || sid.Value == "" {
				t.Fatalf("login set no connect.sid: %v", a.header["Set-Cookie"])
			}
			me(t, base, sid, "alice")
			me(t, base, nil, "")

			a = login(t, "alice", "wrong", nil)
			if a.status != http.StatusUnauthorized || a.cookie("connect.sid") != nil {
				t.Fatalf("wrong password: %d %q %v, want 401 and no session", a.status, a.body, a.header["Set-Cookie"])
			}

			// Usernames are lower-cased; routing ignores case and a trailing
			// slash; text/plain bodies are parsed as JSON.
			a = do(t, "POST", base+"/LOGIN/", "text/plain", `{"username":"BOB","password":"pw"}`, nil)
			if a.status != http.StatusOK || a.cookie("connect.sid") == nil {
				t.Fatalf("POST /LOGIN/ as BOB: %d %q", a.status, a.body)
			}
			me(t, base, a.cookie("connect.sid"), "bob")

			// Form bodies, GET query strings; a repeated field fails.
			a = do(t, "POST", base+"/login", "application/x-www-form-urlencoded", "username=carol&password=pw", nil)
			me(t, base, a.cookie("connect.sid"), "carol")
			a = do(t, "GET", base+"/login?username=dave&password=pw", "", "", nil)
			me(t, base, a.cookie("connect.sid"), "dave")
			a = do(t, "POST", base+"/login", "application/x-www-form-urlencoded", "username=erin&username=alice&password=pw", nil)
			if a.status != http.StatusUnauthorized || a.cookie("connect.sid") != nil {
				t.Fatalf("repeated username: %d %q, want 401", a.status, a.body)
			}

			// An anonymous visit gets a session; logging in with it either
			// regenerates the id or logs the old one in (fixation).
			a = do(t, "GET", base+"/", "", "", nil)
			if a.status != http.StatusOK || a.body != "home anonymous" {
				t.Fatalf("GET /: %d %q", a.status, a.body)
			}
			anon := a.cookie("connect.sid")
			if anon == nil {
				t.Fatalf("GET / set no connect.sid: %v", a.header["Set-Cookie"])
			}
			me(t, base, anon, "")
			a = login(t, "frank", "pw", anon)
			if a.status != http.StatusOK {
				t.Fatalf("login with the anonymous cookie: %d %q", a.status, a.body)
			}
			sessionAfterLogin(t, base, mode, anon, a.cookie("connect.sid"), "frank")

			// Logout ends the session.
			if a := do(t, "POST", base+"/logout", "", "", sid); a.status != http.StatusOK {
				t.Fatalf("logout: %d %q", a.status, a.body)
			}
			me(t, base, sid, "")

			// Every answer is gzip'd when accepted, however small.
			a = do(t, "GET", base+"/api/me", "", "", nil, "Accept-Encoding", "gzip")
			if a.header.Get("Content-Encoding") != "gzip" {
				t.Fatalf("Accept-Encoding: gzip: Content-Encoding %q", a.header.Get("Content-Encoding"))
			}
			zr, err := gzip.NewReader(strings.NewReader(a.body))
			if err != nil {
				t.Fatal(err)
			}
			if b, err := io.ReadAll(zr); err != nil || !strings.Contains(string(b), "error") {
				t.Fatalf("gunzipped body %q, %v", b, err)
			}
			if a := do(t, "GET", base+"/api/me", "", "", nil); a.header.Get("Content-Encoding") != "" {
				t.Fatalf("no Accept-Encoding: Content-Encoding %q", a.header.Get("Content-Encoding"))
			}

			expectContinue(t, base, "/login", "application/json", `{"username":"grace","password":"pw"}`, http.StatusOK)
		})
	}
}

func TestDjangoApp(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode       string
		userHeader bool
	}{
		{testenv.LoginRegenerate, false},
		{testenv.LoginInPlace, false},
		{testenv.LoginRegenerate, true},
		{testenv.LoginInPlace, true},
	} {
		name := tc.mode
		if tc.userHeader {
			name += "+user-header"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			base := testenv.Django(t, tc.mode, tc.userHeader)
			const form = "application/x-www-form-urlencoded"
			login := func(t *testing.T, user, password string, cookie *http.Cookie) answer {
				t.Helper()
				v := url.Values{"username": {user}, "password": {password}}
				return do(t, "POST", base+"/login/", form, v.Encode(), cookie)
			}
			wantHeader := func(t *testing.T, a answer, user string) {
				t.Helper()
				want := ""
				if tc.userHeader {
					want = user
				}
				if got := a.header.Get("X-User-Id"); got != want {
					t.Fatalf("X-User-Id %q, want %q", got, want)
				}
			}

			// The stock form renders on GET.
			a := do(t, "GET", base+"/login/", "", "", nil)
			if a.status != http.StatusOK || !strings.Contains(a.body, `name="username"`) || !strings.Contains(a.body, `name="password"`) {
				t.Fatalf("GET /login/: %d %q", a.status, a.body)
			}

			a = login(t, "alice", "pw", nil)
			if a.status != http.StatusFound || a.header.Get("Location") != "/" {
				t.Fatalf("login: %d, Location %q: %q", a.status, a.header.Get("Location"), a.body)
			}
			wantHeader(t, a, "alice")
			sid := a.cookie("sessionid")
			if sid == nil || sid.Value == "" {
				t.Fatalf("login set no sessionid: %v", a.header["Set-Cookie"])
			}
			wantHeader(t, me(t, base, sid, "alice"), "alice")
			wantHeader(t, me(t, base, nil, ""), "")

			// A failed login renders the form again (200), with no session.
			a = login(t, "alice", "wrong", nil)
			if a.status != http.StatusOK || a.cookie("sessionid") != nil || !strings.Contains(a.body, "errorlist") {
				t.Fatalf("wrong password: %d %v %q, want the form again and no session", a.status, a.header["Set-Cookie"], a.body)
			}
			wantHeader(t, a, "")
			// Usernames are case-sensitive.
			if a := login(t, "ALICE", "pw", nil); a.status != http.StatusOK || a.cookie("sessionid") != nil {
				t.Fatalf("ALICE logged in: %d %v", a.status, a.header["Set-Cookie"])
			}

			// AuthenticationForm NFKC-normalizes the username: fullwidth
			// ａｌｉｃｅ is alice.
			a = login(t, "ａｌｉｃｅ", "pw", nil)
			if a.status != http.StatusFound {
				t.Fatalf("fullwidth login: %d %q", a.status, a.body)
			}
			wantHeader(t, a, "alice")
			me(t, base, a.cookie("sessionid"), "alice")

			// APPEND_SLASH: POST /login answers 301 to /login/ without
			// logging in (a client following it re-sends a GET).
			a = do(t, "POST", base+"/login", form, "username=bob&password=pw", nil)
			if a.status != http.StatusMovedPermanently || a.header.Get("Location") != "/login/" || a.cookie("sessionid") != nil {
				t.Fatalf("POST /login: %d, Location %q, %v", a.status, a.header.Get("Location"), a.header["Set-Cookie"])
			}

			// An anonymous visit gets a session; logging in with it either
			// cycles the key or logs the old one in (fixation).
			a = do(t, "GET", base+"/", "", "", nil)
			if a.status != http.StatusOK || a.body != "home anonymous" {
				t.Fatalf("GET /: %d %q", a.status, a.body)
			}
			anon := a.cookie("sessionid")
			if anon == nil {
				t.Fatalf("GET / set no sessionid: %v", a.header["Set-Cookie"])
			}
			me(t, base, anon, "")
			a = login(t, "frank", "pw", anon)
			if a.status != http.StatusFound {
				t.Fatalf("login with the anonymous cookie: %d %q", a.status, a.body)
			}
			got := a.cookie("sessionid")
			if got == nil {
				t.Fatalf("login set no sessionid: %v", a.header["Set-Cookie"])
			}
			sessionAfterLogin(t, base, tc.mode, anon, got, "frank")

			// Logout ends the session.
			if a := do(t, "POST", base+"/logout/", "", "", sid); a.status != http.StatusOK {
				t.Fatalf("logout: %d %q", a.status, a.body)
			}
			me(t, base, sid, "")

			// GZipMiddleware compresses bodies of 200 bytes and more.
			a = do(t, "GET", base+"/login/", "", "", nil, "Accept-Encoding", "gzip")
			if a.header.Get("Content-Encoding") != "gzip" {
				t.Fatalf("Accept-Encoding: gzip on the form: Content-Encoding %q", a.header.Get("Content-Encoding"))
			}

			expectContinue(t, base, "/login/", form, "username=grace&password=pw", http.StatusFound)
		})
	}
}

// sessionAfterLogin checks what a login did to the anonymous session anon:
// in place, the same session (fresh, the answer's cookie, is nil or the
// same id) is now user's; regenerated, fresh is a new id that is user's
// and anon stays anonymous.
func sessionAfterLogin(t *testing.T, base, mode string, anon, fresh *http.Cookie, user string) {
	t.Helper()
	if mode == testenv.LoginInPlace {
		if fresh != nil && fresh.Value != anon.Value {
			t.Fatalf("inplace login changed the session id")
		}
		me(t, base, anon, user)
		if h := do(t, "GET", base+"/", "", "", anon); h.body != "home "+user {
			t.Fatalf("GET / with the fixed cookie: %q", h.body)
		}
		return
	}
	if fresh == nil || fresh.Value == anon.Value {
		t.Fatalf("regenerate login kept the session id")
	}
	me(t, base, anon, "")
	me(t, base, fresh, user)
}
