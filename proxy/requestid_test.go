package proxy_test

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"slices"
	"testing"

	"github.com/totpgate/totpgate/problem"
	"github.com/totpgate/totpgate/proxy"
)

func TestAssignRequestID(t *testing.T) {
	t.Parallel()
	if c := http.CanonicalHeaderKey(problem.RequestIDHeader); c != problem.RequestIDHeader {
		// AssignRequestID writes the header maps directly, which needs the canonical key.
		t.Fatalf("problem.RequestIDHeader %q is not canonical (%q)", problem.RequestIDHeader, c)
	}
	fresh := regexp.MustCompile(`^[0-9a-f]{24}$`)
	trusted := proxy.NewPeers([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	tests := []struct {
		name   string
		peers  proxy.Peers
		remote string
		sent   []string
		keep   bool // the sent id is kept, else a fresh one replaces it
	}{
		{"no trusted proxies, no id", proxy.NewPeers(nil), "192.0.2.1:1234", nil, false},
		{"no trusted proxies, client's id", proxy.NewPeers(nil), "192.0.2.1:1234", []string{"abc"}, false},
		{"untrusted peer's id", trusted, "192.0.2.1:1234", []string{"abc"}, false},
		{"trusted peer's id", trusted, "10.1.2.3:1234", []string{"abc-DEF_1.2"}, true},
		{"trusted peer, invalid id", trusted, "10.1.2.3:1234", []string{"a b"}, false},
		{"trusted peer, no id", trusted, "10.1.2.3:1234", nil, false},
		{"untrusted peer, two ids", trusted, "192.0.2.1:1234", []string{"abc", "def"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = tt.remote
			if tt.sent != nil {
				r.Header[problem.RequestIDHeader] = slices.Clone(tt.sent)
			}
			w := httptest.NewRecorder()
			tt.peers.AssignRequestID(w, r)
			in, out := r.Header.Values(problem.RequestIDHeader), w.Header().Values(problem.RequestIDHeader)
			if len(in) != 1 || len(out) != 1 || in[0] != out[0] {
				t.Fatalf("request ids: inbound %q, answer %q; want one and the same", in, out)
			}
			if tt.keep && in[0] != tt.sent[0] {
				t.Fatalf("id %q replaced by %q, want it kept", tt.sent[0], in[0])
			}
			if !tt.keep && !fresh.MatchString(in[0]) {
				t.Fatalf("id %q is not a fresh one", in[0])
			}
			// The two headers share one backing array: neither may see
			// what is added to the other.
			id := in[0]
			w.Header()[problem.RequestIDHeader][0] = "changed"
			if got := r.Header.Get(problem.RequestIDHeader); got != id {
				t.Fatalf("changing the answer's id changed the inbound one to %q", got)
			}
			r.Header.Add(problem.RequestIDHeader, "added")
			if got := w.Header().Values(problem.RequestIDHeader); len(got) != 1 || got[0] != "changed" {
				t.Fatalf("adding to the inbound ids changed the answer's to %q", got)
			}
		})
	}
}

func TestRequestIDsDiffer(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 1000 {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		proxy.NewPeers(nil).AssignRequestID(httptest.NewRecorder(), r)
		id := r.Header.Get(problem.RequestIDHeader)
		if seen[id] {
			t.Fatalf("request id %q given twice", id)
		}
		seen[id] = true
	}
}
