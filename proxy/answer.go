package proxy

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"

	"github.com/totpgate/totpgate/internal/gatecookie"
)

// answer is the app's final answer to a gated request, read whole and
// decoded: what the gate judges is exactly what it would release.
type answer struct {
	Status int
	Header http.Header
	Body   []byte
	// Unreadable, when set, says why the body could not be decoded (an
	// unknown Content-Encoding, a corrupt gzip stream); Body is then raw.
	Unreadable string
}

// errAnswerTooLarge: the app's answer (after decoding) exceeds the limit.
var errAnswerTooLarge = errors.New("proxy: login answer larger than the limit")

// hopHeaders are the hop-by-hop headers of RFC 9110 section 7.6.1, removed
// in both directions like httputil.ReverseProxy does.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func removeHopHeaders(h http.Header) {
	for _, f := range h.Values("Connection") {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textprotoKey(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

func textprotoKey(s string) string { return http.CanonicalHeaderKey(strings.TrimSpace(s)) }

// outbound builds the request the app gets for a gated route: the pass-through
// rewrite (URL, Host, X-Forwarded-*), minus what the gate must not let the
// app act on: Expect (the gate has the body already, and a 100 Continue is
// not an answer), compression (the gate reads what it judges), upgrades, and
// the app's session cookies (an app that logs in the session the client
// already holds must then issue a new one, which the gate holds).
func (g *loginGate) outbound(r *http.Request) *http.Request {
	out := outboundRequest(r, g.rewrite)
	out.Header.Set("Accept-Encoding", "identity")
	if len(g.sessionCookies) > 0 {
		gatecookie.Filter(out.Header, func(name string) bool { return g.sessionCookies[name] })
	}
	return out
}

// outboundRequest is r as the gate sends it to the app itself (not through
// ReverseProxy): hop-by-hop headers, the client's X-Forwarded-* and Expect
// removed (the gate has the body already, and a 100 Continue is not an
// answer), then the pass-through's rewrite (URL, Host, X-Forwarded-*).
func outboundRequest(r *http.Request, rewrite func(*httputil.ProxyRequest)) *http.Request {
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.Close = false
	removeHopHeaders(out.Header)
	for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Expect"} {
		out.Header.Del(h)
	}
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header.Set("User-Agent", "") // keep Go's default out, as ReverseProxy does
	}
	rewrite(&httputil.ProxyRequest{In: r, Out: out})
	return out
}

// fetch sends out to the app and reads its final answer, bounded by limit.
// The transport consumes 1xx answers itself, so only the final one is seen;
// trailers are dropped, never released unjudged.
func (g *loginGate) fetch(out *http.Request) (*answer, error) {
	res, err := g.transport.RoundTrip(out)
	if err != nil {
		return nil, err
	}
	return g.readAnswer(res)
}

// readAnswer reads the app's answer whole and decodes it, bounded by
// login.max_answer_bytes; it closes the body.
func (g *loginGate) readAnswer(res *http.Response) (*answer, error) {
	a, err := readRaw(res, g.opts.MaxAnswerBytes)
	if err != nil {
		return nil, err
	}
	if err := a.decode(g.opts.MaxAnswerBytes); err != nil {
		return nil, err
	}
	return a, nil
}

// readRaw reads the app's answer whole, as the app sent it, bounded by
// limit (errAnswerTooLarge beyond it), without its hop-by-hop headers and
// Content-Length (the answer is written out again whole); it closes the
// body. Trailers are dropped, never released unjudged.
func readRaw(res *http.Response, limit int64) (*answer, error) {
	defer res.Body.Close()
	// Sized once from Content-Length where the app gives it: ReadAll's
	// doubling would hold up to twice the answer per login.
	var buf bytes.Buffer
	if res.ContentLength > 0 && res.ContentLength <= limit {
		buf.Grow(int(res.ContentLength) + bytes.MinRead)
	}
	_, err := buf.ReadFrom(io.LimitReader(res.Body, limit+1))
	raw := buf.Bytes()
	if err != nil {
		return nil, fmt.Errorf("proxy: read answer: %w", err)
	}
	if int64(len(raw)) > limit {
		return nil, errAnswerTooLarge
	}
	a := &answer{Status: res.StatusCode, Header: res.Header, Body: raw}
	removeHopHeaders(a.Header)
	a.Header.Del("Content-Length")
	return a, nil
}

// decode undoes the Content-Encoding the app applied despite being asked for
// identity. Only gzip and deflate are known; anything else leaves the body
// raw and the answer unreadable.
func (a *answer) decode(limit int64) error {
	encs := a.Header.Values("Content-Encoding")
	if len(encs) == 0 {
		return nil
	}
	var list []string
	for _, e := range encs {
		for p := range strings.SplitSeq(e, ",") {
			if p = strings.ToLower(strings.TrimSpace(p)); p != "" && p != "identity" {
				list = append(list, p)
			}
		}
	}
	body := a.Body
	for i := len(list) - 1; i >= 0; i-- {
		var r io.Reader
		switch list[i] {
		case "gzip", "x-gzip":
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				a.Unreadable = "corrupt gzip body"
				return nil
			}
			r = zr
		case "deflate":
			// RFC 9110 deflate is zlib; some servers send raw deflate.
			if zr, err := zlib.NewReader(bytes.NewReader(body)); err == nil {
				r = zr
			} else {
				r = flate.NewReader(bytes.NewReader(body))
			}
		default:
			a.Unreadable = "unsupported Content-Encoding " + strconv.Quote(list[i])
			return nil
		}
		dec, err := io.ReadAll(io.LimitReader(r, limit+1))
		if err != nil {
			a.Unreadable = "corrupt " + list[i] + " body"
			return nil
		}
		if int64(len(dec)) > limit {
			return errAnswerTooLarge
		}
		body = dec
	}
	a.Body = body
	a.Header.Del("Content-Encoding")
	return nil
}

// jsonValue is one scalar (or container) found in a JSON answer.
type jsonValue struct {
	Kind byte // 's' string, 'n' number, 'b' bool, 'z' null, 'o' object or array
	Text string
}

// jsonFacts is what a streaming scan of a JSON answer found, without
// building the document in memory.
type jsonFacts struct {
	// Keys holds the non-empty string values of the collected member
	// names, found at any depth.
	Keys map[string][]string
	// At holds every value found at each wanted pointer; a pointer met
	// twice (duplicate keys) has two values, which the verdict treats as
	// ambiguous.
	At map[string][]jsonValue
	// CredentialKey names the first member, at any depth, whose key looks
	// like a session credential and whose value is not empty, null or false.
	CredentialKey string
}

// squashAppend appends name lower-cased and without separators, so
// session_token, sessionToken and Session-Token compare alike.
func squashAppend(dst, name []byte) []byte {
	for _, c := range name {
		switch {
		case c == '_' || c == '-' || c == '.' || c == ' ':
		case c >= 'A' && c <= 'Z':
			dst = append(dst, c+'a'-'A')
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

func squash(name string) string { return string(squashAppend(nil, []byte(name))) }

// credentialKey: a JSON member name that may hold a session credential.
// Generous on purpose: it only matters for an answer that names no user,
// which is then refused rather than released.
func credentialKey(name string) bool { return credentialSquashed(squashAppend(nil, []byte(name))) }

// credentialKeyRaw is credentialKey on a raw (still escaped) member name,
// without allocating for the usual short, unescaped one.
func credentialKeyRaw(raw []byte) bool {
	if len(raw) > 64 || bytes.IndexByte(raw, '\\') >= 0 {
		return credentialKey(unquote(raw))
	}
	var buf [64]byte
	return credentialSquashed(squashAppend(buf[:0], raw))
}

var credentialWords = [][]byte{[]byte("token"), []byte("jwt"), []byte("session"), []byte("apikey"), []byte("secret"), []byte("credential"), []byte("ticket"), []byte("bearer"), []byte("cookie")}

func credentialSquashed(n []byte) bool {
	if bytes.Contains(n, []byte("csrf")) || bytes.Contains(n, []byte("xsrf")) {
		return false
	}
	for _, w := range credentialWords {
		if bytes.Contains(n, w) {
			return true
		}
	}
	return string(n) == "sid" || string(n) == "auth"
}

// credentialHeader: a response header that may carry a session.
func credentialHeader(name string) bool {
	n := squash(name)
	switch {
	case n == "wwwauthenticate" || n == "proxyauthenticate" || strings.HasPrefix(n, "accesscontrol"):
		return false
	case strings.Contains(n, "csrf") || strings.Contains(n, "xsrf"):
		return false
	}
	for _, w := range []string{"token", "jwt", "session", "auth", "apikey", "secret", "credential", "ticket", "bearer", "cookie"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// credentialParam: a Location query or fragment parameter that may carry a
// credential (OAuth's code and access_token, a session id, a ticket).
func credentialParam(name string) bool {
	n := squash(name)
	return credentialKey(name) || n == "code" || n == "key" || strings.Contains(n, "auth") ||
		strings.Contains(n, "sessid") || strings.Contains(n, "saml") || strings.Contains(n, "assertion")
}
