package proxy

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/totpgate/totpgate/identity"
)

// Credential is the app's session credential (identity.Credential).
type Credential = identity.Credential

// Found is one credential value in one answer. Its value is never logged.
type Found struct {
	Credential Credential
	Value      string
}

// marker names the credential for a log line, never its value.
func (f Found) marker() string { return f.Credential.In + " " + f.Credential.Name }

// credentials is the compiled set of configured credentials.
type credentials struct {
	list     []Credential
	cookies  map[string]Credential
	headers  []Credential
	location map[string]Credential
	jsonKeys map[string]Credential
	pointers map[string]Credential
}

func newCredentials(list []Credential) *credentials {
	cs := &credentials{list: list, cookies: map[string]Credential{}, location: map[string]Credential{}, jsonKeys: map[string]Credential{}, pointers: map[string]Credential{}}
	for _, c := range list {
		switch c.In {
		case "cookie":
			cs.cookies[c.Name] = c
		case "header":
			cs.headers = append(cs.headers, c)
		case "location":
			cs.location[c.Name] = c
		case "json":
			cs.jsonKeys[c.Name] = c
		case "pointer":
			cs.pointers[c.Name] = c
		}
	}
	return cs
}

func (cs *credentials) hasHeader(name string) bool {
	for _, c := range cs.headers {
		if http.CanonicalHeaderKey(c.Name) == http.CanonicalHeaderKey(name) {
			return true
		}
	}
	return false
}

func (cs *credentials) empty() bool { return cs == nil || len(cs.list) == 0 }

// inBody reports whether JSON bodies must be read to find a credential.
func (cs *credentials) inBody() bool { return len(cs.jsonKeys)+len(cs.pointers) > 0 }

// fromHeaders finds the credentials an answer's headers carry: cheap, no
// body needed. Cookies being deleted carry nothing.
func (cs *credentials) fromHeaders(h http.Header) []Found {
	var out []Found
	if len(cs.cookies) > 0 {
		for _, line := range h.Values("Set-Cookie") {
			name, _, _ := strings.Cut(line, "=")
			c, ok := cs.cookies[strings.TrimSpace(name)]
			if !ok {
				continue
			}
			ck, err := http.ParseSetCookie(line)
			switch {
			case err != nil:
				// Go refuses what browsers may store (a quote or non-ASCII
				// in the value): judge the raw value rather than skip it.
				_, rest, _ := strings.Cut(line, "=")
				value, _, _ := strings.Cut(rest, ";")
				out = append(out, Found{c, strings.TrimSpace(value)})
			case !deletes(ck):
				out = append(out, Found{c, ck.Value})
			}
		}
	}
	for _, c := range cs.headers {
		for _, v := range h.Values(c.Name) {
			if v != "" {
				out = append(out, Found{c, v}) // as the app sent it ("Bearer …" included)
			}
		}
	}
	for _, loc := range redirectTargets(h) {
		if len(cs.location) == 0 {
			break
		}
		if u, err := url.Parse(loc); err == nil {
			for _, part := range []string{u.RawQuery, u.Fragment, afterQuestion(u.Fragment)} {
				vals, _ := url.ParseQuery(part)
				for name, c := range cs.location {
					for _, v := range vals[name] {
						if v != "" {
							out = append(out, Found{c, v})
						}
					}
				}
			}
		}
	}
	return out
}

// afterQuestion is the query of a hash route (#/app?token=…).
func afterQuestion(s string) string {
	_, q, _ := strings.Cut(s, "?")
	return q
}

// scanTargets are the pointers and keys a JSON scan must collect.
func (cs *credentials) scanTargets() (pointers []string, keys map[string]bool) {
	keys = map[string]bool{}
	for p := range cs.pointers {
		pointers = append(pointers, p)
	}
	for k := range cs.jsonKeys {
		keys[k] = true
	}
	return pointers, keys
}

// fromJSON finds the credentials in scanned JSON facts.
func (cs *credentials) fromJSON(facts jsonFacts) []Found {
	var out []Found
	for p, c := range cs.pointers {
		for _, v := range facts.At[p] {
			if v.Kind == 's' && v.Text != "" {
				out = append(out, Found{c, v.Text})
			}
		}
	}
	for k, c := range cs.jsonKeys {
		for _, v := range facts.Keys[k] {
			out = append(out, Found{c, v})
		}
	}
	return out
}
