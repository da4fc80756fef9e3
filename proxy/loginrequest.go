package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/totpgate/totpgate/gen"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// loginRequest is what the gate read from a login request: the second-factor
// code and whether to trust the device (both taken out before the app sees
// the request) and, when configured, the user id request field, each read
// from exactly one source.
type loginRequest struct {
	Code string
	// Remember: trust this device once the code passed.
	Remember bool
	// User is the normalized user id request field; UserSet says it was
	// present (and unambiguous).
	User    string
	UserSet bool
}

// requestError is a login request the gate refuses to judge; it changes
// nothing and reaches no app.
type requestError struct {
	Status int
	Code   gen.ProblemCode
	Detail string
}

func (e *requestError) Error() string { return e.Detail }

func badRequest(detail string) *requestError {
	return &requestError{Status: http.StatusBadRequest, Code: gen.ProblemCodeBadRequest, Detail: detail}
}

// requestReader reads login requests. Fields are compared on a folded form
// (NFKC, case folded): apps bind fields case-insensitively (Go's
// encoding/json, ASP.NET), so two spellings of one field are a repeat.
type requestReader struct {
	codeHeader     string
	codeField      string // folded
	rememberHeader string // empty: not configured
	rememberField  string // folded; empty: not configured
	userField      string // folded; empty: not configured
	maxBytes       int64
	normalize      []string
}

// fields are the values of the gate's fields found in one request, in
// every place they were found.
type fields struct{ codes, remembers, users []string }

func (f *fields) add(o fields) {
	f.codes = append(f.codes, o.codes...)
	f.remembers = append(f.remembers, o.remembers...)
	f.users = append(f.users, o.users...)
}

// collect files the value of the field named name (folded), and reports
// whether the field is taken out of the request (the code and the remember
// flag are the gate's; the user field stays for the app).
func (rr *requestReader) collect(f *fields, name, val string) (taken bool) {
	switch {
	case name == rr.codeField:
		f.codes = append(f.codes, val)
		return true
	case rr.rememberField != "" && name == rr.rememberField:
		f.remembers = append(f.remembers, val)
		return true
	case rr.userField != "" && name == rr.userField:
		f.users = append(f.users, val)
	}
	return false
}

// ours reports whether name (folded) is a field the gate reads.
func (rr *requestReader) ours(name string) bool {
	return name == rr.codeField || (rr.rememberField != "" && name == rr.rememberField) || (rr.userField != "" && name == rr.userField)
}

// normalizeOps are the names login.user_id_normalize accepts.
var normalizeOps = map[string]bool{"trim": true, "nfkc": true, "casefold": true}

// foldField is the form field names are compared on: NFKC, case folded and
// trimmed (Django strips multipart field names).
func foldField(s string) string { return strings.TrimSpace(cases.Fold().String(norm.NFKC.String(s))) }

// read takes the code out of r (header, query, body) and reads the user id
// field. r's body and query are rewritten in place when the code was there.
func (rr *requestReader) read(r *http.Request) (loginRequest, error) {
	var out loginRequest
	for _, h := range []string{"Content-Type", "Content-Encoding"} {
		// Servers disagree on which of two headers counts (gunicorn takes
		// the last): the gate would read a body the app reads otherwise.
		if len(r.Header.Values(h)) > 1 {
			return out, badRequest("The login request has more than one " + h + " header.")
		}
	}
	if ce := strings.TrimSpace(r.Header.Get("Content-Encoding")); ce != "" && !strings.EqualFold(ce, "identity") {
		return out, &requestError{Status: http.StatusUnsupportedMediaType, Code: gen.ProblemCodeUnsupportedMediaType,
			Detail: "Encoded request bodies are not accepted on login routes."}
	}
	var f fields
	for _, h := range []struct {
		name string
		to   *[]string
	}{{rr.codeHeader, &f.codes}, {rr.rememberHeader, &f.remembers}} {
		if vs := r.Header.Values(h.name); h.name != "" && len(vs) > 0 {
			*h.to = append(*h.to, vs...)
			r.Header.Del(h.name)
		}
	}
	rawQuery, q, err := rr.takeFields(r.URL.RawQuery)
	if err != nil {
		return out, badRequest("The login request's query string could not be read.")
	}
	f.add(q)
	r.URL.RawQuery = rawQuery

	body, err := rr.readBody(r)
	if err != nil {
		return out, err
	}
	if len(body) > 0 {
		newBody, b, err := rr.takeBodyFields(r.Header.Get("Content-Type"), body)
		if err != nil {
			return out, err
		}
		f.add(b)
		body = newBody
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.TransferEncoding = nil // a known length: some app servers (Django's) ignore chunked bodies
	r.Header.Del("Transfer-Encoding")
	if len(body) == 0 {
		r.Body = http.NoBody
	}
	r.Header.Set("Content-Length", strconv.Itoa(len(body)))
	if len(body) == 0 && (r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions) {
		r.Header.Del("Content-Length")
	}

	switch len(f.codes) {
	case 0:
	case 1:
		out.Code = strings.TrimSpace(f.codes[0])
	default:
		return out, badRequest("The second-factor code was given more than once.")
	}
	switch len(f.remembers) {
	case 0:
	case 1:
		remember, ok := parseFlag(f.remembers[0])
		if !ok {
			return out, badRequest("The request to remember the device must be true or false.")
		}
		out.Remember = remember
	default:
		return out, badRequest("The request to remember the device was given more than once.")
	}
	switch len(f.users) {
	case 0:
	case 1:
		u, err := rr.normalizeUser(f.users[0])
		if err != nil {
			return out, err
		}
		out.User, out.UserSet = u, true
	default:
		return out, badRequest("The login name was given more than once.")
	}
	return out, nil
}

// readBody reads the whole body, bounded by the gate's own limit (separate
// from the answer limit: the request is the attacker's).
func (rr *requestReader) readBody(r *http.Request) ([]byte, error) {
	if r.Body != nil {
		defer r.Body.Close()
	}
	b, err := readBody(r, rr.maxBytes)
	if errors.Is(err, errRequestTooLarge) {
		return nil, &requestError{Status: http.StatusRequestEntityTooLarge, Code: gen.ProblemCodeBadRequest,
			Detail: fmt.Sprintf("The login request body is larger than %d bytes.", rr.maxBytes)}
	}
	if err != nil {
		return nil, badRequest("The login request body could not be read.")
	}
	if bytes.HasPrefix(b, []byte("\xef\xbb\xbf")) || bytes.HasPrefix(b, []byte("\xfe\xff")) || bytes.HasPrefix(b, []byte("\xff\xfe")) {
		return nil, badRequest("The login request body starts with a byte-order mark.")
	}
	return b, nil
}

// parseFlag reads the remember flag: true or 1, false or 0 (any case,
// surrounding spaces ignored); anything else is no answer.
func parseFlag(v string) (value, ok bool) {
	switch v = strings.TrimSpace(v); {
	case strings.EqualFold(v, "true") || v == "1":
		return true, true
	case strings.EqualFold(v, "false") || v == "0":
		return false, true
	}
	return false, false
}

// takeFields removes the gate's fields (code, remember) from a urlencoded
// list (a query or a form body), keeping every other pair exactly as sent,
// and returns the values of the fields it reads. A list Go cannot decode
// (bad escapes, ';' separators) is refused: the app might read it
// otherwise.
func (rr *requestReader) takeFields(raw string) (kept string, f fields, err error) {
	if raw == "" {
		return "", f, nil
	}
	if _, err := url.ParseQuery(raw); err != nil {
		return "", f, err
	}
	pairs := strings.Split(raw, "&")
	keep := pairs[:0]
	for _, pair := range pairs {
		k, v, _ := strings.Cut(pair, "=")
		key, _ := url.QueryUnescape(k)
		val, _ := url.QueryUnescape(v)
		if rr.collect(&f, foldField(key), val) {
			continue
		}
		keep = append(keep, pair)
	}
	return strings.Join(keep, "&"), f, nil
}

// takeBodyFields reads the gate's fields from the body by its real content
// type, and returns the body without the fields it takes out.
func (rr *requestReader) takeBodyFields(contentType string, body []byte) ([]byte, fields, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if contentType == "" {
		mt, params, err = "", nil, nil
	}
	if err != nil {
		return nil, fields{}, &requestError{Status: http.StatusUnsupportedMediaType, Code: gen.ProblemCodeUnsupportedMediaType, Detail: "The login request's Content-Type could not be read."}
	}
	if cs := strings.ToLower(params["charset"]); cs != "" && cs != "utf-8" && cs != "utf8" && cs != "us-ascii" {
		return nil, fields{}, &requestError{Status: http.StatusUnsupportedMediaType, Code: gen.ProblemCodeUnsupportedMediaType, Detail: "Login requests must be UTF-8."}
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	switch {
	case mt == "application/json" || strings.HasSuffix(mt, "+json"),
		// Browser SDKs send JSON as text/plain to skip the CORS preflight,
		// and frameworks configured for it parse it as JSON.
		(mt == "text/plain" || mt == "") && len(trimmed) > 0 && trimmed[0] == '{':
		return rr.takeJSONFields(body)
	case mt == "application/x-www-form-urlencoded":
		kept, f, err := rr.takeFields(string(body))
		if err != nil {
			return nil, fields{}, badRequest("The login form could not be read.")
		}
		return []byte(kept), f, nil
	case mt == "multipart/form-data":
		return rr.takeMultipartFields(body, params["boundary"])
	}
	if rr.userField != "" {
		// The gate would judge a user it could not read.
		return nil, fields{}, &requestError{Status: http.StatusUnsupportedMediaType, Code: gen.ProblemCodeUnsupportedMediaType,
			Detail: "Login requests must be JSON, a URL-encoded form or multipart/form-data."}
	}
	return body, fields{}, nil
}

// takeJSONFields walks the top-level object member by member (values kept
// as raw bytes, no document tree), so a repeated key is seen rather than
// silently resolved the way one parser or another would.
func (rr *requestReader) takeJSONFields(body []byte) ([]byte, fields, error) {
	bad := badRequest("The login request's JSON body could not be read.")
	if !utf8.Valid(body) {
		return nil, fields{}, bad
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		if rr.userField != "" {
			return nil, fields{}, bad
		}
		return body, fields{}, nil // not an object: the gate's fields cannot be in it
	}
	var f fields
	var kept bytes.Buffer
	kept.WriteByte('{')
	members, taken := 0, false
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, fields{}, bad
		}
		key, _ := t.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fields{}, bad
		}
		if name := foldField(key); rr.ours(name) {
			s, ok := jsonScalar(raw)
			if !ok && name == rr.rememberField {
				s, ok = jsonBool(raw)
			}
			if !ok {
				return nil, fields{}, badRequest(rr.mustBe(name))
			}
			if rr.collect(&f, name, s) {
				taken = true
				continue
			}
		}
		if members > 0 {
			kept.WriteByte(',')
		}
		members++
		k, _ := json.Marshal(key)
		kept.Write(k)
		kept.WriteByte(':')
		kept.Write(raw)
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return nil, fields{}, bad
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fields{}, bad // trailing data: another parser might read it
	}
	kept.WriteByte('}')
	if !taken {
		return body, f, nil // untouched, byte for byte
	}
	return kept.Bytes(), f, nil
}

// mustBe says what the JSON value of the gate's field name must be.
func (rr *requestReader) mustBe(name string) string {
	switch name {
	case rr.codeField:
		return "The second-factor code must be a string."
	case rr.rememberField:
		return "The request to remember the device must be true or false."
	}
	return "The login name must be a string."
}

// jsonBool reads a JSON true or false as text.
func jsonBool(raw json.RawMessage) (string, bool) {
	var b bool
	if json.Unmarshal(raw, &b) != nil {
		return "", false
	}
	return strconv.FormatBool(b), true
}

// jsonScalar reads a JSON string or number as text.
func jsonScalar(raw json.RawMessage) (string, bool) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, true
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String(), true
	}
	return "", false
}

// takeMultipartFields reads form-data parts as sent (NextRawPart: no
// transfer decoding the app might not do) and rewrites the body without the
// parts it takes out.
func (rr *requestReader) takeMultipartFields(body []byte, boundary string) ([]byte, fields, error) {
	bad := badRequest("The login request's multipart body could not be read.")
	if boundary == "" {
		return nil, fields{}, bad
	}
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	var out bytes.Buffer
	mw := multipart.NewWriter(&out)
	if err := mw.SetBoundary(boundary); err != nil {
		return nil, fields{}, bad
	}
	var f fields
	taken := false
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fields{}, bad
		}
		if p.Header.Get("Content-Transfer-Encoding") != "" {
			return nil, fields{}, &requestError{Status: http.StatusUnsupportedMediaType, Code: gen.ProblemCodeUnsupportedMediaType, Detail: "Encoded parts are not accepted on login routes."}
		}
		val, err := io.ReadAll(p)
		if err != nil {
			return nil, fields{}, bad
		}
		if p.FormName() == "" {
			// A part Go cannot name (odd Content-Disposition) may be a
			// field to the app's parser.
			return nil, fields{}, bad
		}
		name := foldField(p.FormName())
		if name != "" && rr.ours(name) && p.FileName() != "" {
			return nil, fields{}, bad
		}
		if name != "" && rr.collect(&f, name, string(val)) {
			taken = true
			continue
		}
		w, err := mw.CreatePart(textproto.MIMEHeader(p.Header))
		if err != nil {
			return nil, fields{}, bad
		}
		_, _ = w.Write(val)
	}
	if err := mw.Close(); err != nil {
		return nil, fields{}, bad
	}
	if !taken {
		return body, f, nil
	}
	return out.Bytes(), f, nil
}

// normalizeUser refuses what no login name should hold and applies the
// configured normalization, in order.
func (rr *requestReader) normalizeUser(s string) (string, error) {
	if !utf8.ValidString(s) {
		return "", badRequest("The login name is not valid UTF-8.")
	}
	for _, c := range s {
		if unicode.IsControl(c) || c == '\ufeff' || unicode.Is(unicode.Cf, c) {
			return "", badRequest("The login name holds control or format characters.")
		}
	}
	for _, op := range rr.normalize {
		switch op {
		case "trim":
			s = strings.TrimSpace(s)
		case "nfkc":
			s = norm.NFKC.String(s)
		case "casefold":
			s = cases.Fold().String(s)
		}
	}
	return s, nil
}
