package identity

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// appIdentity is an app's identity endpoint: it answers what the test
// table says and records what it was sent.
type appIdentity struct {
	*httptest.Server
	mu   sync.Mutex
	seen []*http.Request
}

func newAppIdentity(t *testing.T, answer func(w http.ResponseWriter, r *http.Request)) *appIdentity {
	a := &appIdentity{}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.seen = append(a.seen, r.Clone(context.Background()))
		a.mu.Unlock()
		answer(w, r)
	}))
	t.Cleanup(a.Close)
	return a
}

func TestIdentifyMeansWhatTheAppSays(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		body   string
		want   error
		user   string
	}{
		{"user", 200, `{"id":"alice"}`, nil, "alice"},
		{"numeric id", 200, `{"id":42}`, nil, "42"},
		{"401", 401, ``, ErrUnauthenticated, ""},
		{"403", 403, ``, ErrUnauthenticated, ""},
		{"419 (Laravel: session expired)", 419, ``, ErrUnauthenticated, ""},
		{"440 (IIS: login time-out)", 440, ``, ErrUnauthenticated, ""},
		{"2xx without an id", 200, `{"id":""}`, ErrUnauthenticated, ""},
		{"redirect to the login page is not followed", 302, ``, ErrUpstream, ""},
		{"5xx", 503, ``, ErrUpstream, ""},
		{"not JSON", 200, `<html>`, ErrUpstream, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			app := newAppIdentity(t, func(w http.ResponseWriter, r *http.Request) {
				if tc.status == 302 {
					http.Redirect(w, r, "/login", http.StatusFound)
					return
				}
				w.WriteHeader(tc.status)
				w.Write([]byte(tc.body))
			})
			i, err := NewIntrospector(app.Client(), app.URL+"/api/me", []string{"Cookie"}, "/id", "")
			if err != nil {
				t.Fatal(err)
			}
			r, _ := http.NewRequest("GET", "http://app/x", nil)
			r.Header.Set("Cookie", "sid=1")
			id, err := i.Identify(context.Background(), r)
			if !errors.Is(err, tc.want) || (err == nil && id.UserID != tc.user) {
				t.Fatalf("Identify = %+v, %v; want user %q, %v", id, err, tc.user, tc.want)
			}
			app.mu.Lock()
			defer app.mu.Unlock()
			if len(app.seen) != 1 {
				t.Fatalf("the identity endpoint was called %d times (redirects must not be followed)", len(app.seen))
			}
		})
	}
}

// An application header alone is no credential; Host and the proxy's
// X-Forwarded-* reach the app for found credentials, never a client's own.
func TestIdentifyForwarding(t *testing.T) {
	t.Parallel()
	app := newAppIdentity(t, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"id": "alice"})
	})
	i, err := NewIntrospector(app.Client(), app.URL+"/api/me", []string{"Cookie", "Authorization"}, "/id", "")
	if err != nil {
		t.Fatal(err)
	}
	i.ForwardContext([]string{"X-App-Id"})
	i.ForwardHost(true)

	onlyApp, _ := http.NewRequest("GET", "http://tenant.example/x", nil)
	onlyApp.Header.Set("X-App-Id", "shop")
	if _, err := i.Identify(context.Background(), onlyApp); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("a request with only an app-id header: %v, want ErrUnauthenticated", err)
	}

	caller, _ := http.NewRequest("GET", "http://tenant.example/x", nil)
	caller.Header.Set("Cookie", "sid=1")
	caller.Header.Set("X-App-Id", "shop")
	caller.Header.Set("X-Forwarded-For", "6.6.6.6") // the client's own: not forwarded
	if _, err := i.Identify(context.Background(), caller); err != nil {
		t.Fatal(err)
	}
	proxied, _ := http.NewRequest("GET", "http://tenant.example/x", nil)
	proxied.Header.Set("X-Forwarded-For", "203.0.113.7") // as the proxy rewrote it
	proxied.Header.Set("X-Forwarded-Proto", "https")
	proxied.Header.Set("X-App-Id", "shop")
	if _, err := i.IdentifyWith(context.Background(), func(h http.Header) { h.Set("Authorization", "Bearer t") }, proxied); err != nil {
		t.Fatal(err)
	}

	app.mu.Lock()
	defer app.mu.Unlock()
	if len(app.seen) != 2 {
		t.Fatalf("identity endpoint called %d times, want 2 (not for the app-id-only request)", len(app.seen))
	}
	first, second := app.seen[0], app.seen[1]
	if first.Host != "tenant.example" || first.Header.Get("X-App-Id") != "shop" || first.Header.Get("X-Forwarded-For") != "" {
		t.Errorf("caller lookup sent Host %q, X-App-Id %q, X-Forwarded-For %q", first.Host, first.Header.Get("X-App-Id"), first.Header.Get("X-Forwarded-For"))
	}
	if second.Host != "tenant.example" || second.Header.Get("X-Forwarded-For") != "203.0.113.7" || second.Header.Get("X-Forwarded-Proto") != "https" ||
		second.Header.Get("Authorization") != "Bearer t" || second.Header.Get("Cookie") != "" {
		t.Errorf("credential lookup sent Host %q, XFF %q, proto %q, auth %q, cookie %q", second.Host, second.Header.Get("X-Forwarded-For"),
			second.Header.Get("X-Forwarded-Proto"), second.Header.Get("Authorization"), second.Header.Get("Cookie"))
	}
}

// A credential found in an app answer is "no session" only when the app
// says not logged in; its rate limit (429) or a 404 fail closed, since a
// client can provoke them.
func TestIdentifyWithFailsClosedOnOther4xx(t *testing.T) {
	t.Parallel()
	for status, want := range map[int]error{401: ErrUnauthenticated, 419: ErrUnauthenticated, 440: ErrUnauthenticated, 403: ErrUpstream, 429: ErrUpstream, 404: ErrUpstream, 400: ErrUpstream} {
		app := newAppIdentity(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(status) })
		i, err := NewIntrospector(app.Client(), app.URL+"/api/me", []string{"Cookie"}, "/id", "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := i.IdentifyWith(context.Background(), func(h http.Header) { h.Set("Cookie", "sid=x") }, nil); !errors.Is(err, want) {
			t.Errorf("identity endpoint %d for a found credential: %v, want %v", status, err, want)
		}
	}
}

// The gate's own cookies (__Host-totpgate-*) are never forwarded to the
// app's identity endpoint; the app's cookies are, as sent.
func TestIdentifyKeepsGateCookies(t *testing.T) {
	t.Parallel()
	app := newAppIdentity(t, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"id": "alice"})
	})
	i, err := NewIntrospector(app.Client(), app.URL+"/api/me", []string{"Cookie"}, "/id", "")
	if err != nil {
		t.Fatal(err)
	}
	caller, _ := http.NewRequest("GET", "http://app/x", nil)
	caller.Header.Set("Cookie", "sid=1; __Host-totpgate-device=token; __Host-totpgate-step-up=proof; theme=dark")
	if _, err := i.Identify(context.Background(), caller); err != nil {
		t.Fatal(err)
	}
	onlyGate, _ := http.NewRequest("GET", "http://app/x", nil)
	onlyGate.Header.Set("Cookie", "__Host-totpgate-device=token")
	if _, err := i.Identify(context.Background(), onlyGate); err != nil {
		t.Fatal(err)
	}
	app.mu.Lock()
	defer app.mu.Unlock()
	if got := app.seen[0].Header.Values("Cookie"); len(got) != 1 || got[0] != "sid=1; theme=dark" {
		t.Errorf("identity endpoint got Cookie %q, want only the app's: sid=1; theme=dark", got)
	}
	if got := app.seen[1].Header.Values("Cookie"); len(got) != 0 {
		t.Errorf("identity endpoint got Cookie %q, want none", got)
	}
}
