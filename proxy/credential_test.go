package proxy

import (
	"errors"
	"net/http"
	"testing"
)

func TestCredentialsFromHeaders(t *testing.T) {
	t.Parallel()
	cs := mustCredentials(t, "cookie:sid", "header:X-Session-Token", "location:access_token")
	h := http.Header{
		"Set-Cookie":      {"sid=abc; Path=/; HttpOnly", "sid=; Max-Age=0", "other=1"},
		"X-Session-Token": {"Bearer tok"},
		"Location":        {"/app#/home?access_token=loc"},
	}
	got := cs.fromHeaders(h)
	values := map[string]bool{}
	for _, f := range got {
		values[f.Value] = true
	}
	if len(got) != 3 || !values["abc"] || !values["Bearer tok"] || !values["loc"] {
		t.Fatalf("fromHeaders = %+v", got)
	}
	r, _ := http.NewRequest("GET", "/", nil)
	r.AddCookie(&http.Cookie{Name: "sid", Value: "abc"})
	if !got[0].Credential.PresentedBy(r, "abc") || got[0].Credential.PresentedBy(r, "new") {
		t.Fatal("presentedBy does not compare the request's cookie")
	}
}

func TestJudgeCredentials(t *testing.T) {
	t.Parallel()
	p := &policy{refused: RefusalSignal{MinStatus: 400}, creds: mustCredentials(t, "cookie:sid")}
	f := func(v string) []Found { return []Found{{Credential: p.creds.list[0], Value: v}} }
	holder := func(u string) func() (string, error) { return func() (string, error) { return u, nil } }
	tests := []struct {
		name   string
		status int
		found  []Found
		holder func() (string, error)
		action Action
		reason string
	}{
		{"signup logs an enrolled user in", 200, f("S-alice"), holder(""), Hold, ReasonEnrolled},
		{"the same user renews their session", 200, f("S-alice"), holder("alice"), Release, ReasonNoMFA},
		{"another user's session replaces the caller's", 200, f("S-alice"), holder("bob"), Hold, ReasonEnrolled},
		{"anonymous session", 200, f("anon"), holder(""), Release, ReasonNoSession},
		{"user without MFA", 302, f("S-bob"), holder(""), Release, ReasonNoMFA},
		{"a 4xx that still sets an enrolled user's session", 403, f("S-alice"), holder(""), Hold, ReasonEnrolled},
		{"refused by status, anonymous session", 403, f("anon"), holder(""), Release, ReasonAppRefused},
		{"identity endpoint down", 200, f("S-down"), holder(""), Refuse, ReasonUnavailable},
		{"holder lookup fails", 200, f("S-alice"), func() (string, error) { return "", errors.New("down") }, Refuse, ReasonUnavailable},
		{"two enrolled users in one answer", 200, append(f("S-alice"), f("S-carl")...), holder(""), Refuse, ReasonAmbiguousUser},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			enrolled := func(u string) (bool, error) { return u == "alice" || u == "carl", nil }
			v := p.JudgeCredentials(&answer{Status: tc.status, Header: http.Header{}}, tc.found, Lookups{Enrolled: enrolled, Whose: testWhose, Holder: tc.holder})
			if v.Action != tc.action || v.Reason != tc.reason {
				t.Fatalf("JudgeCredentials = %s/%s, want %s/%s", v.Action, v.Reason, tc.action, tc.reason)
			}
		})
	}
}
