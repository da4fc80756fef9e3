package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"

	"github.com/totpgate/totpgate/mfa"
)

// StepUpForwarderOptions configure the gate's side of a step-up
// completion: the same upstream, rewrite and transport as the gate.
type StepUpForwarderOptions struct {
	Upstream       *url.URL
	PreserveHost   bool
	TrustedProxies []netip.Prefix
	// Transport sets the limits of the forwarder's own transport, which
	// opens a new connection for every forward: on a reused one Go's
	// transport may send a request again after the app read it (a GET,
	// or anything with an Idempotency-Key), so a released request could
	// reach the app twice.
	Transport TransportOptions
	// Instrument wraps that transport (metrics); nil: used as it is.
	Instrument func(http.RoundTripper) http.RoundTripper
	// Credentials are the app's session credentials (session.credentials).
	Credentials []Credential
	// MaxAnswerBytes bounds the app's answer to a released request
	// (login.max_answer_bytes).
	MaxAnswerBytes int64
}

// StepUpForwarder is what the user API's step-up completion
// (POST {prefix}/step-up) needs of the gate: whose session the completion
// call presents, and the one forward of the held request to the app.
type StepUpForwarder struct {
	creds     *credentials
	rewrite   func(*httputil.ProxyRequest)
	transport http.RoundTripper
	maxAnswer int64
}

// NewStepUpForwarder checks o and builds the forwarder.
func NewStepUpForwarder(o StepUpForwarderOptions) (*StepUpForwarder, error) {
	if o.Upstream == nil || len(o.Credentials) == 0 || o.MaxAnswerBytes <= 0 {
		return nil, errors.New("proxy: the step-up forwarder needs the upstream, the session credentials and an answer bound")
	}
	t := NewTransport(o.Transport)
	t.DisableKeepAlives = true
	var rt http.RoundTripper = t
	if o.Instrument != nil {
		rt = o.Instrument(t)
	}
	return &StepUpForwarder{
		creds:     newCredentials(o.Credentials),
		rewrite:   newRewrite(o.Upstream, o.PreserveHost, NewPeers(o.TrustedProxies)),
		transport: rt,
		maxAnswer: o.MaxAnswerBytes,
	}, nil
}

// Session is the hash of the app session credentials r presents; ok is
// false when it presents none, or one ambiguously.
func (f *StepUpForwarder) Session(r *http.Request) ([]byte, bool) {
	h, ok := f.creds.sessionOf(r)
	return h, ok && h != nil
}

// Forward sends the held request to the app once, with the rewrite the
// gate gives every request (X-Forwarded-* as its peer's trust allows), and
// reads the answer as the app gave it, bounded by login.max_answer_bytes.
// The app's answer is not judged again: its user has just given a second
// factor. It goes on a connection of its own and is never resent (no
// GetBody, no reused connection); an error means the app may or may not
// have it.
func (f *StepUpForwarder) Forward(ctx context.Context, held mfa.HeldRequest) (mfa.HeldAnswer, error) {
	u, err := url.ParseRequestURI(held.URI)
	if err != nil {
		return mfa.HeldAnswer{}, fmt.Errorf("proxy: held request target: %w", err)
	}
	in := (&http.Request{
		Method: held.Method, URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: held.Header.Clone(), Host: held.Host, RemoteAddr: held.RemoteAddr,
	}).WithContext(ctx)
	if in.Header == nil {
		in.Header = http.Header{}
	}
	if len(held.Body) > 0 {
		in.Body, in.ContentLength = io.NopCloser(bytes.NewReader(held.Body)), int64(len(held.Body))
	}
	res, err := f.transport.RoundTrip(outboundRequest(in, f.rewrite))
	if err != nil {
		return mfa.HeldAnswer{}, err
	}
	a, err := readRaw(res, f.maxAnswer)
	if err != nil {
		return mfa.HeldAnswer{}, err
	}
	return mfa.HeldAnswer{Status: a.Status, Header: a.Header, Body: a.Body}, nil
}
