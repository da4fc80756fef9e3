package proxy

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/totpgate/totpgate/identity"
	"github.com/totpgate/totpgate/mfa/mfatest"
)

func TestStepUpRouteMatching(t *testing.T) {
	t.Parallel()
	rs := newStepUpRoutes([]StepUpRoute{
		{Path: "/settings/password", Methods: []string{"POST"}, MaxAge: 5 * time.Minute},
		{Path: "/settings/password", Methods: []string{"post", "PUT"}, MaxAge: time.Minute},
		{Path: "/account/delete", Methods: []string{"DELETE"}, MaxAge: 10 * time.Minute},
		{Path: "/export", Methods: []string{"GET"}, MaxAge: 10 * time.Minute},
		{Path: "/danger", MaxAge: 30 * time.Second},
	})
	for _, tc := range []struct {
		method, target string
		header         http.Header
		want           string        // the route's path, "" for none
		maxAge         time.Duration // of the route that wins
	}{
		{"POST", "/settings/password", nil, "/settings/password", time.Minute}, // the shorter max_age of the two
		{"PUT", "/settings/password", nil, "/settings/password", time.Minute},
		{"post", "/settings/password", nil, "/settings/password", time.Minute},
		{"POST", "/Settings/Password/", nil, "/settings/password", time.Minute},
		{"POST", "//settings//password", nil, "/settings/password", time.Minute},
		{"POST", "/settings/password.json", nil, "/settings/password", time.Minute},
		{"POST", "/settings/%70assword", nil, "/settings/password", time.Minute},
		{"POST", "/settings/password;jsessionid=1?x=1", nil, "/settings/password", time.Minute},
		{"POST", "/x/../settings/password", nil, "/settings/password", time.Minute},
		{"POST", "/settings%2Fpassword", nil, "/settings/password", time.Minute},
		{"GET", "/settings/password", nil, "", 0},
		{"GET", "/settings/password", http.Header{"X-Http-Method-Override": {"POST"}}, "/settings/password", time.Minute},
		{"GET", "/settings/password", http.Header{"X-Method-Override": {"put"}}, "/settings/password", time.Minute},
		{"GET", "/settings/password?_method=POST", nil, "/settings/password", time.Minute},
		{"DELETE", "/account/delete", nil, "/account/delete", 10 * time.Minute},
		{"POST", "/account/delete", nil, "/account/delete", 10 * time.Minute}, // a form's _method=DELETE
		{"GET", "/account/delete", nil, "", 0},
		{"GET", "/export", nil, "/export", 10 * time.Minute},
		{"HEAD", "/export", nil, "/export", 10 * time.Minute},
		{"POST", "/export", nil, "", 0},
		{"OPTIONS", "/danger", nil, "/danger", 30 * time.Second},
		{"BREW", "/DANGER/", nil, "/danger", 30 * time.Second},
		{"POST", "/settings/passwords", nil, "", 0},
		{"POST", "/settings", nil, "", 0},
		{"POST", "/", nil, "", 0},
	} {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			r := httptest.NewRequest("GET", tc.target, nil)
			r.Method = tc.method
			for k, v := range tc.header {
				r.Header[k] = v
			}
			rt := rs.match(r)
			switch {
			case tc.want == "" && rt != nil:
				t.Fatalf("matched %s, want none", rt.path)
			case tc.want != "" && (rt == nil || rt.path != tc.want || rt.maxAge != tc.maxAge):
				t.Fatalf("match = %+v, want %s with max age %s", rt, tc.want, tc.maxAge)
			}
		})
	}
	if newStepUpRoutes(nil).match(httptest.NewRequest("POST", "/settings/password", nil)) != nil {
		t.Fatal("no routes matched a request")
	}
}

func TestSessionOf(t *testing.T) {
	t.Parallel()
	parse := func(spec string) identity.Credential {
		c, err := identity.ParseCredential(spec)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	cs := newCredentials([]Credential{parse("cookie:sid"), parse("json:token as bearer")})
	req := func(h http.Header) *http.Request {
		r := httptest.NewRequest("POST", "/", nil)
		r.Header = h
		return r
	}
	hashOf := func(h http.Header) ([]byte, bool) { return cs.sessionOf(req(h)) }

	s1, ok1 := hashOf(http.Header{"Cookie": {"a=1; sid=S1"}})
	s1again, _ := hashOf(http.Header{"Cookie": {"sid=S1; b=2"}, "X-Other": {"x"}})
	s2, _ := hashOf(http.Header{"Cookie": {"sid=S2"}})
	withBearer, _ := hashOf(http.Header{"Cookie": {"sid=S1"}, "Authorization": {"Bearer T"}})
	if !ok1 || len(s1) != 32 || !bytes.Equal(s1, s1again) || bytes.Equal(s1, s2) || bytes.Equal(s1, withBearer) {
		t.Fatalf("hashes: S1 %x, S1 again %x, S2 %x, S1+bearer %x", s1, s1again, s2, withBearer)
	}
	for _, tc := range []struct {
		name       string
		header     http.Header
		none, ambi bool
	}{
		{"nothing", http.Header{}, true, false},
		{"other cookies", http.Header{"Cookie": {"a=1"}}, true, false},
		{"an empty session cookie", http.Header{"Cookie": {"sid="}}, true, false},
		{"a password (Basic)", http.Header{"Authorization": {"Basic YTpi"}}, true, false},
		{"a bearer token", http.Header{"Authorization": {"Bearer T"}}, false, false},
		{"the cookie twice", http.Header{"Cookie": {"sid=S1; sid=S2"}}, false, true},
		{"the cookie in two Cookie lines", http.Header{"Cookie": {"sid=S1", "sid=S2"}}, false, true},
		{"the same cookie twice", http.Header{"Cookie": {"sid=S1; sid=S1"}}, false, true},
		// Go drops this cookie, Django's parser undoes the escape.
		{"a value Go cannot read", http.Header{"Cookie": {`sid="S\061"`}}, false, true},
		{"two Authorization headers", http.Header{"Authorization": {"Bearer A", "Bearer B"}}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, ok := hashOf(tc.header)
			switch {
			case tc.ambi && ok:
				t.Fatalf("ambiguous credentials taken: %x", h)
			case !tc.ambi && !ok:
				t.Fatal("refused as ambiguous")
			case tc.none && h != nil, !tc.none && !tc.ambi && h == nil:
				t.Fatalf("hash %x, want none %v", h, tc.none)
			}
		})
	}
}

func TestIdentityCache(t *testing.T) {
	t.Parallel()
	clock := mfatest.NewClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	c := newIdentityCache(10*time.Second, 2, clock.Now)
	a, b, d := [32]byte{1}, [32]byte{2}, [32]byte{3}
	if _, ok := c.get(a); ok {
		t.Fatal("hit on an empty cache")
	}
	c.put(a, "alice")
	c.put(b, "")
	if u, ok := c.get(a); !ok || u != "alice" {
		t.Fatalf("get after put = %q %v", u, ok)
	}
	if _, ok := c.get(b); ok || c.len() != 1 {
		t.Fatal("a negative answer was kept")
	}
	clock.Add(9 * time.Second)
	if _, ok := c.get(a); !ok {
		t.Fatal("miss before the ttl")
	}
	clock.Add(time.Second)
	if _, ok := c.get(a); ok || c.len() != 0 {
		t.Fatal("hit at the ttl, or the expired entry was kept")
	}
	// Bounded: a third entry forgets one of the two.
	c.put(a, "alice")
	c.put(b, "bob")
	c.put(d, "dave")
	if c.len() != 2 {
		t.Fatalf("%d entries, want at most 2", c.len())
	}
	if u, ok := c.get(d); !ok || u != "dave" {
		t.Fatal("the newest entry was not kept")
	}
	// Refreshing a kept entry forgets nothing.
	c.put(d, "dave")
	if c.len() != 2 {
		t.Fatalf("%d entries after a refresh", c.len())
	}
	if newIdentityCache(0, 10, clock.Now) != nil {
		t.Fatal("ttl 0 must turn the cache off")
	}
	var off *identityCache
	off.put(a, "alice")
	if _, ok := off.get(a); ok {
		t.Fatal("a nil cache answered")
	}
}
