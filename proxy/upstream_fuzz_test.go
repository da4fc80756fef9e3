package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/totpgate/totpgate/proxy"
)

// outcome is what a client made of an app's answer, in the terms the
// pass-through passes on.
type outcome struct {
	Err      bool
	Switch   bool // a 101 (the client refuses it, the transport hands over the connection; ReverseProxy answers 502 for both)
	Status   int
	Proto    string
	Header   http.Header
	Length   int64
	Chunked  bool
	Close    bool
	Body     string
	BodyErr  bool
	Trailer  http.Header
	Informal []string // 1xx answers passed to Got1xxResponse
}

// roundTripRaw sends one request through rt to an app that answers
// answer (raw bytes) and closes the connection.
func roundTripRaw(t *testing.T, rt http.RoundTripper, addr, method, answer string) outcome {
	t.Helper()
	var o outcome
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			o.Informal = append(o.Informal, fmt.Sprint(code, h))
			return nil
		},
	})
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := rt.RoundTrip(req)
	if err != nil {
		o.Err = true
		o.Switch = strings.Contains(err.Error(), "switched protocols")
		return o
	}
	defer res.Body.Close()
	if res.StatusCode == http.StatusSwitchingProtocols {
		return outcome{Err: true, Switch: true, Informal: o.Informal}
	}
	o.Status, o.Proto, o.Header, o.Length, o.Close = res.StatusCode, res.Proto, res.Header, res.ContentLength, res.Close
	o.Chunked = len(res.TransferEncoding) > 0
	b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	o.Body, o.BodyErr, o.Trailer = string(b), err != nil, res.Trailer
	return o
}

// FuzzUpstreamClientMatchesTransport feeds both clients the same raw app
// answer and requires the same outcome: the client's parsing is the
// transport's (http.ReadResponse), and what it adds around it (1xx
// answers, the header limit, the end of the body) must not differ. The
// seeds are the answers a smuggling or desync attempt would send.
func FuzzUpstreamClientMatchesTransport(f *testing.F) {
	for _, seed := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n5\r\nhello\r\n0\r\nX-T: v\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-A : b\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nBad Header\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-A: \x00\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
		"HTTP/1.1 200 OK\r\n\r\nuntil the end",
		"HTTP/1.0 200 OK\r\n\r\nold",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
		"HTTP/1.1 2000 OK\r\n\r\n",
		"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nsmuggle",
		"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc",
		"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
		"",
		"HTTP/1.1 200",
	} {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	f.Fuzz(func(t *testing.T, answer string, head bool) {
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}
		up, _ := rawUpstream(t, answer)
		addr := strings.TrimPrefix(up, "http://")
		newTransport := func() *http.Transport {
			tr := proxy.NewTransport(proxy.TransportOptions{DialTimeout: 2 * time.Second, ResponseHeaderTimeout: 5 * time.Second, IdleConnTimeout: time.Minute, MaxIdleConns: 4})
			tr.MaxResponseHeaderBytes = 64 << 10
			t.Cleanup(tr.CloseIdleConnections)
			return tr
		}
		u, err := url.Parse("http://" + addr)
		if err != nil {
			t.Fatal(err)
		}
		ours := proxy.NewUpstreamClient(newTransport(), u)
		if _, ok := ours.(*proxy.UpstreamClient); !ok {
			t.Skip("no upstream client on this platform")
		}
		got := roundTripRaw(t, ours, addr, method, answer)
		want := roundTripRaw(t, newTransport(), addr, method, answer)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("answer %q (%s):\nupstream client %+v\nhttp.Transport  %+v", answer, method, got, want)
		}
	})
}
