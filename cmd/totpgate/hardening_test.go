package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// The app's identity endpoint answering any 4xx means "not logged in":
// the caller gets 401, not 502; an app-id header alone is no credential
// (the app is not even asked); a redirect is not followed.
func TestIdentityAnswersMeanWhatTheySay(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		switch r.Header.Get("Cookie") {
		case "sid=expired":
			w.WriteHeader(419) // Laravel's "page expired"
		case "sid=moved":
			http.Redirect(w, r, "/login", http.StatusFound)
		case "sid=alice":
			json.NewEncoder(w).Encode(map[string]string{"id": "alice"})
		default:
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	t.Cleanup(up.Close)
	s := startSidecar(t, []string{"TOTPGATE_IDENTITY_CONTEXT_HEADERS=X-App-Id", "TOTPGATE_IDENTITY_FORWARD_HEADERS=Cookie,X-App-Id"}, "--upstream", up.URL)
	status := func(h ...string) int {
		req, _ := http.NewRequest("GET", s.main+"/mfa/status", nil)
		for i := 0; i < len(h); i += 2 {
			req.Header.Set(h[i], h[i+1])
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if got := status("Cookie", "sid=expired"); got != 401 {
		t.Errorf("identity endpoint answered 419: status = %d, want 401", got)
	}
	if got := status("Cookie", "sid=alice"); got != 200 {
		t.Errorf("a logged-in caller: status = %d, want 200", got)
	}
	before := calls.Load()
	if got := status("X-App-Id", "shop"); got != 401 {
		t.Errorf("only an app-id header: status = %d, want 401", got)
	}
	if calls.Load() != before {
		t.Error("the app was asked about a caller who sent no credential")
	}
	before = calls.Load()
	if got := status("Cookie", "sid=moved"); got != 502 {
		t.Errorf("identity endpoint redirected: status = %d, want 502 (fail closed, not followed)", got)
	}
	if n := calls.Load() - before; n != 1 {
		t.Errorf("a redirect from the identity endpoint was followed (%d calls)", n)
	}
}
