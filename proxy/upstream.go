package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"sync"
	"time"
)

// UpstreamClient sends the pass-through's plain requests (GET, HEAD and
// OPTIONS without a body, no upgrade, no Expect) to the one keep-alive
// HTTP/1.1 upstream itself, and everything else to the standard transport
// it was made from.
//
// Why: profiled under load, http.Transport's machinery (a read and a write
// goroutine per connection, channel hand-offs and a select per round trip,
// its per-request bookkeeping) was a fifth of totpgate's CPU on the
// pass-through (docs/benchmarks.md). This client writes the request with
// Request.Write and reads the answer with http.ReadResponse on a pooled
// connection, in the caller's goroutine: the same writer and the same
// strict parser the transport uses, without the hand-offs.
//
// It keeps the transport's behaviour where it matters (TestUpstreamClient*
// and FuzzUpstreamClientMatchesTransport compare the two): 1xx answers go
// to an httptrace Got1xxResponse hook (ReverseProxy forwards them), the
// answer headers are bounded by MaxResponseHeaderBytes (10 MiB when unset,
// 1xx answers included), ResponseHeaderTimeout and the request's context
// are honoured, a reused connection that the app had closed is retried
// once on a new one (these methods are replayable), and a connection is
// reused only when its answer was read to the end, neither side asked to
// close, and nothing unsolicited is waiting on it (a stray answer on an
// idle connection would otherwise be taken for the next request's).
type UpstreamClient struct {
	fallback       http.RoundTripper
	host           string // the upstream's host as in the outbound URL
	addr           string // host:port to dial
	dial           func(ctx context.Context, network, addr string) (net.Conn, error)
	headerTimeout  time.Duration
	idleTimeout    time.Duration
	maxIdle        int
	maxHeaderBytes int64

	mu      sync.Mutex
	idle    []*upConn // most recently used last
	janitor *time.Timer
}

// NewUpstreamClient returns the client for upstream built on t's settings
// (dialer, timeouts, pool size, header limit); t serves what the client
// does not. An upstream that is not plain http gets t itself.
func NewUpstreamClient(t *http.Transport, upstream *url.URL) http.RoundTripper {
	if upstream.Scheme != "http" || !peekSupported {
		return t
	}
	addr := upstream.Host
	if upstream.Port() == "" {
		addr = net.JoinHostPort(upstream.Hostname(), "80")
	}
	dial := t.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	maxHeader := t.MaxResponseHeaderBytes
	if maxHeader <= 0 {
		maxHeader = 10 << 20 // http.Transport's default
	}
	maxIdle := t.MaxIdleConnsPerHost
	if maxIdle <= 0 {
		maxIdle = http.DefaultMaxIdleConnsPerHost
	}
	return &UpstreamClient{
		fallback: t, host: upstream.Host, addr: addr, dial: dial,
		headerTimeout: t.ResponseHeaderTimeout, idleTimeout: t.IdleConnTimeout,
		maxIdle: maxIdle, maxHeaderBytes: maxHeader,
	}
}

// handles reports whether req is one the client sends itself: a plain,
// replayable request without a body to the upstream, which no upgrade,
// Expect or close turns into something else.
func (c *UpstreamClient) handles(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		return false
	}
	h := req.Header
	return req.URL.Scheme == "http" && req.URL.Host == c.host &&
		(req.Body == nil || req.Body == http.NoBody) && req.ContentLength == 0 &&
		len(req.TransferEncoding) == 0 && !req.Close &&
		len(h["Upgrade"]) == 0 && len(h["Connection"]) == 0 && len(h["Expect"]) == 0
}

// RoundTrip implements http.RoundTripper.
func (c *UpstreamClient) RoundTrip(req *http.Request) (*http.Response, error) {
	if !c.handles(req) {
		return c.fallback.RoundTrip(req)
	}
	ctx := req.Context()
	for {
		pc, reused, err := c.conn(ctx)
		if err != nil {
			return nil, err
		}
		res, err := c.send(ctx, pc, req)
		if err == nil {
			return res, nil
		}
		pc.close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// An idle connection the app closed just as it was reused fails
		// before the first byte of the answer: like http.Transport, try
		// again, on another connection, until a new one fails. A timeout
		// is the app's slowness, not a closed connection: no retry.
		var ne net.Error
		if !reused || pc.read > 0 || (errors.As(err, &ne) && ne.Timeout()) {
			return nil, err
		}
	}
}

// errHeadersTooLarge is reported when the answer's headers (1xx answers
// included) pass MaxResponseHeaderBytes.
type errHeadersTooLarge int64

func (e errHeadersTooLarge) Error() string {
	return fmt.Sprintf("proxy: upstream answer headers exceeded %d bytes", int64(e))
}

// send writes req on pc and reads the answer's headers.
func (c *UpstreamClient) send(ctx context.Context, pc *upConn, req *http.Request) (*http.Response, error) {
	stop := context.AfterFunc(ctx, pc.abort)
	pc.read = 0
	if err := req.Write(pc.bw); err != nil {
		stop()
		return nil, err
	}
	if err := pc.bw.Flush(); err != nil {
		stop()
		return nil, err
	}
	if c.headerTimeout > 0 {
		pc.conn.SetReadDeadline(time.Now().Add(c.headerTimeout))
	}
	trace := httptrace.ContextClientTrace(ctx)
	pc.limit = c.maxHeaderBytes
	var res *http.Response
	for {
		var err error
		res, err = http.ReadResponse(pc.br, req)
		if err != nil {
			stop()
			if pc.limit <= 0 {
				return nil, errHeadersTooLarge(c.maxHeaderBytes)
			}
			return nil, err
		}
		if res.StatusCode < 100 || res.StatusCode > 199 || res.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		// An informational answer (103 Early Hints): passed on when the
		// caller listens, as http.Transport does; the header limit then
		// starts again, else it covers every answer read so far.
		if trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(res.StatusCode, textproto.MIMEHeader(res.Header)); err != nil {
				stop()
				return nil, err
			}
			pc.limit = c.maxHeaderBytes
		}
	}
	pc.limit = -1
	if c.headerTimeout > 0 {
		pc.conn.SetReadDeadline(time.Time{})
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		// Upgrades go to the standard transport; a switch nobody asked
		// for cannot be served (ReverseProxy would refuse it too).
		stop()
		return nil, errors.New("proxy: the app switched protocols on a request without an upgrade")
	}
	keep := !res.Close
	if res.Body == http.NoBody {
		c.finish(pc, stop, keep)
		return res, nil
	}
	res.Body = &upBody{rc: res.Body, c: c, pc: pc, stop: stop, keep: keep, ctx: ctx}
	return res, nil
}

// finish hands pc back to the pool when it can carry another request, and
// closes it otherwise.
func (c *UpstreamClient) finish(pc *upConn, stop func() bool, keep bool) {
	// stop reports false when the context already fired: its deadline
	// is on the connection then.
	if stop() && keep && pc.br.Buffered() == 0 {
		c.put(pc)
		return
	}
	pc.close()
}

// conn takes the most recently used idle connection that is still good,
// or dials a new one.
func (c *UpstreamClient) conn(ctx context.Context) (*upConn, bool, error) {
	for {
		c.mu.Lock()
		var pc *upConn
		if n := len(c.idle); n > 0 {
			pc = c.idle[n-1]
			c.idle[n-1] = nil
			c.idle = c.idle[:n-1]
		}
		c.mu.Unlock()
		if pc == nil {
			break
		}
		if (c.idleTimeout > 0 && time.Since(pc.idleSince) > c.idleTimeout) || !pc.quiet() {
			pc.close()
			continue
		}
		return pc, true, nil
	}
	nc, err := c.dial(ctx, "tcp", c.addr)
	if err != nil {
		return nil, false, err
	}
	pc := &upConn{conn: nc, limit: -1}
	pc.br = bufio.NewReader(pc)
	pc.bw = bufio.NewWriter(nc)
	return pc, false, nil
}

func (c *UpstreamClient) put(pc *upConn) {
	pc.idleSince = time.Now()
	c.mu.Lock()
	if len(c.idle) >= c.maxIdle {
		c.mu.Unlock()
		pc.close()
		return
	}
	c.idle = append(c.idle, pc)
	if c.janitor == nil && c.idleTimeout > 0 {
		c.janitor = time.AfterFunc(c.idleTimeout, c.sweep)
	}
	c.mu.Unlock()
}

// sweep closes the connections idle for longer than IdleConnTimeout, and
// comes back while any are left: one timer for the pool, not one per
// connection.
func (c *UpstreamClient) sweep() {
	c.mu.Lock()
	now := time.Now()
	n := 0
	for n < len(c.idle) && now.Sub(c.idle[n].idleSince) >= c.idleTimeout {
		n++ // oldest first
	}
	expired := make([]*upConn, n)
	copy(expired, c.idle[:n])
	c.idle = append(c.idle[:0], c.idle[n:]...)
	clear(c.idle[len(c.idle):cap(c.idle)])
	c.janitor = nil
	if len(c.idle) > 0 {
		c.janitor = time.AfterFunc(c.idleTimeout-now.Sub(c.idle[0].idleSince), c.sweep)
	}
	c.mu.Unlock()
	for _, pc := range expired {
		pc.close()
	}
}

// CloseIdleConnections closes the idle connections of the client and of
// its fallback transport.
func (c *UpstreamClient) CloseIdleConnections() {
	c.mu.Lock()
	idle := c.idle
	c.idle = nil
	c.mu.Unlock()
	for _, pc := range idle {
		pc.close()
	}
	if ci, ok := c.fallback.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// upConn is one connection to the upstream. Its reader counts what it
// reads (so a retry knows whether the app answered anything) and, while
// answer headers are read, stops at the header limit.
type upConn struct {
	conn      net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	limit     int64 // bytes still allowed for headers; -1 while a body is read
	read      int64 // bytes read for the current request
	idleSince time.Time
	closeOnce sync.Once
}

func (pc *upConn) Read(p []byte) (int, error) {
	if pc.limit == 0 {
		return 0, errHeadersTooLarge(0)
	}
	if pc.limit > 0 && int64(len(p)) > pc.limit {
		p = p[:pc.limit]
	}
	n, err := pc.conn.Read(p)
	pc.read += int64(n)
	if pc.limit > 0 {
		pc.limit -= int64(n)
	}
	return n, err
}

// abort unblocks a read or write in progress: the context is done.
func (pc *upConn) abort() { pc.conn.SetDeadline(time.Unix(1, 0)) }

func (pc *upConn) close() { pc.closeOnce.Do(func() { pc.conn.Close() }) }

// upBody is an answer's body: the connection goes back to the pool once
// the body has been read to its end, and is closed when the body is
// closed before that or a read fails. Close may come while a Read is
// blocked (it unblocks it), as with http.Transport's bodies.
type upBody struct {
	rc   io.ReadCloser
	c    *UpstreamClient
	pc   *upConn
	stop func() bool
	keep bool
	ctx  context.Context

	mu     sync.Mutex
	rerr   error // the error that ended the body (io.EOF at its end)
	closed bool
}

func (b *upBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	closed, rerr := b.closed, b.rerr
	b.mu.Unlock()
	if closed {
		return 0, errBodyClosed
	}
	if rerr != nil {
		return 0, rerr
	}
	n, err := b.rc.Read(p)
	if err == nil {
		return n, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.rerr != nil {
		return n, err // Close got here first and closed the connection
	}
	if err != io.EOF {
		if ctxErr := b.ctx.Err(); ctxErr != nil {
			err = ctxErr
		}
	}
	b.rerr = err
	if err == io.EOF {
		b.c.finish(b.pc, b.stop, b.keep)
	} else {
		b.stop()
		b.pc.close()
	}
	return n, err
}

func (b *upBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	if b.rerr == nil {
		b.stop()
		b.pc.close()
	}
	return nil
}

var errBodyClosed = errors.New("proxy: read on a closed upstream answer body")

var (
	_ http.RoundTripper = (*UpstreamClient)(nil)
	_ io.ReadCloser     = (*upBody)(nil)
)
