package proxy_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/totpgate/totpgate/proxy"
)

// passThroughEnv, set to "transport", makes the tests' pass-through use
// http.Transport alone instead of the UpstreamClient the binary ships.
const passThroughEnv = "TOTPGATE_TEST_PASSTHROUGH"

// passThroughClient is the pass-through's client in these tests.
func passThroughClient(tr *http.Transport, u *url.URL) http.RoundTripper {
	if os.Getenv(passThroughEnv) == "transport" {
		return tr
	}
	return proxy.NewUpstreamClient(tr, u)
}

// TestPassThroughSuiteOnTransport runs this package's tests again with the
// standard transport as the pass-through's client, so every pass-through
// test (streaming, SSE, WebSocket, trailers, hop-by-hop headers, the
// credential checks on any route) holds for both clients.
func TestPassThroughSuiteOnTransport(t *testing.T) {
	if os.Getenv(passThroughEnv) != "" {
		t.Skip("this is the re-run")
	}
	if testing.Short() {
		t.Skip("re-runs the whole package")
	}
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.count=1", "-test.timeout=10m",
		"-test.skip", "^(TestPassThroughSuiteOnTransport|Fuzz.*|Benchmark.*)$")
	cmd.Env = append(os.Environ(), passThroughEnv+"=transport")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the package's tests with http.Transport as the pass-through client: %v\n%s", err, out)
	}
}

func newUpstreamClient(t *testing.T, upstream string, mod func(*http.Transport)) (*proxy.UpstreamClient, *http.Transport) {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	tr := proxy.NewTransport(proxy.TransportOptions{DialTimeout: 2 * time.Second, ResponseHeaderTimeout: 10 * time.Second, IdleConnTimeout: time.Minute, MaxIdleConns: 16})
	if mod != nil {
		mod(tr)
	}
	c, ok := proxy.NewUpstreamClient(tr, u).(*proxy.UpstreamClient)
	if !ok {
		t.Fatal("NewUpstreamClient did not return an UpstreamClient for a plain http upstream")
	}
	t.Cleanup(c.CloseIdleConnections)
	return c, tr
}

func get(t *testing.T, rt http.RoundTripper, method, target string, hdr http.Header) (*http.Response, string, error) {
	t.Helper()
	req, err := http.NewRequest(method, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	res, err := rt.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	return res, string(b), err
}

// countConns counts the connections an httptest server accepted.
func countConns(srv *httptest.Server) *atomic.Int32 {
	var n atomic.Int32
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			n.Add(1)
		}
	}
	return &n
}

func TestUpstreamClientReusesConnections(t *testing.T) {
	t.Parallel()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/chunked":
			w.Write([]byte("part1"))
			w.(http.Flusher).Flush()
			w.Write([]byte("part2"))
		default:
			io.WriteString(w, "hello "+r.Method)
		}
	}))
	conns := countConns(srv)
	srv.Start()
	t.Cleanup(srv.Close)
	c, _ := newUpstreamClient(t, srv.URL, nil)
	for _, tt := range []struct{ method, path, want string }{
		{"GET", "/", "hello GET"}, {"HEAD", "/", ""}, {"OPTIONS", "/", "hello OPTIONS"},
		{"GET", "/empty", ""}, {"GET", "/chunked", "part1part2"}, {"GET", "/", "hello GET"},
	} {
		_, body, err := get(t, c, tt.method, srv.URL+tt.path, nil)
		if err != nil || body != tt.want {
			t.Fatalf("%s %s: %q, %v; want %q", tt.method, tt.path, body, err, tt.want)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for sequential requests, want 1", n)
	}
}

func TestUpstreamClientLeavesTheRestToTheTransport(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	c, _ := newUpstreamClient(t, srv.URL, nil)
	tests := []struct {
		name      string
		method    string
		body      string
		header    http.Header
		transport bool
	}{
		{"plain GET", "GET", "", nil, false},
		{"GET with Te: trailers", "GET", "", http.Header{"Te": {"trailers"}}, false},
		{"POST", "POST", "x=1", nil, true},
		{"GET with a body", "GET", "x", nil, true},
		{"DELETE", "DELETE", "", nil, true},
		{"upgrade", "GET", "", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}, true},
		{"Expect", "GET", "", http.Header{"Expect": {"100-continue"}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			var viaTransport atomic.Bool // only http.Transport reports GotConn
			ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { viaTransport.Store(true) }})
			req, _ := http.NewRequestWithContext(ctx, tt.method, srv.URL+"/", body)
			for k, v := range tt.header {
				req.Header[k] = v
			}
			res, err := c.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if viaTransport.Load() != tt.transport {
				t.Fatalf("sent by http.Transport: %v, want %v", viaTransport.Load(), tt.transport)
			}
		})
	}
}

// rawUpstream answers each request on a connection with the next of
// answers (raw bytes), then closes the connection once they are used up.
// It counts connections.
func rawUpstream(t *testing.T, answers ...string) (string, *atomic.Int32) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var conns atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				for _, a := range answers {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					if _, err := io.WriteString(c, a); err != nil {
						return
					}
				}
				if tc, ok := c.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
				io.Copy(io.Discard, c)
			}()
		}
	}()
	return "http://" + l.Addr().String(), &conns
}

// An answer the app sends unasked (after a complete one, as a desync
// would) is never taken for the next request's: the connection is dropped.
func TestUpstreamClientDropsAConnectionWithStrayBytes(t *testing.T) {
	t.Parallel()
	first := "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"
	stray := "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nsmuggle"
	// Every connection answers its first request with the first answer
	// and the stray one in one write, its second with "second".
	up, conns := rawUpstream(t, first+stray, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
	c, _ := newUpstreamClient(t, up, nil)
	for i, want := range []string{"first", "first", "first"} {
		_, body, err := get(t, c, "GET", up+"/", nil)
		if err != nil || body != want {
			t.Fatalf("request %d: %q, %v; want %q", i, body, err, want)
		}
	}
	if n := conns.Load(); n != 3 {
		t.Fatalf("%d connections, want 3 (none reused after stray bytes)", n)
	}
}

// The app closes a keep-alive connection after each answer (as an app
// with a short idle timeout does): the next request notices, by the peek
// before reuse or by the retry when the close comes just after it, and
// takes a new connection, without an error.
func TestUpstreamClientNoticesAClosedIdleConnection(t *testing.T) {
	t.Parallel()
	up, conns := rawUpstream(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	c, _ := newUpstreamClient(t, up, nil)
	for i := range 5 {
		if _, body, err := get(t, c, "GET", up+"/", nil); err != nil || body != "ok" {
			t.Fatalf("request %d: %q, %v", i, body, err)
		}
	}
	if n := conns.Load(); n != 5 {
		t.Fatalf("%d connections for 5 requests, each closed by the app after its answer", n)
	}
}

func TestUpstreamClientRefusesOversizedHeaders(t *testing.T) {
	t.Parallel()
	big := "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 8<<10) + "\r\nContent-Length: 0\r\n\r\n"
	early := "HTTP/1.1 103 Early Hints\r\nX-Big: " + strings.Repeat("b", 3<<10) + "\r\n\r\n"
	for _, tt := range []struct {
		name, answer string
		listen       bool // a Got1xxResponse hook restarts the limit, as in http.Transport
		ok           bool
	}{
		{"one large answer", big, false, false},
		{"1xx answers add up", early + early + "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, false},
		{"1xx answers seen by the caller", early + early + "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true, true},
		{"small", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			up, _ := rawUpstream(t, tt.answer)
			limit := func(tr *http.Transport) { tr.MaxResponseHeaderBytes = 4 << 10 }
			c, tr := newUpstreamClient(t, up, limit)
			for _, rt := range []http.RoundTripper{c, tr} {
				ctx := context.Background()
				if tt.listen {
					ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{Got1xxResponse: func(int, textproto.MIMEHeader) error { return nil }})
				}
				req, _ := http.NewRequestWithContext(ctx, "GET", up+"/", nil)
				res, err := rt.RoundTrip(req)
				if err == nil {
					res.Body.Close()
				}
				if (err == nil) != tt.ok {
					t.Fatalf("%T: error %v, want ok=%v", rt, err, tt.ok)
				}
			}
		})
	}
}

func TestUpstreamClientTimesOutAndCancels(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var slow atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fast" {
			return
		}
		slow.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })

	c, _ := newUpstreamClient(t, srv.URL, func(tr *http.Transport) { tr.ResponseHeaderTimeout = 50 * time.Millisecond })
	if _, _, err := get(t, c, "GET", srv.URL+"/fast", nil); err != nil {
		t.Fatal(err)
	}
	// On the reused connection: a timeout, and no second try.
	_, _, err := get(t, c, "GET", srv.URL+"/", nil)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("slow app: %v, want a timeout (answered 504)", err)
	}
	if n := slow.Load(); n > 1 {
		t.Fatalf("the slow request reached the app %d times, want once", n)
	}

	c2, _ := newUpstreamClient(t, srv.URL, nil)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/", nil)
	done := make(chan error, 1)
	go func() {
		_, err := c2.RoundTrip(req)
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled request: %v, want context.Canceled", err)
	}
}

// A body closed before its end closes the connection; a Close while a
// Read waits unblocks it.
func TestUpstreamClientBodyClose(t *testing.T) {
	t.Parallel()
	wrote := make(chan struct{})
	var once sync.Once
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/quick" {
			io.WriteString(w, "ok")
			return
		}
		w.Write([]byte("start"))
		w.(http.Flusher).Flush()
		once.Do(func() { close(wrote) })
		<-r.Context().Done()
	}))
	conns := countConns(srv)
	srv.Start()
	t.Cleanup(srv.Close)
	c, _ := newUpstreamClient(t, srv.URL, nil)
	req, _ := http.NewRequest("GET", srv.URL+"/", nil)
	res, err := c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	<-wrote
	buf := make([]byte, 5)
	if _, err := io.ReadFull(res.Body, buf); err != nil {
		t.Fatal(err)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := res.Body.Read(buf)
		readErr <- err
	}()
	res.Body.Close()
	if err := <-readErr; err == nil {
		t.Fatal("a Read blocked across Close returned no error")
	}
	if _, err := res.Body.Read(buf); err == nil {
		t.Fatal("Read after Close returned no error")
	}
	if _, body, err := get(t, c, "GET", srv.URL+"/quick", nil); err != nil || body != "ok" {
		t.Fatalf("next request: %q, %v", body, err)
	}
	if n := conns.Load(); n < 2 {
		t.Fatalf("%d connections: the one closed early was reused", n)
	}
}

// The app gets the client's Accept-Encoding as sent, none included: the
// pass-through asks for no compression of its own (http.Transport would
// ask for gzip and unpack the answer unless told not to).
func TestPassThroughAddsNoAcceptEncoding(t *testing.T) {
	t.Parallel()
	seen := make(chan []string, 2)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Values("Accept-Encoding")
	}))
	t.Cleanup(up.Close)
	front := newFront(t, up.URL, frontOpts{})
	client := &http.Transport{DisableCompression: true} // sends no Accept-Encoding either
	t.Cleanup(client.CloseIdleConnections)
	for _, tt := range []struct {
		method string
		sent   []string
	}{{"GET", nil}, {"POST", nil}, {"GET", []string{"br"}}} {
		req, _ := http.NewRequest(tt.method, front+"/", strings.NewReader(""))
		if tt.sent != nil {
			req.Header["Accept-Encoding"] = tt.sent
		}
		res, err := client.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if got := <-seen; !reflect.DeepEqual(got, tt.sent) {
			t.Fatalf("%s with Accept-Encoding %q: the app got %q", tt.method, tt.sent, got)
		}
	}
}
