package proxy

import (
	"crypto/sha256"
	"encoding/binary"
	"net/http"
	"strings"

	"github.com/totpgate/totpgate/identity"
)

// sessionOf is the SHA-256 of the app session credentials r presents
// (session.credentials, in their configured order, each as it is
// presented back to the app), nil when r presents none. A password sent
// as HTTP Basic or Digest is no session. ok is false when r presents one
// of them ambiguously: twice (two cookies of its name, two header values),
// or as a cookie the gate cannot read; the gate and the app could then
// read different sessions, and the gate would vouch for the wrong one.
func (cs *credentials) sessionOf(r *http.Request) (hash []byte, ok bool) {
	h := sha256.New()
	presented := false
	var n [4]byte
	for i, c := range cs.list {
		value, found, ambiguous := presentedOnce(c, r)
		if ambiguous {
			return nil, false
		}
		if !found || value == "" || passwordScheme(value) {
			continue
		}
		presented = true
		binary.BigEndian.PutUint32(n[:], uint32(i))
		h.Write(n[:])
		binary.BigEndian.PutUint32(n[:], uint32(len(value)))
		h.Write(n[:])
		h.Write([]byte(value))
	}
	if cs.unread(r) {
		return nil, false
	}
	if !presented {
		return nil, true
	}
	return h.Sum(nil), true
}

// unread reports a credential r carries that the gate would not read but
// an app may: an Authorization value that is neither a configured bearer
// session nor a password (another scheme, "Token …"), or a configured
// header credential spelt with underscores (X_Session), which servers that
// map headers to variables (Rack, WSGI, CGI) read as X-Session. The gate
// could then see no session where the app sees one.
func (cs *credentials) unread(r *http.Request) bool {
	if a := r.Header.Get("Authorization"); a != "" && !passwordScheme(a) {
		_, isBearer := identity.BearerToken(a)
		if !isBearer || !cs.hasBearer() {
			return true
		}
	}
	for name := range r.Header {
		if !strings.Contains(name, "_") {
			continue
		}
		dashed := strings.ReplaceAll(name, "_", "-")
		for _, c := range cs.list {
			if c.As == "header" && strings.EqualFold(dashed, c.AsName) {
				return true
			}
		}
	}
	return false
}

// hasBearer reports whether a configured credential is presented back as
// a bearer token.
func (cs *credentials) hasBearer() bool {
	for _, c := range cs.list {
		if c.As != "cookie" && c.As != "header" {
			return true
		}
	}
	return false
}

// presentedOnce is the value r presents as c (Credential.PresentedIn),
// and whether r presents it more than once or in a form the gate does not
// read the way an app may.
func presentedOnce(c Credential, r *http.Request) (value string, found, ambiguous bool) {
	switch c.As {
	case "cookie":
		// Counted on the raw header too: Go skips a cookie whose value it
		// finds invalid (a backslash escape Django's parser undoes), so
		// the raw count and Go's differ when the app may see a cookie the
		// gate does not.
		raw := rawCookieCount(r.Header, c.AsName)
		if raw != len(r.CookiesNamed(c.AsName)) || raw > 1 {
			return "", false, true
		}
	case "header":
		if len(r.Header.Values(c.AsName)) > 1 {
			return "", false, true
		}
	default:
		if len(r.Header.Values("Authorization")) > 1 {
			return "", false, true
		}
	}
	value, found = c.PresentedIn(r)
	return value, found, false
}

// rawCookieCount counts the cookies named name in h's Cookie headers,
// however their values are spelled.
func rawCookieCount(h http.Header, name string) int {
	n := 0
	for _, line := range h.Values("Cookie") {
		for part := range strings.SplitSeq(line, ";") {
			k, _, _ := strings.Cut(part, "=")
			if strings.TrimSpace(k) == name {
				n++
			}
		}
	}
	return n
}
