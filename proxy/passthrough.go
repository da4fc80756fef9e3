package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"github.com/totpgate/totpgate/gen"
	"github.com/totpgate/totpgate/internal/gatecookie"
	"github.com/totpgate/totpgate/problem"
)

// TransportOptions bounds the connections to the upstream app.
type TransportOptions struct {
	DialTimeout           time.Duration
	ResponseHeaderTimeout time.Duration
	IdleConnTimeout       time.Duration
	MaxIdleConns          int
}

// NewTransport builds the transport to the app with explicit limits (the
// standard transport's defaults otherwise, without reading the
// http.DefaultTransport global). The pool is sized for one upstream (the
// app next door): the default of two idle connections per host would make
// every burst open new connections.
func NewTransport(o TransportOptions) *http.Transport {
	return &http.Transport{
		Proxy:                 nil, // the app is next door; HTTP_PROXY must not reroute it
		DialContext:           (&net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		ResponseHeaderTimeout: o.ResponseHeaderTimeout,
		IdleConnTimeout:       o.IdleConnTimeout,
		MaxIdleConns:          o.MaxIdleConns,
		MaxIdleConnsPerHost:   o.MaxIdleConns,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     false,
		// The app gets the client's Accept-Encoding as sent: the transport
		// must not ask for gzip on the client's behalf and unpack the
		// answer (the pass-through changes no answer, and the upstream
		// client, which asks for nothing, must get the same answers).
		DisableCompression: true,
	}
}

// newRewrite sends a request to upstream untouched, apart from the
// X-Forwarded-* headers, which are only carried over from trusted peers,
// and the gate's own cookies, which the app never sees (gatecookie.Strip).
// The pass-through and the login gate share it, so the app sees the same
// request either way.
func newRewrite(upstream *url.URL, preserveHost bool, peers Peers) func(*httputil.ProxyRequest) {
	return func(pr *httputil.ProxyRequest) {
		gatecookie.Strip(pr.Out.Header)
		pr.SetURL(upstream)
		if preserveHost {
			pr.Out.Host = pr.In.Host
		}
		// ReverseProxy has already removed Forwarded and X-Forwarded-* from
		// Out; only a trusted proxy's chain is put back before ours is added.
		if peers.Trusted(RemoteAddr(pr.In)) {
			for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
				if v, ok := pr.In.Header[h]; ok {
					pr.Out.Header[h] = v
				}
			}
			host, proto := pr.Out.Header.Get("X-Forwarded-Host"), pr.Out.Header.Get("X-Forwarded-Proto")
			pr.SetXForwarded()
			if host != "" {
				pr.Out.Header.Set("X-Forwarded-Host", host)
			}
			if proto != "" {
				pr.Out.Header.Set("X-Forwarded-Proto", proto)
			}
			return
		}
		pr.SetXForwarded()
	}
}

// newReverseProxy is the pass-through: it streams both ways.
func newReverseProxy(rewrite func(*httputil.ProxyRequest), transport http.RoundTripper, log *slog.Logger) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:      rewrite,
		Transport:    transport,
		BufferPool:   newBufferPool(),
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandler: upstreamErrorHandler(log),
	}
}

// upstreamErrorHandler answers 504 when the app was too slow and 502 when it
// could not be reached, without saying anything about the internals.
func upstreamErrorHandler(log *slog.Logger) func(http.ResponseWriter, *http.Request, error) {
	return func(w http.ResponseWriter, r *http.Request, err error) {
		if errors.Is(r.Context().Err(), context.Canceled) {
			// The client went away; nobody is left to answer.
			return
		}
		status, code, detail := http.StatusBadGateway, gen.ProblemCodeUpstreamUnavailable, "The application behind totpgate could not be reached."
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
			status, code, detail = http.StatusGatewayTimeout, gen.ProblemCodeUpstreamTimeout, "The application behind totpgate did not answer in time."
		}
		log.LogAttrs(r.Context(), slog.LevelWarn, "upstream request failed",
			slog.String("request_id", problem.RequestID(r)),
			slog.String("method", r.Method),
			slog.Int("status", status),
			slog.String("error", err.Error()))
		problem.Write(w, r, problem.New(status, code, detail))
	}
}

// bufferPool reuses the 32 KiB copy buffers ReverseProxy would otherwise
// allocate per request.
type bufferPool struct{ pool sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{pool: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

func (p *bufferPool) Get() []byte  { return *(p.pool.Get().(*[]byte)) }
func (p *bufferPool) Put(b []byte) { p.pool.Put(&b) }

var _ httputil.BufferPool = (*bufferPool)(nil)
