package api_test

import (
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
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/prometheus/client_golang/prometheus"

	totpgate "github.com/totpgate/totpgate"
	"github.com/totpgate/totpgate/api"
	"github.com/totpgate/totpgate/audit"
	"github.com/totpgate/totpgate/identity"
	"github.com/totpgate/totpgate/mfa"
	"github.com/totpgate/totpgate/rotation"
	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/totp"
)

// failing is a second-factor service (and key rotation) whose every call
// fails with err: the unit under test is how the API answers each kind of
// refusal, not the service.
type failing struct{ err error }

func (f failing) Status(context.Context, string) (store.User, error) { return store.User{}, f.err }
func (f failing) StartEnrollment(context.Context, string, string) (mfa.Enrollment, error) {
	return mfa.Enrollment{}, f.err
}
func (f failing) ConfirmEnrollment(context.Context, string, string) ([]string, error) {
	return nil, f.err
}
func (f failing) Disable(context.Context, string, string) (int, error) { return 0, f.err }
func (f failing) RegenerateRecoveryCodes(context.Context, string, string) ([]string, int, error) {
	return nil, 0, f.err
}
func (f failing) Verify(context.Context, string, string) (mfa.Method, error) { return "", f.err }
func (f failing) Reset(context.Context, string) (int, error)                 { return 0, f.err }
func (f failing) Unlock(context.Context, string) error                       { return f.err }
func (f failing) RevokeHeld(context.Context, string, mfa.ChallengeConfig) (int, error) {
	return 0, f.err
}
func (f failing) ParseImport(io.Reader, string) ([]totp.Imported, []totp.ImportError, []totp.ImportError) {
	return nil, nil, nil
}
func (f failing) ImportAll(context.Context, []totp.Imported, bool, bool, func(mfa.ImportResult) error) error {
	return f.err
}
func (f failing) ExportLines(context.Context, totp.ExportFormat, func(string) error) (int, error) {
	return 0, f.err
}
func (f failing) CompleteChallenge(context.Context, string, string, mfa.ChallengeConfig) (mfa.HeldAnswer, mfa.Method, string, error) {
	return mfa.HeldAnswer{}, "", "u", f.err
}
func (f failing) StartChallengeEnrollment(context.Context, string) (mfa.Enrollment, string, error) {
	return mfa.Enrollment{}, "u", f.err
}
func (f failing) ConfirmChallengeEnrollment(context.Context, string, string, mfa.ChallengeConfig) ([]string, string, error) {
	return nil, "u", f.err
}

func (f failing) DevicesOn() bool                 { return true }
func (f failing) TrustedDeviceTTL() time.Duration { return time.Hour }
func (f failing) TrustDevice(context.Context, string, string, string) (string, mfa.Device, error) {
	return "", mfa.Device{}, f.err
}
func (f failing) ListDevices(context.Context, string, string) ([]mfa.Device, error) {
	return nil, f.err
}
func (f failing) CountDevices(context.Context, string) (int, error) { return 0, f.err }
func (f failing) RevokeDevice(context.Context, string, string, string) (bool, error) {
	return false, f.err
}
func (f failing) RevokeOtherDevices(context.Context, string, string) (int, error) { return 0, f.err }

func (f failing) CompleteStepUp(context.Context, string, string, []byte, mfa.ChallengeConfig) (mfa.StepUp, error) {
	return mfa.StepUp{User: "u", Request: mfa.HeldRequest{Route: "/settings/password"}}, f.err
}

// sessionGate is the gate's side of a step-up for these tests: every call
// presents session S, and the app answers what answer says (or err).
type sessionGate struct {
	answer mfa.HeldAnswer
	err    error
	sent   *int
}

func (g sessionGate) Session(r *http.Request) ([]byte, bool) {
	if c, err := r.Cookie("sid"); err == nil {
		h := sha256.Sum256([]byte(c.Value))
		return h[:], true
	}
	return nil, false
}
func (g sessionGate) Forward(context.Context, mfa.HeldRequest) (mfa.HeldAnswer, error) {
	if g.sent != nil {
		*g.sent++
	}
	return g.answer, g.err
}

type failingKeys struct{ err error }

func (f failingKeys) Status(context.Context) (rotation.Status, error) {
	return rotation.Status{}, f.err
}
func (f failingKeys) Rotate(context.Context) (rotation.Status, error) {
	return rotation.Status{}, f.err
}
func (f failingKeys) RaiseMinDecryptionVersion(context.Context, int) (rotation.Status, error) {
	return rotation.Status{}, f.err
}
func (f failingKeys) Start(context.Context, rotation.Options) (rotation.Job, error) {
	return rotation.Job{}, f.err
}
func (f failingKeys) LatestJob(context.Context) (rotation.Job, error) { return rotation.Job{}, f.err }

type discardAudit struct{}

func (discardAudit) Record(context.Context, audit.Event) {}

func serve(t *testing.T, err error, logs io.Writer) http.Handler {
	t.Helper()
	a, nerr := api.New(api.Deps{
		Logger: slog.New(slog.NewJSONHandler(logs, nil)), Gatherer: prometheus.NewRegistry(), Spec: totpgate.OpenAPISpec(),
		MFA: failing{err}, Keys: failingKeys{err}, Challenges: failing{err}, Release: func(http.ResponseWriter, mfa.HeldAnswer) {},
		StepUps: failing{err}, StepUpGate: sessionGate{},
		Identify: func(context.Context, *http.Request) (identity.Identity, error) {
			return identity.Identity{UserID: "alice"}, nil
		},
		Audit: discardAudit{}, ClientIP: func(*http.Request) string { return "192.0.2.1" }, Devices: failing{err},
	})
	if nerr != nil {
		t.Fatal(nerr)
	}
	return a.Handler()
}

func specRouter(t *testing.T) (*openapi3.T, func(*http.Request) (*openapi3filter.RequestValidationInput, error)) {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(totpgate.OpenAPISpec())
	if err != nil {
		t.Fatal(err)
	}
	doc.Servers = nil
	r, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return doc, func(req *http.Request) (*openapi3filter.RequestValidationInput, error) {
		route, params, err := r.FindRoute(req)
		if err != nil {
			return nil, err
		}
		return &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}, nil
	}
}

// TestRefusalsAreTheDeclaredAnswers: every kind of refusal the service
// gives is answered, on every operation that can meet it, with the status,
// code and headers that operation declares in openapi.yaml (validated by
// kin-openapi), and a failing dependency's cause is logged, never answered.
func TestRefusalsAreTheDeclaredAnswers(t *testing.T) {
	t.Parallel()
	_, route := specRouter(t)
	locked := &mfa.CodeError{Locked: true, LockedUntil: time.Now().Add(90 * time.Second)}
	invalid := &mfa.CodeError{Remaining: 3}
	down := fmt.Errorf("%w: store: connection refused to 10.0.0.7", mfa.ErrUnavailable)
	code := `{"code":"123456"}`
	challenge := `{"challenge_id":"` + strings.Repeat("A", 43) + `","code":"123456"}`
	cases := []struct {
		name, method, path, body string
		err                      error
		status                   int
		code                     string
		header                   string // a header the answer must carry
	}{
		{"status down", "GET", "/mfa/status", "", down, 503, "mfa_unavailable", "Retry-After"},
		{"enroll twice", "POST", "/mfa/enroll", "", mfa.ErrAlreadyEnrolled, 409, "already_enrolled", ""},
		{"enroll down", "POST", "/mfa/enroll", "", down, 503, "mfa_unavailable", "Retry-After"},
		{"confirm wrong", "POST", "/mfa/enroll/confirm", code, invalid, 403, "mfa_invalid", ""},
		{"confirm nothing pending", "POST", "/mfa/enroll/confirm", code, mfa.ErrNotPending, 409, "not_pending", ""},
		{"confirm locked", "POST", "/mfa/enroll/confirm", code, locked, 429, "mfa_locked", "Retry-After"},
		{"disable wrong", "POST", "/mfa/disable", code, invalid, 403, "mfa_invalid", ""},
		{"disable not enrolled", "POST", "/mfa/disable", code, mfa.ErrNotEnrolled, 409, "not_enrolled", ""},
		{"disable locked", "POST", "/mfa/disable", code, locked, 429, "mfa_locked", "Retry-After"},
		{"regenerate down", "POST", "/mfa/recovery-codes", code, down, 503, "mfa_unavailable", "Retry-After"},
		{"challenge wrong", "POST", "/mfa/challenge", challenge, invalid, 401, "mfa_invalid", "WWW-Authenticate"},
		{"challenge gone", "POST", "/mfa/challenge", challenge, mfa.ErrChallengeNotFound, 404, "challenge_not_found", ""},
		{"challenge locked", "POST", "/mfa/challenge", challenge, locked, 429, "mfa_locked", "Retry-After"},
		{"challenge down", "POST", "/mfa/challenge", challenge, down, 503, "mfa_unavailable", "Retry-After"},
		{"step-up wrong", "POST", "/mfa/step-up", challenge, invalid, 401, "mfa_invalid", "WWW-Authenticate"},
		{"step-up gone", "POST", "/mfa/step-up", challenge, mfa.ErrChallengeNotFound, 404, "challenge_not_found", ""},
		{"step-up locked", "POST", "/mfa/step-up", challenge, locked, 429, "mfa_locked", "Retry-After"},
		{"step-up down", "POST", "/mfa/step-up", challenge, down, 503, "mfa_unavailable", "Retry-After"},
		{"challenge enroll gone", "POST", "/mfa/challenge/enroll", `{"challenge_id":"` + strings.Repeat("A", 43) + `"}`, mfa.ErrNotEnrollChallenge, 404, "challenge_not_found", ""},
		{"challenge confirm wrong", "POST", "/mfa/challenge/enroll/confirm", challenge, invalid, 401, "mfa_invalid", "WWW-Authenticate"},
		{"devices down", "GET", "/mfa/devices", "", down, 503, "mfa_unavailable", "Retry-After"},
		{"trust wrong", "POST", "/mfa/devices", code, invalid, 403, "mfa_invalid", ""},
		{"trust not enrolled", "POST", "/mfa/devices", code, mfa.ErrNotEnrolled, 409, "not_enrolled", ""},
		{"trust locked", "POST", "/mfa/devices", code, locked, 429, "mfa_locked", "Retry-After"},
		{"trust down", "POST", "/mfa/devices", code, down, 503, "mfa_unavailable", "Retry-After"},
		{"revoke unknown device", "DELETE", "/mfa/devices/" + strings.Repeat("A", 22), "", mfa.ErrDeviceNotFound, 404, "device_not_found", "Cache-Control"},
		{"revoke device down", "DELETE", "/mfa/devices/" + strings.Repeat("A", 22), "", down, 503, "mfa_unavailable", "Retry-After"},
		{"revoke others down", "POST", "/mfa/devices/revoke-others", "", down, 503, "mfa_unavailable", "Retry-After"},
		{"admin get down", "GET", "/admin/users/alice", "", down, 503, "mfa_unavailable", "Retry-After"},
		{"admin reset unknown", "POST", "/admin/users/alice/reset", "", mfa.ErrNotEnrolled, 404, "user_not_found", ""},
		{"admin unlock unknown", "POST", "/admin/users/alice/unlock", "", mfa.ErrNotEnrolled, 404, "user_not_found", ""},
		{"keys down", "GET", "/admin/keys", "", errors.New("vault: 10.0.0.8: sealed"), 503, "mfa_unavailable", "Retry-After"},
		{"rewrap running", "POST", "/admin/keys/rewrap", "", &rotation.RunningError{Job: rotation.Job{ID: "j1"}}, 409, "rewrap_running", ""},
		{"rewrap never started", "GET", "/admin/keys/rewrap", "", rotation.ErrNoJob, 404, "rewrap_not_found", ""},
		{"import down", "POST", "/admin/secrets/import", `{"data":""}`, down, 503, "mfa_unavailable", "Retry-After"},
		{"export down", "POST", "/admin/secrets/export", `{"i_understand_this_returns_secrets":true}`, down, 503, "mfa_unavailable", "Retry-After"},
		{"min version too early", "POST", "/admin/keys/min-decryption-version", `{"version":2}`, &rotation.OldVersionsError{Remaining: 3, Version: 2}, 409, "old_versions_remain", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var logs bytes.Buffer
			h := serve(t, tc.err, &logs)
			req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			if tc.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			req.Header.Set("X-Request-Id", "req-1")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			res := rec.Result()
			body := rec.Body.Bytes()
			var p struct {
				Code, Instance string
				RequestID      string `json:"request_id"`
				Status         int
			}
			if err := json.Unmarshal(body, &p); err != nil {
				t.Fatalf("%d %s: %v", res.StatusCode, body, err)
			}
			if res.StatusCode != tc.status || p.Code != tc.code || p.Status != tc.status || p.Instance != tc.path || p.RequestID != "req-1" {
				t.Fatalf("answer %d %s, want %d %s at %s", res.StatusCode, body, tc.status, tc.code, tc.path)
			}
			if tc.header != "" && res.Header.Get(tc.header) == "" {
				t.Errorf("no %s header: %v", tc.header, res.Header)
			}
			if res.Header.Get("Cache-Control") != "no-store" || res.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("cache headers %v", res.Header)
			}
			in, err := route(httptest.NewRequest(tc.method, tc.path, nil))
			if err != nil {
				t.Fatal(err)
			}
			out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: res.StatusCode, Header: res.Header,
				Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}}
			out.SetBodyBytes(body)
			if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
				t.Errorf("not the answer the spec declares: %v", err)
			}
			for _, secret := range []string{"10.0.0.7", "10.0.0.8", "connection refused", "sealed"} {
				if bytes.Contains(body, []byte(secret)) {
					t.Errorf("the answer tells the cause (%q): %s", secret, body)
				}
			}
			if tc.status == 503 && !strings.Contains(logs.String(), "dependency failed") {
				t.Errorf("a failing dependency was not logged: %s", logs.String())
			}
		})
	}
}
