package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/totpgate/totpgate/audit"
	"github.com/totpgate/totpgate/identity"
	"github.com/totpgate/totpgate/mfa"
	"github.com/totpgate/totpgate/problem"
	"github.com/totpgate/totpgate/proxy"
)

type frontOpts struct {
	trusted      []netip.Prefix
	headerTimout time.Duration
	api          http.Handler
	// watch turns on the session-credential check of every answer, so a
	// test proves pass-through properties hold with it on.
	watch bool
}

// stubMFA and stubIdentity stand in for the mfa service and the app's
// identity endpoint in these one-package tests (the real ones are proven
// through the binary in cmd/totpgate).
type stubMFA struct{}

func (stubMFA) Enrolled(context.Context, string) (bool, error) { return true, nil }
func (stubMFA) Verify(context.Context, string, string) (mfa.Method, error) {
	return "", errors.New("stub: no codes")
}
func (stubMFA) HoldLogin(context.Context, string, mfa.HeldAnswer, mfa.ChallengeConfig, bool) (mfa.Challenge, error) {
	return mfa.Challenge{Token: "stub-challenge", ExpiresAt: time.Now().Add(time.Minute), Attempts: 1}, nil
}

type stubIdentity struct{}

func (stubIdentity) Identify(context.Context, *http.Request) (identity.Identity, error) {
	return identity.Identity{}, identity.ErrUnauthenticated
}
func (stubIdentity) IdentifyWith(_ context.Context, present func(http.Header), _ *http.Request) (identity.Identity, error) {
	h := http.Header{}
	present(h)
	if strings.Contains(h.Get("Cookie"), "sid=S-") {
		return identity.Identity{UserID: "alice"}, nil
	}
	return identity.Identity{}, identity.ErrUnauthenticated
}

func watchOptions(t *testing.T) *proxy.LoginOptions {
	c, err := identity.ParseCredential("cookie:sid")
	if err != nil {
		t.Fatal(err)
	}
	return &proxy.LoginOptions{
		Paths: []string{"/login"}, CodeHeader: "X-TOTP-Code", CodeField: "totp_code", UserIDPointer: "/user/id",
		Challenge: mfa.ChallengeConfig{TTL: time.Minute, MaxAttempts: 1}, ChallengeURL: "/mfa/challenge", MFA: stubMFA{},
		MaxAnswerBytes: 1 << 20, Audit: audit.NewLog(slog.New(slog.DiscardHandler)),
		Credentials: []proxy.Credential{c}, Introspector: stubIdentity{},
	}
}

// newFront starts the front on loopback in front of upstream and returns its URL.
func newFront(t *testing.T, upstream string, o frontOpts) string {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	if o.headerTimout == 0 {
		o.headerTimout = 10 * time.Second
	}
	if o.api == nil {
		o.api = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "api:%s", r.URL.Path)
		})
	}
	var login *proxy.LoginOptions
	if o.watch {
		login = watchOptions(t)
	}
	tr := proxy.NewTransport(proxy.TransportOptions{DialTimeout: 2 * time.Second, ResponseHeaderTimeout: o.headerTimout, IdleConnTimeout: time.Minute, MaxIdleConns: 128})
	f, err := proxy.New(proxy.Options{
		Upstream:       u,
		PreserveHost:   true,
		Transport:      tr,
		PassThrough:    passThroughClient(tr, u),
		TrustedProxies: o.trusted,
		APIPrefix:      "/mfa",
		API:            o.api,
		Logger:         slog.New(slog.DiscardHandler),
		Login:          login,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestPassThroughKeepsRequestAsSent(t *testing.T) {
	t.Parallel()
	type seen struct {
		Method, Path, RawQuery, Host, Body string
		Header                             http.Header
	}
	got := make(chan seen, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Host, string(b), r.Header.Clone()}
		w.Header().Set("X-App", "yes")
		w.Header().Add("Set-Cookie", "a=1")
		w.Header().Add("Set-Cookie", "b=2")
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, "from app")
	}))
	t.Cleanup(up.Close)
	front := newFront(t, up.URL, frontOpts{})

	req, _ := http.NewRequest("PATCH", front+"/a%2Fb/c?x=1&y=%20z&x=2", strings.NewReader("payload"))
	req.Host = "app.example"
	req.Header.Set("X-Custom", "v")
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "must be dropped")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	s := <-got

	checks := []struct{ name, got, want string }{
		{"method", s.Method, "PATCH"},
		{"path keeps encoding", s.Path, "/a%2Fb/c"},
		{"query", s.RawQuery, "x=1&y=%20z&x=2"},
		{"host preserved", s.Host, "app.example"},
		{"body", s.Body, "payload"},
		{"custom header", s.Header.Get("X-Custom"), "v"},
		{"hop-by-hop header dropped", s.Header.Get("X-Hop"), ""},
		{"request id sent upstream", fmt.Sprint(len(s.Header.Get("X-Request-Id")) > 0), "true"},
		{"status", fmt.Sprint(res.StatusCode), "418"},
		{"response body", string(body), "from app"},
		{"response header", res.Header.Get("X-App"), "yes"},
		{"both cookies", strings.Join(res.Header.Values("Set-Cookie"), ";"), "a=1;b=2"},
		{"request id echoed", res.Header.Get("X-Request-Id"), s.Header.Get("X-Request-Id")},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, c.got, c.want)
		}
	}
}

func TestAPIPrefixRouting(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "app:%s", r.URL.Path)
	}))
	t.Cleanup(up.Close)
	front := newFront(t, up.URL, frontOpts{})
	for path, want := range map[string]string{
		"/mfa":         "api:/mfa",
		"/mfa/status":  "api:/mfa/status",
		"/mfax/status": "app:/mfax/status",
		"/login":       "app:/login",
		"/":            "app:/",
	} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			if got := getBody(t, front+path); got != want {
				t.Errorf("GET %s = %q, want %q", path, got, want)
			}
		})
	}
}

func TestForwardedHeaders(t *testing.T) {
	t.Parallel()
	headers := make(chan http.Header, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		headers <- r.Header.Clone()
	}))
	t.Cleanup(up.Close)
	tests := []struct {
		name      string
		trusted   []netip.Prefix
		wantXFF   string
		wantProto string
		wantHost  string
		wantFwd   string
	}{
		{name: "untrusted peer: spoofed chain replaced", wantXFF: "127.0.0.1", wantProto: "http", wantHost: "front.example"},
		{name: "trusted peer: chain kept and extended", trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
			wantXFF: "203.0.113.9, 127.0.0.1", wantProto: "https", wantHost: "public.example", wantFwd: "for=203.0.113.9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			front := newFront(t, up.URL, frontOpts{trusted: tt.trusted})
			req, _ := http.NewRequest("GET", front+"/", nil)
			req.Host = "front.example"
			req.Header.Set("X-Forwarded-For", "203.0.113.9")
			req.Header.Set("X-Forwarded-Proto", "https")
			req.Header.Set("X-Forwarded-Host", "public.example")
			req.Header.Set("Forwarded", "for=203.0.113.9")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			h := <-headers
			if got := h.Get("X-Forwarded-For"); got != tt.wantXFF {
				t.Errorf("X-Forwarded-For = %q, want %q", got, tt.wantXFF)
			}
			if got := h.Get("X-Forwarded-Proto"); got != tt.wantProto {
				t.Errorf("X-Forwarded-Proto = %q, want %q", got, tt.wantProto)
			}
			if got := h.Get("X-Forwarded-Host"); got != tt.wantHost {
				t.Errorf("X-Forwarded-Host = %q, want %q", got, tt.wantHost)
			}
			if got := h.Get("Forwarded"); got != tt.wantFwd {
				t.Errorf("Forwarded = %q, want %q", got, tt.wantFwd)
			}
		})
	}
}

// The upstream must see the first part of an upload before the client has
// sent the rest: proof that the body is streamed, not buffered.
func TestLargeUploadStreams(t *testing.T) {
	t.Parallel()
	const size = 50 << 20
	firstChunk := make(chan struct{})
	sum := make(chan string, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		buf := make([]byte, 1<<20)
		n, err := io.ReadFull(r.Body, buf)
		if err != nil {
			t.Errorf("upstream first read: %v", err)
			return
		}
		h.Write(buf[:n])
		close(firstChunk)
		if _, err := io.Copy(h, r.Body); err != nil {
			t.Errorf("upstream copy: %v", err)
		}
		sum <- fmt.Sprintf("%x", h.Sum(nil))
	}))
	t.Cleanup(up.Close)
	front := newFront(t, up.URL, frontOpts{})

	pr, pw := io.Pipe()
	want := sha256.New()
	go func() {
		chunk := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
		for i := 0; i < size/len(chunk); i++ {
			chunk[0] = byte(i)
			want.Write(chunk)
			if _, err := pw.Write(chunk); err != nil {
				return
			}
			if i == 0 {
				select {
				case <-firstChunk:
				case <-time.After(60 * time.Second):
					pw.CloseWithError(fmt.Errorf("upstream never saw the first MiB while the upload was open: the body is buffered"))
					return
				}
			}
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("PUT", front+"/upload", pr)
	req.ContentLength = size
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got, w := <-sum, fmt.Sprintf("%x", want.Sum(nil)); got != w {
		t.Fatalf("upstream received sha256 %s, client sent %s", got, w)
	}
}

func TestLargeDownloadStreams(t *testing.T) {
	t.Parallel()
	const size = 50 << 20
	clientGotFirst := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(size))
		chunk := bytes.Repeat([]byte{'x'}, 1<<20)
		for i := 0; i < size/len(chunk); i++ {
			w.Write(chunk)
			if i == 0 {
				w.(http.Flusher).Flush()
				// A buffering proxy never delivers the first MiB (the upstream
				// waits here), so only the timeout reveals it; it is long
				// because the full suite shares 2 cores with Vault servers.
				select {
				case <-clientGotFirst:
				case <-time.After(60 * time.Second):
					t.Error("client never received the first MiB while the download was open: the response is buffered")
					return
				}
			}
		}
	}))
	t.Cleanup(up.Close)
	front := newFront(t, up.URL, frontOpts{})
	res, err := http.Get(front + "/download")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if _, err := io.ReadFull(res.Body, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	close(clientGotFirst)
	n, err := io.Copy(io.Discard, res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if n+1<<20 != size {
		t.Fatalf("downloaded %d bytes, want %d", n+1<<20, size)
	}
}

// Each event must reach the client before the upstream writes the next one.
func TestServerSentEventsArriveOneByOne(t *testing.T) {
	t.Parallel()
	for _, watch := range []bool{false, true} {
		t.Run(fmt.Sprintf("credential check %v", watch), func(t *testing.T) {
			t.Parallel()
			testServerSentEvents(t, watch)
		})
	}
}

func testServerSentEvents(t *testing.T, watch bool) {
	ack := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: event %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-ack:
			case <-time.After(5 * time.Second):
				t.Errorf("event %d was not delivered while the stream was open", i)
				return
			}
		}
	}))
	t.Cleanup(up.Close)
	front := newFront(t, up.URL, frontOpts{watch: watch})
	res, err := http.Get(front + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	for i := range 3 {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("data: event %d\n", i); line != want {
			t.Fatalf("line = %q, want %q", line, want)
		}
		br.ReadString('\n') // blank separator
		ack <- struct{}{}
	}
}

func TestWebSocketEcho(t *testing.T) {
	t.Parallel()
	for _, watch := range []bool{false, true} {
		t.Run(fmt.Sprintf("credential check %v", watch), func(t *testing.T) {
			t.Parallel()
			testWebSocketEcho(t, watch)
		})
	}
}

func testWebSocketEcho(t *testing.T, watch bool) {
	up := httptest.NewServer(websocket.Handler(func(c *websocket.Conn) {
		for {
			var msg string
			if websocket.Message.Receive(c, &msg) != nil || websocket.Message.Send(c, msg) != nil {
				return
			}
		}
	}))
	t.Cleanup(up.Close)
	front := newFront(t, up.URL, frontOpts{watch: watch})
	ws, err := websocket.Dial("ws"+strings.TrimPrefix(front, "http")+"/ws", "", front)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	for _, msg := range []string{"hello", "second message", strings.Repeat("z", 70000)} {
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		var got string
		ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		if err := websocket.Message.Receive(ws, &got); err != nil {
			t.Fatal(err)
		}
		if got != msg {
			t.Fatalf("echo = %.20q (len %d), want %.20q (len %d)", got, len(got), msg, len(msg))
		}
	}
}

// With the credential check on, an answer on any route that sets a session
// cookie is held for the enrolled user, one that sets an anonymous cookie
// or none streams through, and a 103 that carries a session is dropped.
func TestCredentialCheckOnAnyRoute(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/signup":
			http.SetCookie(w, &http.Cookie{Name: "sid", Value: "S-alice"})
		case "/visit":
			http.SetCookie(w, &http.Cookie{Name: "sid", Value: "anonymous"})
		case "/hints":
			w.Header().Set("Set-Cookie", "sid=S-alice")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Set-Cookie")
		case "/download":
			// A download larger than any answer the gate holds, with a
			// renewed anonymous cookie: judged by its headers, streamed.
			http.SetCookie(w, &http.Cookie{Name: "sid", Value: "anonymous"})
			io.WriteString(w, strings.Repeat("d", 3<<20))
			return
		}
		io.WriteString(w, "app "+r.URL.Path)
	}))
	t.Cleanup(up.Close)
	front := newFront(t, up.URL, frontOpts{watch: true})
	for path, want := range map[string]int{"/signup": 401, "/visit": 200, "/plain": 200, "/hints": 200, "/download": 200} {
		var early []string
		req, _ := http.NewRequest("GET", front+path, nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			early = append(early, h.Get("Set-Cookie"))
			return nil
		}}))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != want || (want == 401 && (len(res.Cookies()) > 0 || strings.Contains(string(body), "app /signup"))) {
			t.Errorf("%s = %d %q cookies %v, want %d without the app's answer", path, res.StatusCode, body, res.Cookies(), want)
		}
		if len(early) > 0 {
			t.Errorf("%s: a 1xx with a session reached the client: %q", path, early)
		}
		if path == "/download" && len(body) != 3<<20 {
			t.Errorf("the download with a renewed cookie came through with %d bytes, want all %d", len(body), 3<<20)
		}
	}
}

func TestConcurrentKeepAliveClients(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "echo:"+r.URL.Query().Get("id"))
	}))
	t.Cleanup(up.Close)
	front := newFront(t, up.URL, frontOpts{})

	const clients, perClient = 100, 20
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := range clients {
		wg.Go(func() {
			// One keep-alive connection per client.
			tr := &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			cl := &http.Client{Transport: tr, Timeout: 30 * time.Second}
			for i := range perClient {
				id := fmt.Sprintf("%d-%d", c, i)
				res, err := cl.Get(front + "/?id=" + id)
				if err != nil {
					errs <- err
					return
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if string(b) != "echo:"+id {
					errs <- fmt.Errorf("client %d request %d: got %q", c, i, b)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestUpstreamFailuresAnswerProblems(t *testing.T) {
	t.Parallel()
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(slow.Close)
	down := httptest.NewServer(http.NotFoundHandler())
	downURL := down.URL
	down.Close()

	tests := []struct {
		name       string
		upstream   string
		wantStatus int
		wantCode   string
	}{
		{"upstream down", downURL, http.StatusBadGateway, "upstream_unavailable"},
		{"upstream too slow", slow.URL, http.StatusGatewayTimeout, "upstream_timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			front := newFront(t, tt.upstream, frontOpts{headerTimout: 200 * time.Millisecond})
			res, err := http.Get(front + "/x")
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if res.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d", res.StatusCode, tt.wantStatus)
			}
			if ct := res.Header.Get("Content-Type"); ct != problem.ContentType {
				t.Fatalf("Content-Type = %q", ct)
			}
			raw, _ := io.ReadAll(res.Body)
			var p problem.Details
			if err := json.Unmarshal(raw, &p); err != nil {
				t.Fatal(err)
			}
			if p.Code != tt.wantCode || p.Status != tt.wantStatus || p.RequestID == "" {
				t.Fatalf("problem = %+v", p)
			}
			// Nothing internal: no addresses, no Go error text.
			for _, leak := range []string{"127.0.0.1", "dial", "timeout awaiting", "connection refused"} {
				if strings.Contains(string(raw), leak) {
					t.Errorf("problem body leaks %q: %s", leak, raw)
				}
			}
		})
	}
}

func getBody(t *testing.T, u string) string {
	t.Helper()
	res, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

// BenchmarkFrontPassThrough measures the front's own cost per proxied
// request (allocations in particular) against a loopback upstream.
func BenchmarkFrontPassThrough(b *testing.B) {
	body := strings.Repeat("x", 1024)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, body)
	}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	tr := proxy.NewTransport(proxy.TransportOptions{DialTimeout: time.Second, ResponseHeaderTimeout: 5 * time.Second, IdleConnTimeout: time.Minute, MaxIdleConns: 64})
	f, err := proxy.New(proxy.Options{
		Upstream:    u,
		Transport:   tr,
		PassThrough: passThroughClient(tr, u),
		APIPrefix:   "/mfa",
		API:         http.NotFoundHandler(),
		Logger:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	front := httptest.NewServer(f)
	defer front.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := client.Get(front.URL + "/")
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	})
}
