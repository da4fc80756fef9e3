package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	totpgate "github.com/totpgate/totpgate"
	"github.com/totpgate/totpgate/api"
	"github.com/totpgate/totpgate/identity"
	"github.com/totpgate/totpgate/mfa"
)

// stepUps releases a held request to the session S1 only, as the mfa
// service does, and remembers the session it was given.
type stepUps struct{ got []byte }

func (s *stepUps) CompleteStepUp(_ context.Context, _, _ string, session []byte, _ mfa.ChallengeConfig) (mfa.StepUp, error) {
	s.got = session
	want := sha256.Sum256([]byte("S1"))
	if !bytes.Equal(session, want[:]) {
		return mfa.StepUp{}, mfa.ErrChallengeNotFound
	}
	return mfa.StepUp{User: "alice", Method: mfa.MethodTOTP, Proof: "PROOF",
		Request: mfa.HeldRequest{Method: "POST", URI: "/settings/password", Route: "/settings/password", MaxAge: 5 * time.Minute}}, nil
}

func stepUpAPI(t *testing.T, s *stepUps, g sessionGate, logs *bytes.Buffer) http.Handler {
	t.Helper()
	a, err := api.New(api.Deps{
		Logger: slog.New(slog.NewJSONHandler(logs, nil)), Gatherer: prometheus.NewRegistry(), Spec: totpgate.OpenAPISpec(),
		MFA: failing{}, Keys: failingKeys{}, Release: func(w http.ResponseWriter, a mfa.HeldAnswer) {
			for k, v := range a.Header {
				w.Header()[k] = v
			}
			w.WriteHeader(a.Status)
			w.Write(a.Body)
		},
		StepUps: s, StepUpGate: g,
		Identify: func(context.Context, *http.Request) (identity.Identity, error) {
			return identity.Identity{}, identity.ErrUnauthenticated
		},
		Audit: discardAudit{}, ClientIP: func(*http.Request) string { return "192.0.2.1" },
	})
	if err != nil {
		t.Fatal(err)
	}
	return a.Handler()
}

func completeStepUp(h http.Handler, cookie string, header ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest("POST", "/mfa/step-up", strings.NewReader(`{"challenge_id":"`+strings.Repeat("A", 43)+`","code":"123456"}`))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// The app's answer to the released request is the completion's answer, as
// the app gave it, with the proof cookie for the route's max_age; the call
// must present the held request's session.
func TestCompleteStepUpReleasesTheAppsAnswer(t *testing.T) {
	t.Parallel()
	sent := 0
	s := &stepUps{}
	g := sessionGate{sent: &sent, answer: mfa.HeldAnswer{Status: http.StatusSeeOther,
		Header: http.Header{"Location": {"/settings?done=1"}, "Set-Cookie": {"flash=changed"}, "Content-Type": {"text/plain"}}, Body: []byte("changed")}}
	var logs bytes.Buffer
	h := stepUpAPI(t, s, g, &logs)

	rec := completeStepUp(h, "sid=S1")
	res := rec.Result()
	if res.StatusCode != http.StatusSeeOther || rec.Body.String() != "changed" || res.Header.Get("Location") != "/settings?done=1" {
		t.Fatalf("completion = %d %v %q, want the app's answer", res.StatusCode, res.Header, rec.Body)
	}
	cookies := res.Header.Values("Set-Cookie")
	if len(cookies) != 2 || cookies[0] != "flash=changed" || cookies[1] != "__Host-totpgate-step-up=PROOF; Path=/; Max-Age=300; HttpOnly; Secure; SameSite=Lax" {
		t.Fatalf("Set-Cookie = %q", cookies)
	}
	if sent != 1 {
		t.Fatalf("the held request was sent %d times", sent)
	}
	// Another session, or none: not found, nothing sent.
	for _, cookie := range []string{"sid=S2", ""} {
		if rec := completeStepUp(h, cookie); rec.Code != 404 || sent != 1 {
			t.Fatalf("completion from %q = %d (sent %d)", cookie, rec.Code, sent)
		}
	}
	if s.got != nil {
		t.Fatalf("a call without a session passed a session hash %x", s.got)
	}
	if strings.Contains(logs.String(), "PROOF") {
		t.Fatal("the proof was logged")
	}
}

// The self-service page's completion (X-Totpgate-Step-Up-Page) passes only
// with the mark the gate's 303 set for that challenge: a link to the page
// with a challenge made elsewhere finds nothing, and spends nothing.
func TestCompleteStepUpFromThePageNeedsItsMark(t *testing.T) {
	t.Parallel()
	sent := 0
	h := stepUpAPI(t, &stepUps{}, sessionGate{sent: &sent, answer: mfa.HeldAnswer{Status: 200, Body: []byte("ok")}}, &bytes.Buffer{})
	mark := "__Host-totpgate-step-up-nav=" + mfa.PageMark(strings.Repeat("A", 43))
	for _, tc := range []struct {
		name, cookie string
		want         int
	}{
		{"no mark", "sid=S1", 404},
		{"another challenge's mark", "sid=S1; __Host-totpgate-step-up-nav=" + mfa.PageMark(strings.Repeat("B", 43)), 404},
		{"its mark", "sid=S1; " + mark, 200},
	} {
		if rec := completeStepUp(h, tc.cookie, "X-Totpgate-Step-Up-Page", "1"); rec.Code != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, rec.Code, tc.want)
		}
	}
	if sent != 1 {
		t.Fatalf("the held request was sent %d times, want once (with its mark)", sent)
	}
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// The code passed but the app cannot be reached: 502 (504 when it was too
// slow), the request is not sent again, and the cause is logged, not
// answered.
func TestCompleteStepUpAppUnreachable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{errors.New("dial tcp 10.0.0.9:3000: connection refused"), 502, "upstream_unavailable"},
		{fmt.Errorf("read: %w", timeoutError{}), 504, "upstream_timeout"},
	} {
		sent := 0
		var logs bytes.Buffer
		h := stepUpAPI(t, &stepUps{}, sessionGate{sent: &sent, err: tc.err}, &logs)
		rec := completeStepUp(h, "sid=S1")
		if rec.Code != tc.status || !strings.Contains(rec.Body.String(), `"code":"`+tc.code+`"`) || sent != 1 {
			t.Errorf("%v: %d %s (sent %d), want %d %s once", tc.err, rec.Code, rec.Body, sent, tc.status, tc.code)
		}
		if strings.Contains(rec.Body.String(), "10.0.0.9") || rec.Header().Get("Set-Cookie") != "" {
			t.Errorf("the answer tells the cause or sets a proof: %v %s", rec.Header(), rec.Body)
		}
		if !strings.Contains(logs.String(), "not sent again") {
			t.Errorf("not logged: %s", logs.String())
		}
	}
}
