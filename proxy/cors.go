package proxy

import (
	"github.com/totpgate/totpgate/gen"
	"net/http"
	"net/url"
	"strings"

	"github.com/totpgate/totpgate/problem"
)

// CORS serves the user API to single-page apps on other origins and keeps
// cross-site pages out of it.
//
// Origins in the allow-list get CORS answers with credentials (the app's
// session cookie is how the API knows the caller), preflights included.
// A state-changing call (anything but GET, HEAD, OPTIONS) from a browser
// on another origin that is not in the list is refused with 403 before
// any handler runs: a cross-site page cannot start or replace an
// enrollment, or disable MFA, with the user's cookies.
type CORS struct {
	allowed map[string]bool
}

// NewCORS takes the allowed origins, e.g. https://app.example.com.
func NewCORS(origins []string) *CORS {
	c := &CORS{allowed: map[string]bool{}}
	for _, o := range origins {
		c.allowed[strings.TrimSuffix(strings.ToLower(o), "/")] = true
	}
	return c
}

// corsMethods and corsHeaders are what the user API accepts cross-origin.
const (
	corsMethods = "GET, POST, PUT, DELETE"
	corsHeaders = "Content-Type, Authorization, X-TOTP-Code, X-Request-Id"
	corsExpose  = "WWW-Authenticate, Retry-After, X-Request-Id"
)

// Wrap applies the policy in front of next (the user API).
func (c *CORS) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		allowed := origin != "" && c.allowed[strings.ToLower(origin)]
		if origin != "" {
			w.Header().Add("Vary", "Origin")
		}
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			if !allowed {
				problem.Write(w, r, problem.New(http.StatusForbidden, gen.ProblemCodeForbidden, "This origin may not call the API."))
				return
			}
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Allow-Credentials", "true")
			h.Set("Access-Control-Allow-Methods", corsMethods)
			h.Set("Access-Control-Allow-Headers", corsHeaders)
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if stateChanging(r.Method) && crossSite(r, origin) && !allowed {
			problem.Write(w, r, problem.New(http.StatusForbidden, gen.ProblemCodeForbidden, "Cross-site requests may not change two-factor settings."))
			return
		}
		if allowed {
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Allow-Credentials", "true")
			h.Set("Access-Control-Expose-Headers", corsExpose)
		}
		next.ServeHTTP(w, r)
	})
}

func stateChanging(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

// crossSite reports a browser request from another origin: an Origin whose
// host is not the request's, or (browsers that send no Origin) a
// Sec-Fetch-Site that says so. Requests without either come from
// non-browser clients, which carry no ambient cookies to abuse.
func crossSite(r *http.Request, origin string) bool {
	if origin != "" {
		u, err := url.Parse(origin)
		return err != nil || origin == "null" || !strings.EqualFold(u.Host, r.Host)
	}
	switch r.Header.Get("Sec-Fetch-Site") {
	case "cross-site", "same-site":
		return true
	}
	return false
}

// corsHeadersOfAnswer are the app's CORS headers the gate copies onto its
// own answers on a gated route, so a page on the app's allowed origin can
// read a challenge.
var corsHeadersOfAnswer = []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Vary"}

// copyCORS puts the CORS headers of the app's answer a on w, and exposes
// the headers a challenge needs.
func copyCORS(w http.ResponseWriter, a *answer) {
	if a == nil || a.Header.Get("Access-Control-Allow-Origin") == "" {
		return
	}
	for _, k := range corsHeadersOfAnswer {
		for _, v := range a.Header.Values(k) {
			w.Header().Add(k, v)
		}
	}
	w.Header().Set("Access-Control-Expose-Headers", corsExpose)
}
