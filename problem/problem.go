// Package problem writes RFC 9457 problem+json answers with totpgate's
// stable machine-readable codes. Every error the sidecar answers itself goes
// through here, so clients see one shape whatever failed.
package problem

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/totpgate/totpgate/gen"
)

// ContentType is the media type of every error answer.
const ContentType = "application/problem+json"

// TypeBase prefixes the code to form the problem's type URI.
const TypeBase = "https://totpgate.dev/problems/"

// FieldError names one bad input and what is wrong with it.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Details is the problem body. Extra members (challenge ids and the like)
// are added by the callers that need them through Extra.
type Details struct {
	Type      string       `json:"type"`
	Title     string       `json:"title"`
	Status    int          `json:"status"`
	Detail    string       `json:"detail,omitempty"`
	Instance  string       `json:"instance,omitempty"`
	Code      string       `json:"code"`
	RequestID string       `json:"request_id,omitempty"`
	Errors    []FieldError `json:"errors,omitempty"`
}

// New builds a problem for code with the status's standard title. The
// code is the spec's enum (gen.ProblemCode constants), so the compiler
// checks that every code answered is one openapi.yaml declares.
func New(status int, code gen.ProblemCode, detail string) Details {
	return Details{Type: TypeBase + string(code), Title: http.StatusText(status), Status: status, Code: string(code), Detail: detail}
}

// Write sends p. The request id, when the request carries one, is copied in
// so a user's report can be matched to the log line.
func Write(w http.ResponseWriter, r *http.Request, p Details) {
	if p.RequestID == "" && r != nil {
		p.RequestID = RequestID(r)
	}
	if p.Instance == "" && r != nil {
		p.Instance = r.URL.EscapedPath()
	}
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	b, _ := json.Marshal(p) // Details has only marshalable fields
	h.Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(p.Status)
	_, _ = w.Write(append(b, '\n'))
}

// RequestIDHeader carries the request id to the upstream and back to the client.
const RequestIDHeader = "X-Request-Id"

// RequestID returns the id the front assigned to r (it sets the header on
// the inbound request), or "".
func RequestID(r *http.Request) string { return r.Header.Get(RequestIDHeader) }

// WriteExtended sends p with extension members (RFC 9457 §3.2) taken from
// the JSON object ext, e.g. a challenge id.
func WriteExtended(w http.ResponseWriter, r *http.Request, p Details, ext any) {
	if p.RequestID == "" && r != nil {
		p.RequestID = RequestID(r)
	}
	if p.Instance == "" && r != nil {
		p.Instance = r.URL.EscapedPath()
	}
	members := map[string]json.RawMessage{}
	base, _ := json.Marshal(p)
	extra, _ := json.Marshal(ext)
	_ = json.Unmarshal(extra, &members)
	_ = json.Unmarshal(base, &members) // the standard members win
	b, _ := json.Marshal(members)
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(p.Status)
	_, _ = w.Write(append(b, '\n'))
}

// RetryAfter renders a wait as a Retry-After value: whole seconds, at least 1.
func RetryAfter(d time.Duration) string { return strconv.Itoa(RetrySeconds(d)) }

// RetrySeconds is a wait in the whole seconds of Retry-After, at least 1,
// for the generated typed responses that declare the header as an integer.
func RetrySeconds(d time.Duration) int { return max(1, int(d.Round(time.Second)/time.Second)) }

// Model is p as the generated model, for the strict server's typed
// responses: the same members Write sends.
func (p Details) Model() gen.Problem {
	m := gen.Problem{Type: p.Type, Title: p.Title, Status: p.Status, Code: gen.ProblemCode(p.Code)}
	if p.Detail != "" {
		m.Detail = &p.Detail
	}
	if p.Instance != "" {
		m.Instance = &p.Instance
	}
	if p.RequestID != "" {
		m.RequestId = &p.RequestID
	}
	if len(p.Errors) > 0 {
		errs := make([]gen.FieldError, len(p.Errors))
		for i, e := range p.Errors {
			errs[i] = gen.FieldError{Field: e.Field, Message: e.Message}
		}
		m.Errors = &errs
	}
	return m
}
