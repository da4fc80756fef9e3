// Command bareproxy is the floor for a Go reverse proxy in
// bench/passthrough.sh: net/http's server and httputil.ReverseProxy with
// the same transport settings as totpgate (pool sized for one upstream, no
// HTTP/2) and nothing else: no request id, no metrics, no route matching.
// The gap between it and totpgate is totpgate's own work; the gap between
// it and nginx is the standard library's. It is not part of totpgate.
//
// With -client own it sends requests with a minimal keep-alive HTTP/1.1
// client instead of http.Transport (Request.Write, then http.ReadResponse
// on a pooled connection: no read and write loop goroutines, no
// hand-offs). That client handles only what the benchmark sends (GET
// without a body; no upgrades, timeouts, retries or cancellation): it
// exists to measure what a client of our own could save, not to be used.
package main

import (
	"bufio"
	"errors"
	"flag"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18081", "address to listen on (loopback)")
	upstream := flag.String("upstream", "http://127.0.0.1:18080", "upstream URL")
	client := flag.String("client", "std", "upstream client: std (http.Transport) or own (see the package comment)")
	flag.Parse()
	u, err := url.Parse(*upstream)
	if err != nil {
		log.Fatal(err)
	}
	var transport http.RoundTripper = &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}
	switch *client {
	case "std":
	case "own":
		transport = &ownClient{addr: u.Host}
	default:
		log.Fatalf("-client must be std or own, not %q", *client)
	}
	buffers := sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.SetXForwarded()
		},
		Transport:  transport,
		BufferPool: pool{&buffers},
	}
	srv := &http.Server{Addr: *listen, Handler: rp, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	log.Fatal(srv.ListenAndServe())
}

type pool struct{ p *sync.Pool }

func (p pool) Get() []byte  { return *(p.p.Get().(*[]byte)) }
func (p pool) Put(b []byte) { p.p.Put(&b) }

// ownClient is the minimal client of -client own: a stack of idle
// connections to one address.
type ownClient struct {
	addr string
	mu   sync.Mutex
	idle []*ownConn
}

type ownConn struct {
	c  net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

func (t *ownClient) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil && req.Body != http.NoBody {
		return nil, errors.New("bareproxy: -client own sends no request bodies")
	}
	t.mu.Lock()
	var pc *ownConn
	if n := len(t.idle); n > 0 {
		pc, t.idle = t.idle[n-1], t.idle[:n-1]
	}
	t.mu.Unlock()
	if pc == nil {
		c, err := net.DialTimeout("tcp", t.addr, 5*time.Second)
		if err != nil {
			return nil, err
		}
		pc = &ownConn{c: c, br: bufio.NewReader(c), bw: bufio.NewWriter(c)}
	}
	if err := req.Write(pc.bw); err != nil {
		pc.c.Close()
		return nil, err
	}
	if err := pc.bw.Flush(); err != nil {
		pc.c.Close()
		return nil, err
	}
	res, err := http.ReadResponse(pc.br, req)
	if err != nil {
		pc.c.Close()
		return nil, err
	}
	res.Body = &ownBody{rc: res.Body, pc: pc, t: t, reuse: !res.Close}
	return res, nil
}

// ownBody gives the connection back once the body has been read to its
// end, and closes it when the body is closed before.
type ownBody struct {
	rc    io.ReadCloser
	pc    *ownConn
	t     *ownClient
	reuse bool
	done  bool
}

func (b *ownBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err != nil {
		b.done = true
		if err == io.EOF && b.reuse {
			b.t.mu.Lock()
			b.t.idle = append(b.t.idle, b.pc)
			b.t.mu.Unlock()
		} else {
			b.pc.c.Close()
		}
	}
	return n, err
}

func (b *ownBody) Close() error {
	if !b.done {
		b.done = true
		b.pc.c.Close()
	}
	return nil
}
