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
	"time"

	"github.com/totpgate/totpgate/mfa"
)

// StepUpForwarderOptions configure the gate's side of a step-up
// completion: the same upstream, rewrite and transport as the gate.
type StepUpForwarderOptions struct {
	Upstream       *url.URL
	PreserveHost   bool
	TrustedProxies []netip.Prefix
	// Transport must open a new connection for every request
	// (NewForwardTransport, maybe instrumented): on a reused one the
	// transport may send a held request again after the app read it.
	Transport http.RoundTripper
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
	if o.Upstream == nil || o.Transport == nil || len(o.Credentials) == 0 || o.MaxAnswerBytes <= 0 {
		return nil, errors.New("proxy: the step-up forwarder needs the upstream, a transport, the session credentials and an answer bound")
	}
	return &StepUpForwarder{
		creds:     newCredentials(o.Credentials),
		rewrite:   newRewrite(o.Upstream, o.PreserveHost, NewPeers(o.TrustedProxies)),
		transport: o.Transport,
		maxAnswer: o.MaxAnswerBytes,
	}, nil
}

// Session is the hash of the app session credentials r presents; ok is
// false when it presents none, or one ambiguously.
func (f *StepUpForwarder) Session(r *http.Request) ([]byte, bool) {
	h, ok := f.creds.sessionOf(r)
	return h, ok && h != nil
}

// ProofCookie is the Set-Cookie value of a step-up proof.
func (f *StepUpForwarder) ProofCookie(proof string, maxAge time.Duration) string {
	return ProofCookie(proof, maxAge)
}

// Forward sends the held request to the app once, with the rewrite the
// gate gives every request (X-Forwarded-* as its peer's trust allows), and
// reads the answer as the app gave it, bounded by login.max_answer_bytes.
// The app's answer is not judged again: its user has just given a second
// factor. It is never resent once any of it may have reached the app; an
// error means the app may or may not have it.
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
	body := held.Body
	if len(body) > 0 || replayable(held.Method) {
		// A body without GetBody makes the transport's retry of a
		// GET, HEAD, OPTIONS or TRACE on a reused connection impossible:
		// the app may have the first one.
		in.Body, in.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	}
	if len(body) > 0 && !replayable(held.Method) {
		// Lets the transport resend only a request it never wrote (it
		// does not retry these methods otherwise).
		in.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
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

// replayable are the methods Go's transport retries by itself on a reused
// connection that failed before the answer.
func replayable(method string) bool {
	switch method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}
