// Package gatecookie is the gate's own cookies: their names, how they are
// set and cleared, and the rule that keeps them from the app. Every cookie
// of the gate is named Prefix + something, so the one strip (Strip) keeps
// them all, present and future, out of every request the app receives:
// proxied requests, gated logins and the identity calls.
//
// The names carry the __Host- prefix: a browser accepts such a cookie only
// with Secure, Path=/ and no Domain, so neither a sibling subdomain nor a
// plain-HTTP page can set or overwrite it.
package gatecookie

import (
	"math"
	"net/http"
	"strings"
	"time"
)

// Prefix starts the name of every cookie of the gate.
const Prefix = "__Host-totpgate-"

// Device holds a trusted device's token.
const Device = Prefix + "device"

// StepUp holds a step-up proof: a recent second factor of one user, bound
// to one app session.
const StepUp = Prefix + "step-up"

// StepUpNav marks the browser the gate sent to the self-service page to
// confirm one held step-up request (mfa.PageMark of its challenge).
const StepUpNav = Prefix + "step-up-nav"

// Set appends to h a Set-Cookie for the gate cookie name holding value,
// living maxAge (whole seconds, at least one): Secure, HttpOnly,
// SameSite=Lax, Path=/ and no Domain, as the __Host- prefix requires.
func Set(h http.Header, name, value string, maxAge time.Duration) {
	h.Add("Set-Cookie", Setting(name, value, maxAge))
}

// Setting is the Set-Cookie value Set adds, for an answer that carries
// it in a field of its own (a typed API response).
func Setting(name, value string, maxAge time.Duration) string {
	secs := int(min(math.Ceil(maxAge.Seconds()), math.MaxInt32))
	return (&http.Cookie{Name: name, Value: value, Path: "/", MaxAge: max(secs, 1),
		Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode}).String()
}

// Added returns a copy of h (nil: none) with Set's Set-Cookie added, for
// an answer the caller does not own (a held app answer being released).
func Added(h http.Header, name, value string, maxAge time.Duration) http.Header {
	out := h.Clone()
	if out == nil {
		out = http.Header{}
	}
	Set(out, name, value, maxAge)
	return out
}

// Clear appends to h a Set-Cookie that deletes the gate cookie name.
func Clear(h http.Header, name string) { h.Add("Set-Cookie", Cleared(name)) }

// Cleared is the Set-Cookie value that deletes the gate cookie name (with
// the attributes the __Host- prefix needs, or a browser ignores it).
func Cleared(name string) string {
	return (&http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode}).String()
}

// Value is the value of the cookie name that r carries; "" when it
// carries none, or more than one (which one the browser meant cannot be
// told, so none counts).
func Value(r *http.Request, name string) string {
	cs := r.CookiesNamed(name)
	if len(cs) != 1 {
		return ""
	}
	return cs[0].Value
}

// Strip removes every cookie whose name starts with Prefix from h's Cookie
// headers, keeping the others byte for byte. It costs a substring search
// per Cookie header when there is none (the pass-through's fast path).
func Strip(h http.Header) {
	for _, line := range h["Cookie"] {
		if strings.Contains(line, Prefix) {
			Filter(h, func(name string) bool { return strings.HasPrefix(name, Prefix) })
			return
		}
	}
}

// Filter removes the cookies for which drop is true from every Cookie
// header of h, keeping the others byte for byte, joined into one header.
func Filter(h http.Header, drop func(name string) bool) {
	lines := h.Values("Cookie")
	if len(lines) == 0 {
		return
	}
	var kept []string
	for _, line := range lines {
		var parts []string
		for part := range strings.SplitSeq(line, ";") {
			part = strings.TrimSpace(part)
			name, _, _ := strings.Cut(part, "=")
			if part == "" || drop(strings.TrimSpace(name)) {
				continue
			}
			parts = append(parts, part)
		}
		if len(parts) > 0 {
			kept = append(kept, strings.Join(parts, "; "))
		}
	}
	h.Del("Cookie")
	if len(kept) > 0 {
		h.Set("Cookie", strings.Join(kept, "; "))
	}
}
