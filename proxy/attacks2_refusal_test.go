package proxy

import (
	"net/http"
	"testing"
)

// The refusal pointer releases before any credential is looked at, while a
// refusing status checks the session credentials. An app that answers
// {"ok":false,...} (password expired, "complete your profile") while it
// sets the session of an enrolled user has that session released.
func TestAttack2RefusalPointerIgnoresCredentials(t *testing.T) {
	p := policy{refused: RefusalSignal{MinStatus: 400, Pointer: "/ok", Value: "false"},
		creds: mustCredentials(t, "cookie:sessionid")}
	a := answer{Status: 200, Header: http.Header{"Content-Type": {"application/json"}, "Set-Cookie": {"sessionid=S-alice; Path=/; HttpOnly"}},
		Body: []byte(`{"ok":false,"reason":"password_expired"}`)}
	v := p.Judge(loginRequest{}, &a, Lookups{Enrolled: testUsers, Whose: testWhose})
	if v.Action == Release {
		t.Errorf("refusal pointer: alice's session cookie released as %s (the same on a 403 is held)", v.Reason)
	}
	// the string "false" counts as the boolean false
	a.Body = []byte(`{"ok":"false"}`)
	if v := p.Judge(loginRequest{}, &a, Lookups{Enrolled: testUsers, Whose: testWhose}); v.Action == Release {
		t.Logf("note: a string \"false\" also matches the refusal value (%s)", v.Reason)
	}
}

// A refusing status checks only header credentials: a JSON credential in
// the body of a 4xx is released.
func TestAttack2RefusedStatusBodyCredential(t *testing.T) {
	p := policy{refused: RefusalSignal{MinStatus: 400}, creds: mustCredentials(t, "json:access_token as bearer")}
	a := answer{Status: 403, Header: http.Header{"Content-Type": {"application/json"}},
		Body: []byte(`{"error":"password_expired","access_token":"S-alice"}`)}
	v := p.Judge(loginRequest{}, &a, Lookups{Enrolled: testUsers, Whose: testWhose})
	if v.Action == Release {
		t.Errorf("403 with alice's token in the body released as %s", v.Reason)
	}
}

// Heuristic mode (no session.credentials): a 4xx that names alice and sets
// a session cookie is released as app_refused.
func TestAttack2RefusedStatusHeuristicMode(t *testing.T) {
	p := policy{userIDPointer: "/user/id", refused: RefusalSignal{MinStatus: 400}}
	a := answer{Status: 403, Header: http.Header{"Content-Type": {"application/json"}, "Set-Cookie": {"sessionid=S-alice; Path=/"}},
		Body: []byte(`{"user":{"id":"alice"},"error":"password_expired"}`)}
	v := p.Judge(loginRequest{}, &a, Lookups{Enrolled: testUsers})
	if v.Action == Release {
		t.Errorf("403 naming alice with a session cookie released as %s", v.Reason)
	}
}
