package proxy

import (
	"encoding/base64"
	"net/http"
	"testing"
)

// Refresh: the header form of the meta refresh (every browser follows it);
// only Location is searched for credential parameters.
func TestAttack2RefreshHeader(t *testing.T) {
	p := policy{userIDPointer: "/user/id", refused: RefusalSignal{MinStatus: 400}}
	a := answer{Status: 200, Header: http.Header{"Refresh": {"0; url=/app#access_token=S-alice-0123456789"}}}
	if v := p.Judge(loginRequest{}, &a, Lookups{Enrolled: testUsers, Whose: testWhose}); v.Action == Release {
		t.Errorf("Refresh header with alice's token released as %s", v.Reason)
	}
	withCreds := policy{refused: RefusalSignal{MinStatus: 400}, creds: mustCredentials(t, "location:access_token as bearer")}
	if f := withCreds.creds.fromHeaders(a.Header); len(f) == 0 {
		t.Errorf("location:access_token is not looked for in Refresh (any route streams it through)")
	}
}

// base64 of the JSON state in a data attribute (or atob(...) in a script).
func TestAttack2Base64State(t *testing.T) {
	p := policy{userIDPointer: "/user/id", refused: RefusalSignal{MinStatus: 400}}
	state := base64.StdEncoding.EncodeToString([]byte(`{"access_token":"S-alice-0123456789"}`))
	for _, body := range []string{
		`<div id="app" data-page="` + state + `"></div>`,
		`<script>const s = JSON.parse(atob("` + state + `"))</script>`,
	} {
		a := answer{Status: 200, Header: http.Header{"Content-Type": {"text/html"}}, Body: []byte(body)}
		if v := p.Judge(loginRequest{}, &a, Lookups{Enrolled: testUsers, Whose: testWhose}); v.Action == Release {
			t.Errorf("%.40s…: released as %s", body, v.Reason)
		}
	}
}
