package problem_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/totpgate/totpgate/gen"
	"github.com/totpgate/totpgate/problem"
)

func TestWrite(t *testing.T) {
	r := httptest.NewRequest("POST", "/mfa/enroll%2Fx?code=1", nil)
	r.Header.Set(problem.RequestIDHeader, "req-7")
	w := httptest.NewRecorder()
	problem.Write(w, r, problem.New(http.StatusConflict, gen.ProblemCodeNotPending, "Start again."))
	res := w.Result()
	var got map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"type": problem.TypeBase + "not_pending", "title": "Conflict", "status": 409.0, "code": "not_pending",
		"detail": "Start again.", "instance": "/mfa/enroll%2Fx", "request_id": "req-7"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("members %v, want only %v", got, want)
	}
	for h, v := range map[string]string{"Content-Type": problem.ContentType, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
		"Content-Length": strconv.Itoa(w.Body.Len())} {
		if res.Header.Get(h) != v {
			t.Errorf("%s = %q, want %q", h, res.Header.Get(h), v)
		}
	}
	if res.StatusCode != 409 {
		t.Errorf("status %d", res.StatusCode)
	}
}

// The standard members cannot be overwritten by an extension.
func TestWriteExtendedKeepsTheStandardMembers(t *testing.T) {
	r := httptest.NewRequest("POST", "/mfa/challenge", nil)
	w := httptest.NewRecorder()
	problem.WriteExtended(w, r, problem.New(http.StatusUnauthorized, gen.ProblemCodeMfaInvalid, "Wrong code."),
		map[string]any{"challenge_id": "c1", "status": 200, "code": "ok"})
	var got map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got["challenge_id"] != "c1" || got["status"] != 401.0 || got["code"] != "mfa_invalid" || w.Code != 401 {
		t.Fatalf("%d %v", w.Code, got)
	}
}

func TestRetryAfter(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "1", -time.Second: "1", 1400 * time.Millisecond: "1", 1600 * time.Millisecond: "2", 5 * time.Minute: "300"} {
		if got := problem.RetryAfter(d); got != want {
			t.Errorf("RetryAfter(%v) = %q, want %q", d, got, want)
		}
	}
}

// Model gives the typed responses the members Write sends.
func TestModelMatchesWrite(t *testing.T) {
	p := problem.New(http.StatusBadRequest, gen.ProblemCodeValidationFailed, "Bad field.")
	p.RequestID, p.Instance = "req-9", "/admin/keys"
	p.Errors = []problem.FieldError{{Field: "body.version", Message: "must be at least 1"}}
	w := httptest.NewRecorder()
	problem.Write(w, nil, p)
	var written, modelled map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &written); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(p.Model())
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &modelled); err != nil {
		t.Fatal(err)
	}
	wj, _ := json.Marshal(written)
	mj, _ := json.Marshal(modelled)
	if string(wj) != string(mj) {
		t.Fatalf("Model %s, Write %s", mj, wj)
	}
}
