package identity

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Credential is the app's session credential: where it appears in an
// answer, and how it is presented back to the app. Spelled in config as
// "<in>:<name>[ as <how>[:<name>]]", e.g. "cookie:connect.sid",
// "json:sessionToken as bearer", "header:X-Session as header:X-Session",
// "location:access_token", "pointer:/data/login/token as header:X-Auth".
type Credential struct {
	// In: cookie (a Set-Cookie name), header (an answer header), json (a
	// member name at any depth of a JSON answer), pointer (an RFC 6901
	// pointer into a JSON answer) or location (a query or fragment
	// parameter of Location).
	In, Name string
	// As: cookie, header or bearer (Authorization: Bearer), with AsName
	// the cookie or header name.
	As, AsName string
}

// ParseCredential reads one credential spec.
func ParseCredential(spec string) (Credential, error) {
	where, how, _ := strings.Cut(strings.TrimSpace(spec), " as ")
	in, name, ok := strings.Cut(strings.TrimSpace(where), ":")
	c := Credential{In: in, Name: strings.TrimSpace(name)}
	var errs []error
	switch {
	case !ok || c.Name == "":
		errs = append(errs, fmt.Errorf("%q: want <in>:<name>, e.g. cookie:sessionid", spec))
	case in == "pointer" && !strings.HasPrefix(c.Name, "/"):
		errs = append(errs, fmt.Errorf("%q: a pointer starts with /", spec))
	case in != "cookie" && in != "header" && in != "json" && in != "pointer" && in != "location":
		errs = append(errs, fmt.Errorf("%q: %q must be cookie, header, json, pointer or location", spec, in))
	}
	how = strings.TrimSpace(how)
	switch {
	case how == "" && in == "cookie", how == "" && in == "header":
		c.As, c.AsName = in, c.Name
	case how == "", how == "bearer":
		c.As = "bearer"
	default:
		as, asName, _ := strings.Cut(how, ":")
		c.As, c.AsName = as, strings.TrimSpace(asName)
		if (as != "cookie" && as != "header") || c.AsName == "" {
			errs = append(errs, fmt.Errorf("%q: present it as bearer, cookie:<name> or header:<name>", spec))
		}
	}
	return c, errors.Join(errs...)
}

// String explains the credential for check-config.
func (c Credential) String() string {
	where := map[string]string{
		"cookie": "a Set-Cookie named %s", "header": "an answer header %s", "json": "a JSON member %s at any depth",
		"pointer": "the JSON value at %s", "location": "a Location query or fragment parameter %s",
	}[c.In]
	how := "Authorization: Bearer"
	switch c.As {
	case "cookie":
		how = "cookie " + c.AsName
	case "header":
		how = "header " + c.AsName
	}
	return fmt.Sprintf(where, c.Name) + ", presented back as " + how
}

// Present adds the credential's value to h the way the app expects it.
func (c Credential) Present(h http.Header, value string) {
	switch c.As {
	case "cookie":
		h.Add("Cookie", (&http.Cookie{Name: c.AsName, Value: value}).String())
	case "header":
		h.Set(c.AsName, value)
	default:
		h.Set("Authorization", bearer(value))
	}
}

// bearer is value as an Authorization header: a value found in a header
// that already reads "Bearer …" is taken as is.
func bearer(value string) string {
	if len(value) > 7 && strings.EqualFold(value[:7], "Bearer ") {
		return value
	}
	return "Bearer " + value
}

// PresentedIn returns the value r presents as this credential (its cookie,
// its header, or an Authorization that reads "Bearer …"), and whether r
// presents one at all.
func (c Credential) PresentedIn(r *http.Request) (string, bool) {
	switch c.As {
	case "cookie":
		ck, err := r.Cookie(c.AsName)
		if err != nil {
			return "", false
		}
		return ck.Value, true
	case "header":
		vs := r.Header.Values(c.AsName)
		if len(vs) == 0 {
			return "", false
		}
		return vs[0], true
	}
	if token, ok := BearerToken(r.Header.Get("Authorization")); ok {
		return "Bearer " + token, true
	}
	return "", false
}

// BearerToken is the token of an Authorization value of the Bearer scheme,
// read as leniently as apps do: the scheme in any case, then any run of
// spaces and tabs (Rails splits on \s+, Django REST framework on
// whitespace), so a spelling the gate would not read cannot pass for no
// session while the app takes it for one.
func BearerToken(v string) (string, bool) {
	v = strings.TrimLeft(v, " \t")
	i := strings.IndexAny(v, " \t")
	if i < 0 || !strings.EqualFold(v[:i], "Bearer") {
		return "", false
	}
	token := strings.Trim(v[i:], " \t")
	return token, token != ""
}

// PresentedBy reports whether r already carries value as this credential:
// an answer that hands the client back what it sent (a rolling session
// cookie) grants nothing new.
func (c Credential) PresentedBy(r *http.Request, value string) bool {
	got, ok := c.PresentedIn(r)
	if c.As != "cookie" && c.As != "header" {
		value = bearer(value)
	}
	return ok && got == value
}
