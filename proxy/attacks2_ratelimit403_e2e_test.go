package proxy_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

// R2 again, with 403: django-ratelimit's default (block=True) raises
// Ratelimited, a PermissionDenied: 403. notLoggedIn takes a 403 for
// "no session" for a credential found in an answer.
func TestAttack2IdentityRateLimited403(t *testing.T) {
	var meCalls atomic.Int64
	app := http.NewServeMux()
	app.HandleFunc("/api/me", func(w http.ResponseWriter, r *http.Request) {
		if meCalls.Add(1) > 5 {
			http.Error(w, "Forbidden", http.StatusForbidden) // @ratelimit(key="ip", rate="5/m")
			return
		}
		if strings.Contains(r.Header.Get("Cookie"), "sid=S-alice") {
			io.WriteString(w, `{"id":"alice"}`)
			return
		}
		w.WriteHeader(401)
	})
	app.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "sid", Value: "S-alice", Path: "/"})
		http.Redirect(w, r, "/", http.StatusFound)
	})
	front := attackFront(t, app, "cookie:sid")
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for range 6 {
		res, err := c.Get(front + "/api/me")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
	}
	res, err := c.PostForm(front+"/login", url.Values{"username": {"alice"}, "password": {"pw"}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if sc := res.Header.Get("Set-Cookie"); strings.Contains(sc, "S-alice") {
		t.Errorf("enrolled alice's session released after the identity endpoint was rate limited with 403 (status %d)", res.StatusCode)
	}
}
