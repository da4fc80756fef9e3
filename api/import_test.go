package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/totpgate/totpgate/api"
	"github.com/totpgate/totpgate/audit"
	"github.com/totpgate/totpgate/gen"
	"github.com/totpgate/totpgate/identity"
	"github.com/totpgate/totpgate/mfa"
	"github.com/totpgate/totpgate/totp"
)

// failingImport stands in for the second-factor service: it imports the
// first record, then fails the way the store or keyring (or a user who
// enrolled meanwhile) can fail midway. The other methods are never called.
type failingImport struct {
	api.MFA
	fail error
}

func (f failingImport) ParseImport(r io.Reader, issuer string) ([]totp.Imported, []totp.ImportError, []totp.ImportError) {
	return totp.ParseImport(r, totp.DefaultParams(), "*")
}

func (f failingImport) ImportAll(_ context.Context, recs []totp.Imported, _, _ bool, each func(mfa.ImportResult) error) error {
	if err := each(mfa.ImportResult{Line: recs[0].Line, UserID: recs[0].UserID, Params: recs[0].Params, Outcome: mfa.Imported,
		RecoveryCodes: []string{"k7fq2-9xm4t-3hwrd-p8vbn"}}); err != nil {
		return err
	}
	return f.fail
}

type nopAudit struct{}

func (nopAudit) Record(context.Context, audit.Event) {}

// A failure midway answers what was written before it, with the recovery
// codes made for it (shown nowhere else), in the shape the spec declares.
func TestImportFailingMidwayAnswersWhatWasWritten(t *testing.T) {
	t.Parallel()
	doc, err := gen.GetSpec()
	if err != nil {
		t.Fatal(err)
	}
	doc.Servers = nil
	for _, item := range doc.Paths.Map() {
		item.Servers = nil
		for _, op := range item.Operations() {
			op.Servers = nil
		}
	}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		fail       error
		status     int
		code       string
		lineStates []string
	}{
		{"store or keyring down", fmt.Errorf("line 3: %w: encrypt secret: vault sealed", mfa.ErrUnavailable), 503, "mfa_unavailable", []string{"2 imported"}},
		{"enrolled meanwhile", &mfa.ImportRefusedError{Lines: []totp.ImportError{{Line: 3, UserID: "bob", Code: totp.ImportConflict, Reason: "user \"bob\" already has a different second factor"}}},
			422, "import_refused", []string{"3 refused", "2 imported"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a, err := api.New(api.Deps{
				Logger: slog.New(slog.DiscardHandler), Gatherer: prometheus.NewRegistry(), Spec: []byte("openapi: 3.0.3"),
				MFA: failingImport{fail: tt.fail}, Keys: struct{ api.Keys }{},
				Identify: func(context.Context, *http.Request) (identity.Identity, error) { return identity.Identity{}, nil },
				Audit:    nopAudit{}, ClientIP: func(*http.Request) string { return "127.0.0.1" },
			})
			if err != nil {
				t.Fatal(err)
			}
			body := "# two users\nalice,PJR3YOIJBZET6AUPTQDGLFGCM5Z577J7\nbob,HEZE5NDZAF3EI6UNMGPCO4EJJXXQMFYE\n"
			req := httptest.NewRequest(http.MethodPost, "/admin/secrets/import?recovery_codes=true", strings.NewReader(body))
			req.Header.Set("Content-Type", "text/plain")
			rec := httptest.NewRecorder()
			a.Handler().ServeHTTP(rec, req)

			var got struct {
				Code  string
				Lines []struct {
					Line          int
					Outcome       string
					RecoveryCodes []string `json:"recovery_codes"`
				}
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || rec.Code != tt.status || got.Code != tt.code {
				t.Fatalf("%d %v\n%s", rec.Code, err, rec.Body)
			}
			var states []string
			for _, l := range got.Lines {
				states = append(states, fmt.Sprintf("%d %s", l.Line, l.Outcome))
				if l.Outcome == "imported" && len(l.RecoveryCodes) != 1 {
					t.Errorf("line %d lost its recovery codes", l.Line)
				}
			}
			if strings.Join(states, ", ") != strings.Join(tt.lineStates, ", ") || rec.Header().Get("Cache-Control") != "no-store" {
				t.Fatalf("lines %v, want %v; headers %v", states, tt.lineStates, rec.Header())
			}

			req.Body = io.NopCloser(strings.NewReader(body))
			route, params, err := router.FindRoute(req)
			if err != nil {
				t.Fatal(err)
			}
			in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
				Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
			out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: rec.Code, Header: rec.Header(),
				Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}}
			out.SetBodyBytes(rec.Body.Bytes())
			if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
				t.Fatalf("the answer breaks the spec: %v", err)
			}
		})
	}
}
