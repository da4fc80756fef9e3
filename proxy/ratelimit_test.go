package proxy_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/totpgate/totpgate/proxy"
)

func TestRateLimitPerClientIP(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	l := proxy.NewRateLimit(proxy.NewPeers([]netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}), 1, 3, 64, func() time.Time { return now })
	h := l.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	do := func(remote, xff string) int {
		r := httptest.NewRequest("POST", "/mfa/challenge", nil)
		r.RemoteAddr = remote + ":1234"
		if xff != "" {
			r.Header.Set("X-Forwarded-For", xff)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code == http.StatusTooManyRequests && w.Header().Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
		return w.Code
	}
	for i := range 3 {
		if c := do("192.0.2.1", ""); c != 200 {
			t.Fatalf("request %d within the burst: %d", i, c)
		}
	}
	if c := do("192.0.2.1", ""); c != http.StatusTooManyRequests {
		t.Fatalf("past the burst: %d, want 429", c)
	}
	if c := do("192.0.2.2", ""); c != 200 {
		t.Fatalf("another address is limited separately: %d", c)
	}
	// An untrusted peer cannot escape its bucket by claiming another address.
	if c := do("192.0.2.1", "198.51.100.7"); c != http.StatusTooManyRequests {
		t.Fatalf("spoofed X-Forwarded-For escaped the limit: %d", c)
	}
	// Behind a trusted proxy, clients are told apart by X-Forwarded-For.
	for i := range 3 {
		if c := do("10.0.0.1", "198.51.100.8"); c != 200 {
			t.Fatalf("client behind trusted proxy, request %d: %d", i, c)
		}
	}
	if c := do("10.0.0.1", "198.51.100.9"); c != 200 {
		t.Fatalf("second client behind the same proxy: %d", c)
	}
	now = now.Add(2 * time.Second)
	if c := do("192.0.2.1", ""); c != 200 {
		t.Fatalf("after refill: %d", c)
	}
}

// IPv6 clients share a bucket per /64: a thousand addresses of one /64
// get one burst, another /64 its own.
func TestRateLimitIPv6PerSlash64(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	l := proxy.NewRateLimit(proxy.NewPeers(nil), 1, 3, 64, func() time.Time { return now })
	h := l.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	allowed := 0
	for i := range 1000 {
		r := httptest.NewRequest("POST", "/mfa/challenge", nil)
		r.RemoteAddr = netip.AddrPortFrom(netip.MustParseAddr(fmt.Sprintf("2001:db8:1:2::%x", i+1)), 1234).String()
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code == 200 {
			allowed++
		}
	}
	if allowed != 3 {
		t.Fatalf("1000 addresses of one /64 got %d requests through, want the one burst of 3", allowed)
	}
	r := httptest.NewRequest("POST", "/mfa/challenge", nil)
	r.RemoteAddr = "[2001:db8:1:3::1]:1234"
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 200 {
		t.Fatalf("another /64: %d, want 200", w.Code)
	}
}
