package gatecookie

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestSetAndClear(t *testing.T) {
	t.Parallel()
	h := http.Header{}
	Set(h, Device, "tok", 90*time.Minute+time.Millisecond)
	Clear(h, Device)
	want := []string{
		"__Host-totpgate-device=tok; Path=/; Max-Age=5401; HttpOnly; Secure; SameSite=Lax",
		"__Host-totpgate-device=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax",
	}
	if got := h.Values("Set-Cookie"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Set-Cookie = %q, want %q", got, want)
	}
	h = http.Header{}
	Set(h, Device, "tok", 0)
	if got := h.Get("Set-Cookie"); !strings.Contains(got, "Max-Age=1;") {
		t.Errorf("Set with no time left = %q, want Max-Age=1 (never a session cookie)", got)
	}
	orig := http.Header{"Set-Cookie": {"sid=1"}}
	added := Added(orig, Device, "tok", time.Hour)
	if len(orig.Values("Set-Cookie")) != 1 || len(added.Values("Set-Cookie")) != 2 {
		t.Errorf("Added changed its input (%q) or lost a cookie (%q)", orig.Values("Set-Cookie"), added.Values("Set-Cookie"))
	}
	if got := Added(nil, Device, "tok", time.Hour); len(got.Values("Set-Cookie")) != 1 {
		t.Errorf("Added(nil) = %q", got)
	}
}

func TestValue(t *testing.T) {
	t.Parallel()
	for cookie, want := range map[string]string{
		"":                                "",
		"a=1":                             "",
		"a=1; __Host-totpgate-device=tok": "tok",
		"__Host-totpgate-device=one; __Host-totpgate-device=two": "", // which one? none
		"__host-totpgate-device=tok":                             "", // names are case-sensitive
	} {
		r, _ := http.NewRequest("GET", "http://x/", nil)
		if cookie != "" {
			r.Header.Set("Cookie", cookie)
		}
		if got := Value(r, Device); got != want {
			t.Errorf("Value(%q) = %q, want %q", cookie, got, want)
		}
	}
}

func TestStrip(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   []string
		want []string
	}{
		{nil, nil},
		{[]string{"a=1;b=2"}, []string{"a=1;b=2"}}, // untouched byte for byte
		{[]string{"a=1; __Host-totpgate-device=t; b=2"}, []string{"a=1; b=2"}},
		{[]string{"__Host-totpgate-device=t", "c=3"}, []string{"c=3"}},
		{[]string{"__Host-totpgate-device=t;  __Host-totpgate-step-up=p"}, nil},
		{[]string{"x=__Host-totpgate-device"}, []string{"x=__Host-totpgate-device"}}, // a value, not a name
		{[]string{" __Host-totpgate-x=1 ;a=1"}, []string{"a=1"}},
	} {
		h := http.Header{}
		for _, v := range tc.in {
			h.Add("Cookie", v)
		}
		Strip(h)
		if got := h.Values("Cookie"); strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("Strip(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func BenchmarkStripWithoutGateCookies(b *testing.B) {
	h := http.Header{"Cookie": {"sessionid=abcdef0123456789; csrftoken=xyz; theme=dark"}}
	b.ReportAllocs()
	for b.Loop() {
		Strip(h)
	}
}
