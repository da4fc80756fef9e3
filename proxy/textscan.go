package proxy

import (
	"bytes"
	"encoding/base64"
	"html"
	"mime"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
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
	textPair = regexp.MustCompile(`["']?([A-Za-z][A-Za-z0-9_.\-]{1,63})["']?\s*[:=]\s*["']?([A-Za-z0-9._~+/%\-]{4,}=*)`)
	// <input name="id_token" value="..."> in either attribute order, quoted
	// or not (HTML5 allows unquoted attributes).
	inputNameValue = regexp.MustCompile(`(?i)name\s*=\s*["']?([^"'\s>]{1,64})["']?[^>]*?value\s*=\s*["']?([^"'\s>]{4,})`)
	inputValueName = regexp.MustCompile(`(?i)value\s*=\s*["']?([^"'\s>]{4,})["']?[^>]*?name\s*=\s*["']?([^"'\s>]{1,64})`)
	// <access_token type="bearer">...</access_token>, CDATA too.
	xmlElement = regexp.MustCompile(`<([A-Za-z][A-Za-z0-9_.\-]{1,63})(?:\s[^>]*)?>\s*(?:<!\[CDATA\[)?\s*([^<\s\]]{4,})`)
	// base64 runs long enough to hide a JSON state (data-page="...", atob).
	base64Run = regexp.MustCompile(`[A-Za-z0-9+/_\-]{24,}={0,2}`)
	// \uXXXX escapes of JSON and JavaScript strings.
	unicodeEscape = regexp.MustCompile(`\\u([0-9a-fA-F]{4})`)
)

// readableText is body as text with the layers a credential hides under
// peeled off: HTML entities, JSON and JavaScript escapes (\/ and \uXXXX),
// percent-encoding, and one level of base64. ok is false for a body that
// is not UTF-8 text (UTF-16, NUL bytes): the gate cannot read it.
func readableText(body []byte) (string, bool) {
	if !plainText(body) {
		return "", false
	}
	s := html.UnescapeString(string(body))
	s = strings.ReplaceAll(s, `\/`, "/")
	s = unicodeEscape.ReplaceAllStringFunc(s, func(m string) string {
		n, err := strconv.ParseUint(m[2:], 16, 32)
		if err != nil {
			return m
		}
		return string(rune(n))
	})
	layers := []string{s}
	if d, err := url.QueryUnescape(strings.ReplaceAll(s, "+", "%2B")); err == nil && d != s {
		layers = append(layers, d)
	}
	for _, run := range base64Run.FindAllString(s, 32) {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
			if d, err := enc.DecodeString(run); err == nil && utf8.Valid(d) {
				layers = append(layers, html.UnescapeString(string(d)))
				break
			}
		}
	}
	return strings.Join(layers, "\n"), true
}

// plainText reports UTF-8 without NUL bytes or a UTF-16 byte-order mark:
// text the scans can read.
func plainText(b []byte) bool {
	return utf8.Valid(b) && bytes.IndexByte(b, 0) < 0 && !bytes.HasPrefix(b, []byte("\xff\xfe")) && !bytes.HasPrefix(b, []byte("\xfe\xff"))
}

// textKind says how a body that is not JSON is read: "text" for markup and
// text in UTF-8 (scanned for credential pairs), "binary" for everything
// else, whatever the Content-Type claims, "" for an empty body.
func textKind(contentType string, body []byte) string {
	if len(bytes.TrimSpace(body)) == 0 {
		return ""
	}
	mt, params, _ := mime.ParseMediaType(contentType)
	if cs := strings.ToLower(params["charset"]); cs != "" && cs != "utf-8" && cs != "utf8" && cs != "us-ascii" {
		return "binary"
	}
	if !plainText(body) {
		return "binary"
	}
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
	s, _ := readableText(body)
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
