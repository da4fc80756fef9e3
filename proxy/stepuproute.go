package proxy

import (
	"net/http"
	"strings"
	"time"
)

// StepUpRoute is one sensitive route: a request to Path (matched on
// NormalizePath, like a login route) with one of Methods (empty: any)
// needs a second factor given within MaxAge.
type StepUpRoute struct {
	Path    string
	Methods []string
	MaxAge  time.Duration
}

// stepUpRoute is a StepUpRoute compiled: methods holds every method a
// request may be taken for by the app and still be meant (nil: any).
type stepUpRoute struct {
	path    string // as configured: the audit log's and the metrics' route
	methods map[string]bool
	maxAge  time.Duration
}

// stepUpRoutes are the compiled routes by normalized path.
type stepUpRoutes map[string][]*stepUpRoute

// methodOverrideHeaders are the headers frameworks (Express's
// method-override, Symfony, Rails' Rack::MethodOverride with a header)
// take a request's real method from.
var methodOverrideHeaders = []string{"X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"}

func newStepUpRoutes(routes []StepUpRoute) stepUpRoutes {
	rs := stepUpRoutes{}
	for _, r := range routes {
		rt := &stepUpRoute{path: r.Path, maxAge: r.MaxAge}
		if len(r.Methods) > 0 {
			rt.methods = map[string]bool{}
			for _, m := range r.Methods {
				m = strings.ToUpper(m)
				rt.methods[m] = true
				switch m {
				case http.MethodGet: // HEAD runs the GET handler (Express, Django's View, Rails)
					rt.methods[http.MethodHead] = true
				case http.MethodPut, http.MethodPatch, http.MethodDelete: // a POST with _method=PUT in the form
					rt.methods[http.MethodPost] = true
				}
			}
		}
		n := NormalizePath(r.Path)
		rs[n] = append(rs[n], rt)
	}
	return rs
}

// match returns the step-up route r is for, nil when none. Both the
// decoded and the raw path are tried, so an encoded slash cannot hide a
// route either way, and of several routes that match the one with the
// shortest max_age wins.
func (rs stepUpRoutes) match(r *http.Request) *stepUpRoute {
	if len(rs) == 0 {
		return nil
	}
	return rs.find(r, pathsOf(r))
}

// find is match on r's paths p, already normalized.
func (rs stepUpRoutes) find(r *http.Request, p routePaths) *stepUpRoute {
	candidates := rs[p.path]
	if p.hasRaw {
		candidates = append(candidates[:len(candidates):len(candidates)], rs[p.raw]...)
	}
	var best *stepUpRoute
	for _, rt := range candidates {
		if rt.takes(r) && (best == nil || rt.maxAge < best.maxAge) {
			best = rt
		}
	}
	return best
}

// takes reports whether the app may take r for one of the route's
// methods: its own (in any case), one named in a method-override header
// or a _method query parameter. Over-matching is safe: it only asks for a
// second factor more often.
func (rt *stepUpRoute) takes(r *http.Request) bool {
	if rt.methods == nil || rt.methods[strings.ToUpper(r.Method)] {
		return true
	}
	for _, h := range methodOverrideHeaders {
		for _, v := range r.Header.Values(h) {
			for m := range strings.SplitSeq(v, ",") {
				if rt.methods[strings.ToUpper(strings.TrimSpace(m))] {
					return true
				}
			}
		}
	}
	for _, m := range r.URL.Query()["_method"] {
		if rt.methods[strings.ToUpper(strings.TrimSpace(m))] {
			return true
		}
	}
	return false
}
