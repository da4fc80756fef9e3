package proxy

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Peers decides whose X-Forwarded-* headers to believe.
type Peers struct {
	trusted []netip.Prefix
}

// NewPeers trusts the given prefixes (parsed once at start).
func NewPeers(trusted []netip.Prefix) Peers { return Peers{trusted: trusted} }

// Trusted reports whether addr is a configured proxy.
func (p Peers) Trusted(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, pr := range p.trusted {
		if pr.Contains(addr) {
			return true
		}
	}
	return false
}

// RemoteAddr is the TCP peer of r.
func RemoteAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}

// ClientIP is the address the sidecar attributes r to: the TCP peer, or,
// when the peer is a trusted proxy, the right-most X-Forwarded-For entry that
// is not itself a trusted proxy. Entries left of an untrusted hop are the
// client's own words and are never believed.
func (p Peers) ClientIP(r *http.Request) netip.Addr {
	peer := RemoteAddr(r)
	if !p.Trusted(peer) {
		return peer
	}
	hops := forwardedFor(r.Header)
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(hops[i])
		if err != nil {
			return peer // malformed chain: fall back to what we saw ourselves
		}
		if a = a.Unmap(); !p.Trusted(a) {
			return a
		}
		peer = a
	}
	return peer
}

func forwardedFor(h http.Header) []string {
	var out []string
	for _, v := range h.Values("X-Forwarded-For") {
		for part := range strings.SplitSeq(v, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
	}
	return out
}
