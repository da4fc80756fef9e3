package proxy_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/totpgate/totpgate/identity"
	"github.com/totpgate/totpgate/mfa"
	"github.com/totpgate/totpgate/proxy"
)

// A released step-up request reaches the app at most once, also when it
// is one Go's transport would resend (a GET, or any request carrying an
// Idempotency-Key) after a reused connection died once the app had read
// it: the forwarder never reuses a connection.
func TestStepUpForwardSendsAtMostOnce(t *testing.T) {
	t.Parallel()
	for _, key := range []string{"", "Idempotency-Key", "X-Idempotency-Key"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var posts atomic.Int32
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func(c net.Conn) {
					defer c.Close()
					br := bufio.NewReader(c)
					for n := 0; ; n++ {
						req, err := http.ReadRequest(br)
						if err != nil {
							return
						}
						io.Copy(io.Discard, req.Body)
						if req.Method == "POST" {
							posts.Add(1)
							if n > 0 { // read it on a reused connection, then die
								return
							}
						}
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
					}
				}(c)
			}
		}()
		u, _ := url.Parse("http://" + ln.Addr().String())
		cred, _ := identity.ParseCredential("cookie:sid")
		fw, err := proxy.NewStepUpForwarder(proxy.StepUpForwarderOptions{Upstream: u, Transport: stepUpTransport, Credentials: []proxy.Credential{cred}, MaxAnswerBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		// A first forward, whose connection a pooling transport would keep.
		if _, err := fw.Forward(context.Background(), mfa.HeldRequest{Method: "GET", URI: "/", Host: u.Host, Header: http.Header{}}); err != nil {
			t.Fatal(err)
		}
		h := http.Header{"Cookie": {"sid=S1"}, "Content-Type": {"application/json"}}
		if key != "" {
			h.Set(key, "anything")
		}
		_, err = fw.Forward(context.Background(), mfa.HeldRequest{Method: "POST", URI: "/settings/password", Host: u.Host, Header: h,
			Body: []byte(`{"password":"new"}`)})
		if err != nil {
			t.Errorf("header %q: forward: %v", key, err)
		}
		if posts.Load() != 1 {
			t.Errorf("header %q: the released step-up request reached the app %d times", key, posts.Load())
		}
		ln.Close()
	}
}
