// Package identity learns who the caller is by asking the app: the sidecar
// never owns passwords or sessions. It forwards the caller's credential
// headers to a configured app endpoint (e.g. GET /api/me) and reads the user
// id from its JSON answer.
package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/totpgate/totpgate/internal/gatecookie"
)

// Sentinel errors; check with errors.Is.
var (
	// ErrUnauthenticated: the app did not accept the caller's credentials.
	ErrUnauthenticated = errors.New("identity: not authenticated")
	// ErrUpstream: the app could not be asked, or answered nonsense.
	ErrUpstream = errors.New("identity: app unavailable")
)

// Identity is the caller as the app knows it.
type Identity struct {
	UserID  string
	Account string // label for the authenticator app (e.g. an email); UserID when unknown
}

// Introspector asks the app who the caller is.
type Introspector struct {
	client         *http.Client
	url            string
	forward        []string
	userPointer    string
	accountPointer string
	forwardHost    bool
	context        []string
	noSession      map[int]bool
}

// NewIntrospector checks its settings once.
func NewIntrospector(client *http.Client, url string, forwardHeaders []string, userPointer, accountPointer string) (*Introspector, error) {
	var errs []error
	if client == nil || url == "" {
		errs = append(errs, errors.New("identity: client and URL are required"))
	}
	if len(forwardHeaders) == 0 {
		errs = append(errs, errors.New("identity: at least one credential header must be forwarded"))
	}
	if err := ValidPointer(userPointer); err != nil {
		errs = append(errs, fmt.Errorf("identity: user id pointer: %w", err))
	}
	if accountPointer != "" {
		if err := ValidPointer(accountPointer); err != nil {
			errs = append(errs, fmt.Errorf("identity: account pointer: %w", err))
		}
	}
	// Never follow a redirect: an app that sends the caller to its login
	// page is saying "not logged in", and a redirect elsewhere must not
	// carry the caller's credentials there.
	c := *client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Introspector{client: &c, url: url, forward: forwardHeaders, userPointer: userPointer, accountPointer: accountPointer,
		noSession: map[int]bool{http.StatusUnauthorized: true, 419: true, 440: true}}, errors.Join(errs...)
}

// NoSessionStatuses sets the identity endpoint's statuses that mean "this
// credential is no session" for a credential found in an app answer
// (default 401, 419, 440). Add 403 only for an endpoint that answers 403
// for "not logged in" (Django REST framework's session auth) and never for
// anything a client can provoke: django-ratelimit, for one, blocks with 403.
func (i *Introspector) NoSessionStatuses(statuses []int) {
	if len(statuses) == 0 {
		return
	}
	i.noSession = map[int]bool{}
	for _, s := range statuses {
		i.noSession[s] = true
	}
}

// ForwardContext names request headers that are forwarded to the identity
// endpoint but identify the application or tenant, not the user (an app-id
// header): a caller who sends only these has sent no credential.
func (i *Introspector) ForwardContext(headers []string) {
	i.context = make([]string, len(headers))
	for n, h := range headers {
		i.context[n] = http.CanonicalHeaderKey(h)
	}
}

// ForwardHost makes introspection send the client's Host header (set it
// when upstream.preserve_host is: the app then routes on the client's host).
func (i *Introspector) ForwardHost(on bool) { i.forwardHost = on }

// maxAnswer bounds what is read of the app's answer.
const maxAnswer = 1 << 20

// Identify forwards r's credential headers to the app. A 2xx answer with a
// user id means the caller is that user; any 4xx (an invalid or expired
// session, whatever the exact code) or no credentials is
// ErrUnauthenticated; anything else ErrUpstream.
func (i *Introspector) Identify(ctx context.Context, r *http.Request) (Identity, error) {
	sent := false
	h := http.Header{}
	for _, name := range i.forward {
		if slices.Contains(i.context, http.CanonicalHeaderKey(name)) {
			continue // forwarded by ask, never a credential
		}
		for _, v := range r.Header.Values(name) {
			h.Add(name, v)
			sent = true
		}
	}
	if !sent {
		return Identity{}, ErrUnauthenticated
	}
	return i.ask(ctx, h, r, false)
}

// IdentifyWith presents a credential the sidecar found in an app answer
// (present adds it to the headers) and asks the app whose it is.
// ErrUnauthenticated means the credential is no session. in, when set, is
// the request as the app got it (X-Forwarded-* already rewritten for the
// peer's trust): its Host and X-Forwarded-For/Proto are forwarded, so a
// multi-tenant app identifies correctly.
func (i *Introspector) IdentifyWith(ctx context.Context, present func(http.Header), in *http.Request) (Identity, error) {
	h := http.Header{}
	present(h)
	return i.ask(ctx, h, in, true)
}

// ask calls the identity endpoint with h. The client's own X-Forwarded-*
// are forwarded only from a request the proxy has rewritten (forwarded).
func (i *Introspector) ask(ctx context.Context, h http.Header, in *http.Request, forwarded bool) (Identity, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, i.url, nil)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrUpstream, err)
	}
	req.Header = h
	req.Header.Set("Accept", "application/json")
	if in != nil {
		for _, name := range i.context {
			for _, v := range in.Header.Values(name) {
				req.Header.Add(name, v)
			}
		}
		if i.forwardHost && in.Host != "" {
			req.Host = in.Host
		}
		for _, name := range []string{"X-Forwarded-For", "X-Forwarded-Proto"} {
			if v := in.Header.Get(name); v != "" && forwarded {
				req.Header.Set(name, v)
			}
		}
	}
	// Last, after the context headers too: the gate's own cookies never
	// reach the app, whatever identity.context_headers names.
	gatecookie.Strip(req.Header)
	res, err := i.client.Do(req)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrUpstream, err)
	}
	defer res.Body.Close()
	switch {
	case i.notLoggedIn(res.StatusCode, forwarded):
		return Identity{}, ErrUnauthenticated
	case res.StatusCode >= 400 && res.StatusCode < 500 && forwarded:
		// A credential the sidecar found: only an answer that says "not
		// logged in" lets its answer pass; a 429 (the app's own rate
		// limit, which a client can exhaust) or a 404 says nothing about
		// the session, so the check fails closed.
		return Identity{}, fmt.Errorf("%w: introspection answered %d", ErrUpstream, res.StatusCode)
	case res.StatusCode < 200 || res.StatusCode > 299:
		// Redirects are never followed: a login page is no answer.
		return Identity{}, fmt.Errorf("%w: introspection answered %d", ErrUpstream, res.StatusCode)
	}
	var doc any
	dec := json.NewDecoder(io.LimitReader(res.Body, maxAnswer))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return Identity{}, fmt.Errorf("%w: introspection answer is not JSON", ErrUpstream)
	}
	id, ok := Lookup(doc, i.userPointer)
	if !ok || id == "" {
		// A 2xx without an id: the app does not know this caller.
		return Identity{}, ErrUnauthenticated
	}
	account := id
	if i.accountPointer != "" {
		if a, ok := Lookup(doc, i.accountPointer); ok && a != "" {
			account = a
		}
	}
	return Identity{UserID: id, Account: account}, nil
}

// notLoggedIn reports an identity answer that means "no session". For the
// caller of a user API operation any 4xx does (whatever code the app uses
// for an expired session, the caller is unauthenticated); for a credential
// found in an app answer only the configured statuses do: a status a
// client can provoke (a rate limit's 429 or 403) must fail closed.
func (i *Introspector) notLoggedIn(status int, found bool) bool {
	if !found {
		return status >= 400 && status < 500
	}
	return i.noSession[status]
}

// ValidPointer checks the syntax of an RFC 6901 JSON pointer.
func ValidPointer(p string) error {
	if p == "" || p[0] != '/' {
		return fmt.Errorf("%q must start with /", p)
	}
	return nil
}

// Lookup resolves an RFC 6901 pointer in a decoded JSON document (decoded
// with UseNumber) and returns a string or number value as a string.
func Lookup(doc any, pointer string) (string, bool) {
	cur, ok := LookupValue(doc, pointer)
	if !ok {
		return "", false
	}
	switch v := cur.(type) {
	case string:
		return v, true
	case json.Number:
		return v.String(), true
	}
	return "", false
}

// LookupValue resolves an RFC 6901 pointer and returns the value as decoded.
func LookupValue(doc any, pointer string) (any, bool) {
	cur := doc
	for tok := range strings.SplitSeq(strings.TrimPrefix(pointer, "/"), "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch v := cur.(type) {
		case map[string]any:
			next, ok := v[tok]
			if !ok {
				return nil, false
			}
			cur = next
		case []any:
			n, err := strconv.Atoi(tok)
			if err != nil || n < 0 || n >= len(v) {
				return nil, false
			}
			cur = v[n]
		default:
			return nil, false
		}
	}
	return cur, true
}
