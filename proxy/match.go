package proxy

import (
	"net/http"
	"net/url"
	"path"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// routeSet is the compiled set of gated routes, compared on NormalizePath.
type routeSet map[string]bool

func newRouteSet(paths []string) routeSet {
	s := routeSet{}
	for _, p := range paths {
		s[NormalizePath(p)] = true
	}
	return s
}

// matches reports whether r is for a gated route, whatever the method: some
// apps log in with GET and a query, others honour method-override headers.
// Both the decoded and the raw path are tried, so an encoded slash cannot
// hide a route either way.
func (s routeSet) matches(r *http.Request) bool {
	if len(s) == 0 {
		return false
	}
	return s.has(pathsOf(r))
}

// has reports whether p names a gated route.
func (s routeSet) has(p routePaths) bool {
	return s[p.path] || (p.hasRaw && s[p.raw])
}

// routePaths are a request's path and, when its URL has one, its raw path,
// in the form routes are compared on (NormalizePath). The front computes
// them once for the login routes and the step-up routes.
type routePaths struct {
	path, raw string
	hasRaw    bool
}

func pathsOf(r *http.Request) routePaths {
	p := routePaths{path: NormalizePath(r.URL.Path)}
	if r.URL.RawPath != "" {
		p.raw, p.hasRaw = NormalizePath(r.URL.RawPath), true
	}
	return p
}

// NormalizePath is the form login routes are compared on: percent-decoding
// undone, ;params dropped, backslashes and repeated slashes merged, dot
// segments resolved, trailing slash and a .format suffix removed, Unicode
// compatibility forms and case folded. Frameworks that treat /Login,
// //login/, /login;jsessionid=x, /login.json (Rails' (.:format), Spring's
// suffix match) or /LOGİN (ASP.NET's and Java's ignore-case compare
// upper-cased runes, so ı, ſ and the Kelvin sign match i, s and k) as /login
// are all caught. Over-matching is safe: the gate only holds an answer that
// could carry a session.
func NormalizePath(p string) string {
	for range 3 { // double encoding (%252F) must not slip through
		d, err := url.PathUnescape(p)
		if err != nil || d == p {
			break
		}
		p = d
	}
	// Python's $ matches before a final newline (Django's ^login/$ takes
	// "login/\n"), and some servers trim trailing blanks: drop them.
	p = strings.TrimRightFunc(p, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) })
	p = foldRunes(norm.NFKC.String(p))
	p = strings.ReplaceAll(p, "\\", "/")
	segs := strings.Split(p, "/")
	for i, s := range segs {
		if j := strings.IndexByte(s, ';'); j >= 0 {
			segs[i] = s[:j]
		}
	}
	p = path.Clean("/" + strings.Join(segs, "/"))
	p = strings.TrimSuffix(p, "/")
	return stripFormat(p)
}

// foldRunes maps each rune to one representative of everything a
// case-insensitive router could take it for: lower(upper(r)) catches the
// runes that only meet their ASCII twin through upper case (ı → I → i),
// then the smallest rune of the simple-fold orbit catches the rest (K → k).
func foldRunes(s string) string {
	return strings.Map(func(r rune) rune {
		r = unicode.ToLower(unicode.ToUpper(r))
		min := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			if f < min {
				min = f
			}
		}
		return unicode.ToLower(min)
	}, s)
}

// stripFormat removes a format suffix (.json, .xml, .html, .php …) from the
// last segment, as Rails, Spring and ASP.NET route /login.json to /login.
// Rails' (.:format) takes any run of characters but / . ?, so /login.json,
// /login.x-json and /login.json_api all match /login; the first dot of the
// last segment starts the format.
func stripFormat(p string) string {
	slash := strings.LastIndexByte(p, '/')
	dot := strings.IndexByte(p[slash+1:], '.')
	if dot <= 0 {
		return p
	}
	return p[:slash+1+dot]
}
