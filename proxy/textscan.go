package proxy

import (
	"bytes"
	"html"
	"mime"
	"regexp"
	"strings"
)

// An answer the gate cannot parse as JSON may still carry a session: a
// login page rendered as HTML around the JSON (Django REST framework's
// browsable API picks HTML from the client's Accept), an XML answer, a
// meta refresh or an OAuth form_post page with the token in a hidden
// input, a msgpack body. These scans find credential-looking members in
// such bodies, generously: they only matter for an answer that names no
// user, which is then attributed by its credential or refused.

var (
	// key: value and key=value, quoted or not (JSON, JS, query strings).
	textPair = regexp.MustCompile(`["']?([A-Za-z][A-Za-z0-9_.\-]{1,63})["']?\s*[:=]\s*["']?([A-Za-z0-9._~+/\-]{6,}=*)`)
	// <input name="id_token" value="..."> in either attribute order.
	inputNameValue = regexp.MustCompile(`(?i)name\s*=\s*["']([^"']{1,64})["'][^>]*?value\s*=\s*["']([^"']{6,})["']`)
	inputValueName = regexp.MustCompile(`(?i)value\s*=\s*["']([^"']{6,})["'][^>]*?name\s*=\s*["']([^"']{1,64})["']`)
	// <access_token>...</access_token>
	xmlElement = regexp.MustCompile(`<([A-Za-z][A-Za-z0-9_.\-]{1,63})>\s*([^<\s]{6,})\s*</`)
)

// textKind says how a body that is not JSON is read: "text" for markup and
// text (scanned for credential pairs), "binary" for everything else
// (searched for credential words), "" for an empty body.
func textKind(contentType string, body []byte) string {
	if len(bytes.TrimSpace(body)) == 0 {
		return ""
	}
	mt, _, _ := mime.ParseMediaType(contentType)
	switch {
	case strings.HasPrefix(mt, "text/"), mt == "application/xml", strings.HasSuffix(mt, "+xml"),
		mt == "application/javascript", mt == "application/x-www-form-urlencoded", mt == "":
		return "text"
	}
	return "binary"
}

// textPairs lists the name/value pairs of a text or markup body that look
// like credentials (or that are named in want), entities decoded.
func textPairs(body []byte, want map[string]Credential) (pairs [][2]string) {
	s := html.UnescapeString(string(body))
	add := func(name, value string) {
		if _, ok := want[name]; ok || credentialParam(name) && !harmlessTokenName(name) {
			pairs = append(pairs, [2]string{name, value})
		}
	}
	for _, m := range textPair.FindAllStringSubmatch(s, -1) {
		add(m[1], m[2])
	}
	for _, m := range inputNameValue.FindAllStringSubmatch(s, -1) {
		add(m[1], m[2])
	}
	for _, m := range inputValueName.FindAllStringSubmatch(s, -1) {
		add(m[2], m[1])
	}
	for _, m := range xmlElement.FindAllStringSubmatch(s, -1) {
		add(m[1], m[2])
	}
	return pairs
}

// harmlessTokenName: anti-forgery fields that every login form carries
// (Rails' authenticity_token, ASP.NET's __RequestVerificationToken, Django's
// csrfmiddlewaretoken): tokens, but no session.
func harmlessTokenName(name string) bool {
	n := squash(name)
	for _, w := range []string{"csrf", "xsrf", "authenticity", "verification", "antiforgery", "nonce", "state"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// binaryCredentialWord reports a body the gate cannot read that still
// names a credential (msgpack and CBOR keep member names as raw bytes).
func binaryCredentialWord(body []byte, want map[string]Credential) bool {
	lower := bytes.ToLower(body)
	for name := range want {
		if bytes.Contains(body, []byte(name)) {
			return true
		}
	}
	for _, w := range []string{"token", "session", "jwt", "bearer", "secret", "ticket"} {
		if bytes.Contains(lower, []byte(w)) {
			return true
		}
	}
	return false
}
