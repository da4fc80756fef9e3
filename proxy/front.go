// Package proxy is the sidecar's HTTP front on the main listener: it tags
// every request with an id, sends the sidecar's own API to its handler and
// passes everything else to the upstream app untouched.
package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"

	"github.com/totpgate/totpgate/problem"
)

// SpecPrefix is where the user API lives in openapi.yaml; the configured
// prefix is mapped onto it.
const SpecPrefix = "/mfa"

// Options configures a Front. Everything is parsed before it gets here.
type Options struct {
	Upstream     *url.URL
	PreserveHost bool
	// Transport carries every request to the upstream: the login gate's,
	// and the pass-through's unless PassThrough is set.
	Transport http.RoundTripper
	// PassThrough, when set, carries the pass-through's requests
	// (an UpstreamClient in front of Transport).
	PassThrough    http.RoundTripper
	TrustedProxies []netip.Prefix
	// APIPrefix is the configured user API prefix, e.g. /mfa.
	APIPrefix string
	// API serves the user API; it sees paths under SpecPrefix.
	API    http.Handler
	Logger *slog.Logger
	// Login, when set, intercepts the app's login routes.
	Login *LoginOptions
	// StepUp, when set with routes, holds requests to sensitive routes for
	// a recent second factor; it uses Login's credentials and introspector.
	StepUp *StepUpOptions
}

// Front is the main listener's handler.
type Front struct {
	prefix string
	api    http.Handler
	peers  Peers
	proxy  *httputil.ReverseProxy
	login  *loginGate
	stepUp *stepUpGate
}

// New checks o and builds the front.
func New(o Options) (*Front, error) {
	var errs []error
	if o.Upstream == nil {
		errs = append(errs, errors.New("proxy: upstream URL is required"))
	}
	if o.Transport == nil {
		errs = append(errs, errors.New("proxy: transport is required"))
	}
	if o.API == nil {
		errs = append(errs, errors.New("proxy: API handler is required"))
	}
	if o.Logger == nil {
		errs = append(errs, errors.New("proxy: logger is required"))
	}
	if !strings.HasPrefix(o.APIPrefix, "/") || strings.HasSuffix(o.APIPrefix, "/") {
		errs = append(errs, errors.New("proxy: API prefix must start with / and not end with /"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	peers := NewPeers(o.TrustedProxies)
	rewrite := newRewrite(o.Upstream, o.PreserveHost, peers)
	pass := o.PassThrough
	if pass == nil {
		pass = o.Transport
	}
	f := &Front{
		prefix: o.APIPrefix,
		api:    o.API,
		peers:  peers,
		proxy:  newReverseProxy(rewrite, pass, o.Logger),
	}
	if o.Login != nil {
		g, err := newLoginGate(*o.Login, o.Transport, rewrite, peers, o.Logger)
		if err != nil {
			return nil, err
		}
		f.login = g
		if len(o.Login.Credentials) > 0 && o.Login.Introspector != nil {
			f.proxy.ModifyResponse = g.watchAnswer
		}
	}
	if o.StepUp != nil && len(o.StepUp.Routes) > 0 {
		g, err := newStepUpGate(*o.StepUp, o.Login, rewrite, peers, o.Logger)
		if err != nil {
			return nil, err
		}
		f.stepUp = g
	}
	return f, nil
}

// ServeHTTP implements http.Handler.
func (f *Front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.peers.AssignRequestID(w, r)
	if rest, ok := f.underPrefix(r.URL.Path); ok {
		f.api.ServeHTTP(w, withPath(r, SpecPrefix+rest))
		return
	}
	var paths routePaths // normalized once for both kinds of route
	if f.login != nil || f.stepUp != nil {
		paths = pathsOf(r)
	}
	if f.login != nil && f.login.routes.has(paths) {
		f.login.ServeHTTP(w, r)
		return
	}
	if f.stepUp != nil {
		if rt := f.stepUp.routes.find(r, paths); rt != nil && f.stepUp.intercept(w, r, rt) {
			return
		}
	}
	if f.proxy.ModifyResponse != nil {
		// Informational answers go out before ModifyResponse sees the
		// final one: one that carries a session credential is dropped.
		w = &informationalFilter{ResponseWriter: w, creds: f.login.policy.creds}
		r = r.WithContext(context.WithValue(r.Context(), inboundKey{}, r))
	}
	f.proxy.ServeHTTP(w, r)
}

// informationalFilter drops a 1xx answer (103 Early Hints) that carries a
// session credential; everything else passes to the ResponseWriter.
type informationalFilter struct {
	http.ResponseWriter
	creds *credentials
}

func (i *informationalFilter) WriteHeader(code int) {
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols && len(i.creds.fromHeaders(i.Header())) > 0 {
		return
	}
	i.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach Flush and Hijack (streaming,
// WebSocket) on the real writer.
func (i *informationalFilter) Unwrap() http.ResponseWriter { return i.ResponseWriter }

// underPrefix reports whether path is the API prefix or below it, and returns
// the part after the prefix.
func (f *Front) underPrefix(path string) (string, bool) {
	rest, ok := strings.CutPrefix(path, f.prefix)
	if !ok || (rest != "" && rest[0] != '/') {
		return "", false
	}
	return rest, true
}

// withPath returns a shallow copy of r whose URL path is p.
func withPath(r *http.Request, p string) *http.Request {
	r2 := new(http.Request)
	*r2 = *r
	u := *r.URL
	u.Path, u.RawPath = p, ""
	r2.URL = &u
	return r2
}

// AssignRequestID gives r an id (a trusted proxy's, or a new one), on the
// inbound request for handlers and the upstream, and on the answer for the client.
//
// It runs on every request, so it allocates little: the new id's string
// and one backing array for both headers' values, each header getting its
// own capped slice of it so neither can append into the other's.
func (p Peers) AssignRequestID(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get(problem.RequestIDHeader)
	if len(p.trusted) > 0 && p.Trusted(RemoteAddr(r)) && validRequestID(id) {
		w.Header()[problem.RequestIDHeader] = []string{id}
		return
	}
	id = newRequestID()
	vs := []string{id, id}
	r.Header[problem.RequestIDHeader] = vs[0:1:1]
	w.Header()[problem.RequestIDHeader] = vs[1:2:2]
}

func validRequestID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

// newRequestID is 12 random bytes in hex. On Linux 6.11 and later
// crypto/rand reads getrandom through the vDSO, without a system call per id.
func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	var h [24]byte
	hex.Encode(h[:], b[:])
	return string(h[:])
}

var _ http.Handler = (*Front)(nil)
