package main

// The contract test: every answer the real binary gives during any test of
// this package (journeys, attacks, faults) is checked against openapi.yaml
// with kin-openapi. Answers on the sidecar's own routes are validated
// against their operation (status, headers, body); the sidecar's own
// answers on the app's routes (a held login, a refused one) against the
// responses the spec lists for them in x-totpgate-login-route-responses
// and x-totpgate-any-route-responses. A response the spec does not declare
// fails the run.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/totpgate/totpgate/gen"
	"github.com/totpgate/totpgate/problem"
)

type contractChecker struct {
	next   http.RoundTripper
	doc    *openapi3.T
	router routers.Router
	// sidecarHosts are the listeners of sidecars this test binary started:
	// "main" or "admin".
	mu           sync.Mutex
	sidecarHosts map[string]string
	violations   []string
	checked      int
}

var contract *contractChecker

// installContract wraps http.DefaultTransport (every client of these tests
// uses it) with the checker.
func installContract() error {
	doc, err := gen.GetSpec()
	if err != nil {
		return err
	}
	d := *doc
	d.Servers = nil
	for _, item := range d.Paths.Map() {
		item.Servers = nil
		for _, op := range item.Operations() {
			op.Servers = nil
		}
	}
	r, err := legacy.NewRouter(&d)
	if err != nil {
		return err
	}
	contract = &contractChecker{next: http.DefaultTransport, doc: &d, router: r, sidecarHosts: map[string]string{}}
	http.DefaultTransport = contract
	return nil
}

// watch registers a sidecar's listener (kind main or admin) so its
// answers are checked.
func (c *contractChecker) watch(baseURL, kind string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sidecarHosts[strings.TrimPrefix(baseURL, "http://")] = kind
}

func (c *contractChecker) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := c.next.RoundTrip(req)
	kind := c.listener(req.URL.Host)
	if err != nil || kind == "" {
		return res, err
	}
	body, rerr := io.ReadAll(res.Body)
	res.Body.Close()
	res.Body = io.NopCloser(bytes.NewReader(body))
	if rerr != nil {
		return res, nil
	}
	if v := c.check(kind, req, res, body); v != "" {
		c.mu.Lock()
		c.violations = append(c.violations, v)
		c.mu.Unlock()
	}
	return res, nil
}

func (c *contractChecker) listener(host string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sidecarHosts[host]
}

// check returns a violation, or "".
func (c *contractChecker) check(kind string, req *http.Request, res *http.Response, body []byte) string {
	c.mu.Lock()
	c.checked++
	c.mu.Unlock()
	where := fmt.Sprintf("%s %s %s → %d", kind, req.Method, req.URL.Path, res.StatusCode)
	// The main listener serves the user API under /mfa and forwards the
	// rest to the app; the admin listener serves everything else.
	underPrefix := req.URL.Path == "/mfa" || strings.HasPrefix(req.URL.Path, "/mfa/")
	sidecarRoute := kind == "admin" || underPrefix
	route, params, err := c.router.FindRoute(req)
	if err == nil && kind == "admin" && underPrefix {
		err = errors.New("the user API is not served on the admin listener")
	}
	isProblem := strings.HasPrefix(res.Header.Get("Content-Type"), "application/problem+json")
	switch {
	case err == nil && sidecarRoute && (route.Operation.OperationID == "completeChallenge" || route.Operation.OperationID == "completeStepUp") && !isProblem:
		return "" // the app's own answer (to a held login or step-up request), released as the app gave it
	case err == nil && sidecarRoute:
		in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, IncludeResponseStatus: true}}
		out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: res.StatusCode, Header: res.Header,
			Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}}
		out.SetBodyBytes(body)
		if strings.Contains(res.Header.Get("Content-Type"), "yaml") {
			// kin-openapi decodes a YAML body into a document before it
			// compares it with the declared string schema.
			out.Options.ExcludeResponseBody = true
		}
		if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
			if route.Operation.Responses.Status(res.StatusCode) == nil {
				// Not the operation's own: one of the answers every user
				// API operation may give (a refused cross-site call).
				if v := c.checkExtension(where, res, body, "x-totpgate-api-responses"); v == "" {
					return ""
				}
			}
			return where + ": " + oneLine(err)
		}
		return ""
	case sidecarRoute:
		// Under the prefix (or on the admin listener) with no operation.
		return c.checkExtension(where, res, body, "x-totpgate-unrouted-responses")
	}
	// The app's route: the app's answer passed through, or the sidecar's
	// own answer there. Only the latter is the sidecar's to declare: it is
	// problem+json with the sidecar's request id.
	if !isProblem || res.Header.Get(problem.RequestIDHeader) == "" {
		return ""
	}
	return c.checkExtension(where, res, body, "x-totpgate-login-route-responses", "x-totpgate-step-up-route-responses", "x-totpgate-any-route-responses")
}

// checkExtension validates a sidecar answer on an app route against the
// responses the spec lists for that status.
func (c *contractChecker) checkExtension(where string, res *http.Response, body []byte, exts ...string) string {
	status := fmt.Sprint(res.StatusCode)
	var refs []string
	for _, ext := range exts {
		byStatus, _ := c.doc.Extensions[ext].(map[string]any)
		list, _ := byStatus[status].([]any)
		for _, item := range list {
			if m, ok := item.(map[string]any); ok {
				if ref, ok := m["$ref"].(string); ok {
					refs = append(refs, strings.TrimPrefix(ref, "#/components/responses/"))
				}
			}
		}
	}
	if len(refs) == 0 {
		return where + ": the spec declares no such sidecar answer (" + strings.Join(exts, ", ") + ")"
	}
	var errs []error
	for _, name := range slices.Compact(refs) {
		resp := c.doc.Components.Responses[name]
		if resp == nil || resp.Value == nil {
			errs = append(errs, fmt.Errorf("%s: no such response", name))
			continue
		}
		got, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type"))
		if len(resp.Value.Content) == 0 && len(body) == 0 {
			return "" // a declared answer without a body (a CORS preflight)
		}
		mt := resp.Value.Content.Get(got)
		if mt == nil || mt.Schema == nil {
			errs = append(errs, fmt.Errorf("%s: does not declare %s", name, got))
			continue
		}
		if !strings.Contains(got, "json") {
			return "" // a declared text answer (the self-service page)
		}
		var doc any
		if err := jsonUnmarshal(body, &doc); err != nil {
			return where + ": body is not JSON"
		}
		if err := mt.Schema.Value.VisitJSON(doc); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		return ""
	}
	return where + ": matches none of " + strings.Join(refs, ", ") + ": " + oneLine(errors.Join(errs...))
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func oneLine(err error) string {
	s := strings.Join(strings.Fields(err.Error()), " ")
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	return s
}

// report fails the run when any answer broke the contract.
func (c *contractChecker) report() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.violations) == 0 {
		return 0
	}
	slices.Sort(c.violations)
	fmt.Fprintf(os.Stderr, "contract: %d of %d sidecar answers do not match openapi.yaml:\n", len(c.violations), c.checked)
	for _, v := range slices.Compact(c.violations) {
		fmt.Fprintln(os.Stderr, "  "+v)
	}
	return 1
}

// The checker itself: answers the spec does not declare are caught.
func TestContractCheckerCatchesUndeclaredAnswers(t *testing.T) {
	t.Parallel()
	if contract == nil {
		t.Fatal("the contract checker is not installed")
	}
	problemHeader := http.Header{"Content-Type": {"application/problem+json"}, problem.RequestIDHeader: {"r1"}}
	tests := []struct {
		name, kind, method, path string
		status                   int
		header                   http.Header
		body                     string
		violation                bool
	}{
		{"undeclared status", "main", "GET", "/mfa/status", 418, problemHeader, `{"type":"x","title":"t","status":418,"code":"bad_request"}`, true},
		{"wrong body", "main", "GET", "/mfa/status", 200, http.Header{"Content-Type": {"application/json"}}, `{"nope":1}`, true},
		{"declared refusal on a login route", "main", "POST", "/login", 503, problemHeader,
			`{"type":"https://totpgate.dev/problems/mfa_unavailable","title":"Service Unavailable","status":503,"code":"mfa_unavailable","request_id":"r1"}`, false},
		{"undeclared sidecar answer on a login route", "main", "POST", "/login", 418, problemHeader, `{"type":"x","title":"t","status":418,"code":"bad_request"}`, true},
		{"declared refusal on a step-up route", "main", "POST", "/settings/password", 403, problemHeader,
			`{"type":"https://totpgate.dev/problems/mfa_enrollment_required","title":"Forbidden","status":403,"code":"mfa_enrollment_required","request_id":"r1"}`, false},
		{"a step-up challenge without its id", "main", "POST", "/settings/password", 401, problemHeader,
			`{"type":"https://totpgate.dev/problems/mfa_step_up_required","title":"Unauthorized","status":401,"code":"mfa_step_up_required","challenge_id":"short"}`, true},
		{"the app's answer to a released step-up request", "main", "POST", "/mfa/step-up", 303, http.Header{"Content-Type": {"text/html"}}, `<p>changed</p>`, false},
		{"the app's own answer", "main", "POST", "/login", 418, http.Header{"Content-Type": {"text/plain"}}, `teapot`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, _ := http.NewRequest(tc.method, "http://sidecar"+tc.path, nil)
			res := &http.Response{StatusCode: tc.status, Header: tc.header}
			if v := contract.check(tc.kind, req, res, []byte(tc.body)); (v != "") != tc.violation {
				t.Fatalf("check = %q, want violation %v", v, tc.violation)
			}
		})
	}
}
