package identity_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/totpgate/totpgate/identity"
)

// The gate's own cookies never reach the identity endpoint, also when
// identity.context_headers names Cookie (the client's Cookie header is
// added after the forwarded credentials).
func TestGateCookiesStayOutOfContextHeaders(t *testing.T) {
	t.Parallel()
	var seen []string
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Header.Values("Cookie")...)
		w.Write([]byte(`{"id":"alice"}`))
	}))
	defer app.Close()
	in, err := identity.NewIntrospector(&http.Client{Timeout: time.Second}, app.URL+"/api/me", []string{"Cookie"}, "/id", "")
	if err != nil {
		t.Fatal(err)
	}
	in.ForwardContext([]string{"Cookie"})
	r := httptest.NewRequest("GET", "/mfa/status", nil)
	r.Header.Set("Cookie", "sid=S1; __Host-totpgate-device=SECRET-DEVICE-TOKEN")
	in.Identify(context.Background(), r)
	cred, _ := identity.ParseCredential("cookie:sid")
	in.IdentifyWith(context.Background(), func(h http.Header) { cred.Present(h, "S1") }, r)
	if len(seen) == 0 {
		t.Fatal("the identity endpoint saw no cookie at all")
	}
	for _, c := range seen {
		if strings.Contains(c, "__Host-totpgate-") {
			t.Errorf("the identity endpoint got the gate's cookie: %q", c)
		}
	}
}
