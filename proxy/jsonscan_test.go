package proxy

import (
	"encoding/json"
	"testing"
)

func TestScanJSON(t *testing.T) {
	t.Parallel()
	facts, err := scanJSON([]byte(` {"user":{"id":"al\u0069ce","n":-1.5e3},"a/b":{"~k":[1,{"x":"y"}]},"list":[true,false,null],"sessionToken":"t"} `),
		[]string{"/user/id", "/user/n", "/a~1b/~0k/1/x", "/list/2", "/missing"}, map[string]bool{"x": true, "sessionToken": true})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]jsonValue{"/user/id": {'s', "alice"}, "/user/n": {'n', "-1.5e3"}, "/a~1b/~0k/1/x": {'s', "y"}, "/list/2": {'z', "null"}}
	for p, w := range want {
		if got := facts.At[p]; len(got) != 1 || got[0] != w {
			t.Errorf("%s = %+v, want %+v", p, got, w)
		}
	}
	if len(facts.At["/missing"]) != 0 || facts.CredentialKey != "" || len(facts.Keys["x"]) != 1 || facts.Keys["sessionToken"][0] != "t" {
		t.Errorf("facts = %+v", facts)
	}
	for _, bad := range []string{``, `{`, `{"a":1,}`, `[1,]`, `{"a" 1}`, `01`, `1.`, `-`, `"\x"`, "\"a\x01\"", `tru`, `{"a":1}{}`, `[1 2]`, `{a:1}`, `"\u12"`} {
		if _, err := scanJSON([]byte(bad), nil, nil); err == nil {
			t.Errorf("scanJSON(%q) accepted invalid JSON", bad)
		}
	}
}

// The scanner accepts exactly what encoding/json accepts, and finds the
// same value at a pointer.
func FuzzScanJSON(f *testing.F) {
	for _, s := range []string{`{"user":{"id":"a"}}`, `[1,2,{"x":null}]`, `"\ud83d\ude00"`, `{"a":1e5,"b":-0.0}`, `{"id":"\ud800"}`, ` true `} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		facts, err := scanJSON([]byte(s), []string{"/id", "/user/id"}, map[string]bool{"id": true})
		if (err == nil) != json.Valid([]byte(s)) {
			t.Fatalf("scanJSON(%q) err = %v, json.Valid = %v", s, err, json.Valid([]byte(s)))
		}
		if err != nil {
			return
		}
		var doc map[string]any // exact keys: RFC 6901 is case-sensitive
		if json.Unmarshal([]byte(s), &doc) != nil {
			return // not an object
		}
		if str, ok := doc["id"].(string); ok {
			vs := facts.At["/id"]
			if len(vs) == 0 || vs[len(vs)-1].Text != str {
				t.Fatalf("scanJSON(%q) /id = %+v, encoding/json says %q", s, vs, str)
			}
		}
	})
}
