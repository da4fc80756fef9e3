package identity

import (
	"net/http"
	"testing"
)

func TestParseCredential(t *testing.T) {
	t.Parallel()
	good := map[string]Credential{
		"cookie:connect.sid":                      {In: "cookie", Name: "connect.sid", As: "cookie", AsName: "connect.sid"},
		"header:X-Session":                        {In: "header", Name: "X-Session", As: "header", AsName: "X-Session"},
		"json:sessionToken":                       {In: "json", Name: "sessionToken", As: "bearer"},
		"pointer:/data/token as header:X-Auth":    {In: "pointer", Name: "/data/token", As: "header", AsName: "X-Auth"},
		"location:access_token as cookie:session": {In: "location", Name: "access_token", As: "cookie", AsName: "session"},
		" json:token as bearer ":                  {In: "json", Name: "token", As: "bearer"},
	}
	for spec, want := range good {
		if got, err := ParseCredential(spec); err != nil || got != want {
			t.Errorf("ParseCredential(%q) = %+v, %v; want %+v", spec, got, err, want)
		}
	}
	for _, bad := range []string{"", "cookie", "cookie:", "body:x", "pointer:token", "json:t as header", "json:t as query:x"} {
		if _, err := ParseCredential(bad); err == nil {
			t.Errorf("ParseCredential(%q) accepted", bad)
		}
	}
}

func TestCredentialPresent(t *testing.T) {
	t.Parallel()
	for spec, want := range map[string][2]string{
		"cookie:sid":                  {"Cookie", "sid=v"},
		"json:token":                  {"Authorization", "Bearer v"},
		"json:token as header:X-Auth": {"X-Auth", "v"},
	} {
		c, err := ParseCredential(spec)
		if err != nil {
			t.Fatal(err)
		}
		h := http.Header{}
		c.Present(h, "v")
		if h.Get(want[0]) != want[1] {
			t.Errorf("%s presented as %v, want %s: %s", spec, h, want[0], want[1])
		}
		r := &http.Request{Header: h}
		if !c.PresentedBy(r, "v") || c.PresentedBy(r, "w") {
			t.Errorf("%s: PresentedBy does not recognise the presented value", spec)
		}
		if c.String() == "" {
			t.Errorf("%s: no explanation", spec)
		}
	}
}
