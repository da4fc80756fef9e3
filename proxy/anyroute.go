package proxy

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/totpgate/totpgate/audit"
	"github.com/totpgate/totpgate/problem"
)

// AnyRoute is the route label of events from routes nobody configured: the
// path goes to the log line, never to a metric label.
const AnyRoute = "/*"

func bodyRoutes(prefixes []string) []string {
	out := make([]string, 0, len(prefixes))
	for _, p := range prefixes {
		out = append(out, NormalizePath(p))
	}
	return out
}

// scansBody reports whether the JSON answers of path are scanned for
// credentials: it is one of the operator's body routes or below one.
func (g *loginGate) scansBody(path string) bool {
	if len(g.bodyRoutes) == 0 || !g.policy.creds.inBody() {
		return false
	}
	n := NormalizePath(path)
	for _, p := range g.bodyRoutes {
		if n == p || strings.HasPrefix(n, p+"/") || p == "" {
			return true
		}
	}
	return false
}

// watchAnswer is the pass-through's ModifyResponse: every answer, on any
// route, is checked for the app's session credential before it is
// released. Headers are checked always, without buffering; JSON bodies
// only on body routes. An answer that carries a credential the request
// did not already present is judged like a login answer. Everything else
// streams through untouched.
func (g *loginGate) watchAnswer(res *http.Response) error {
	r := res.Request // the request as the app got it: same context, the client's credentials
	found := g.policy.creds.fromHeaders(res.Header)
	scanBody := g.scansBody(inboundPath(r)) && !streaming(res.Header)
	if len(found) == 0 && !scanBody {
		return nil
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		// The body is the upgraded connection: it cannot be held, so a
		// protocol switch that sets a session is refused (502).
		return errors.New("proxy: session credential on a protocol switch")
	}
	ev := events{rec: g.opts.Audit, ctx: r.Context(), ip: g.peers.ClientIP(r).String(), route: AnyRoute, requestID: problem.RequestID(r)}
	if !scanBody {
		// The credential is in the headers: judge it before touching the
		// body, so an answer that needs no second factor (a download with
		// a renewed cookie) streams through unread.
		fresh := g.fresh(r, found)
		if len(fresh) == 0 {
			return nil
		}
		v := g.policy.JudgeCredentials(&answer{Status: res.StatusCode, Header: res.Header}, fresh, g.lookups(r, true))
		if v.Action == Release {
			g.recordRelease(ev, v)
			return nil
		}
		a, err := g.readAnswer(res)
		if err != nil {
			return g.oversized(res, r, ev, err)
		}
		return g.applyAnywhere(res, r, ev, a, v)
	}
	a, err := g.readAnswer(res)
	if err != nil {
		return g.oversized(res, r, ev, err)
	}
	facts, isJSON, err := g.policy.scan(a)
	if err != nil || a.Unreadable != "" {
		return g.applyAnywhere(res, r, ev, a, Verdict{Action: Refuse, Reason: ReasonUnreadable, Marker: "an unreadable answer on a credential body route"})
	}
	if isJSON {
		found = append(found, g.policy.creds.fromJSON(facts)...)
	} else {
		textFound, marker, readable := g.policy.fromText(a, false)
		if !readable {
			return g.applyAnywhere(res, r, ev, a, Verdict{Action: Refuse, Reason: ReasonUnreadable, Marker: marker})
		}
		found = append(found, textFound...)
	}
	fresh := g.fresh(r, found)
	if len(fresh) == 0 {
		releaseInto(res, a)
		return nil
	}
	return g.applyAnywhere(res, r, ev, a, g.policy.JudgeCredentials(a, fresh, g.lookups(r, true)))
}

// fresh drops the credentials the request itself presented (a rolling
// cookie handed back): they grant nothing new.
func (g *loginGate) fresh(r *http.Request, found []Found) []Found {
	out := found[:0]
	for _, f := range found {
		if !f.Credential.PresentedBy(r, f.Value) {
			out = append(out, f)
		}
	}
	return out
}

// oversized answers for an app answer too large to be held.
func (g *loginGate) oversized(res *http.Response, r *http.Request, ev events, err error) error {
	if !errors.Is(err, errAnswerTooLarge) {
		return err // the ErrorHandler answers 502
	}
	buf := newResponseBuffer()
	g.refuseOversized(buf, r, ev, "")
	buf.into(res)
	return nil
}

func (g *loginGate) recordRelease(ev events, v Verdict) {
	ev.user = v.User
	if v.Reason != ReasonAppRefused && v.Reason != ReasonNoSession {
		ev.record(audit.LoginPassed, "", v.Reason)
	}
}

// applyAnywhere carries out a verdict on an answer of any route: a release
// goes out as read, anything else gets the gate's own answer.
func (g *loginGate) applyAnywhere(res *http.Response, r *http.Request, ev events, a *answer, v Verdict) error {
	if v.Action == Release {
		g.recordRelease(ev, v)
		releaseInto(res, a)
		return nil
	}
	if v.Action == Hold {
		g.log.InfoContext(r.Context(), "session issued on an unconfigured route held for a second factor", "request_id", ev.requestID, "path", r.URL.Path)
	}
	buf := newResponseBuffer()
	g.answerInstead(buf, r, ev, loginRequest{}, a, v)
	buf.into(res)
	return nil
}

// streaming answers (server-sent events) cannot be read whole: they are
// never scanned, only their headers are checked.
func streaming(h http.Header) bool {
	mt, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	return mt == "text/event-stream"
}

// inboundKey carries the client's request to ModifyResponse, which sees
// the request as rewritten for the upstream: its base path prepended, the
// gate's own cookies stripped.
type inboundKey struct{}

// inbound is the client's request behind out (out itself on a login
// route, where the gate holds the client's request).
func inbound(out *http.Request) *http.Request {
	if in, ok := out.Context().Value(inboundKey{}).(*http.Request); ok {
		return in
	}
	return out
}

func inboundPath(out *http.Request) string { return inbound(out).URL.Path }

// releaseInto puts a judged answer back into res, decoded as judged.
func releaseInto(res *http.Response, a *answer) {
	res.StatusCode, res.Status = a.Status, strconv.Itoa(a.Status)+" "+http.StatusText(a.Status)
	res.Header = a.Header
	res.Header.Set("Content-Length", strconv.Itoa(len(a.Body)))
	res.Body = io.NopCloser(bytes.NewReader(a.Body))
	res.ContentLength = int64(len(a.Body))
	res.TransferEncoding = nil
	res.Trailer = nil
}

// responseBuffer is an in-memory ResponseWriter, so the gate's own answers
// (a challenge, a refusal) can replace an app answer inside ModifyResponse.
type responseBuffer struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func newResponseBuffer() *responseBuffer { return &responseBuffer{header: http.Header{}} }

func (b *responseBuffer) Header() http.Header { return b.header }
func (b *responseBuffer) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}
func (b *responseBuffer) WriteHeader(status int) {
	if b.status == 0 {
		b.status = status
	}
}

func (b *responseBuffer) into(res *http.Response) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	releaseInto(res, &answer{Status: b.status, Header: b.header, Body: b.body.Bytes()})
}

var _ http.ResponseWriter = (*responseBuffer)(nil)
