package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/totpgate/totpgate/gen"
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

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// loginRequest is what the gate read from a login request: the second-factor
// code (taken out before the app sees the request) and, when configured, the
// user id request field, each read from exactly one source.
type loginRequest struct {
	Code string
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
	codeHeader string
	codeField  string // folded
	userField  string // folded; empty: not configured
	maxBytes   int64
	normalize  []string
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
	var codes, users []string
	if vs := r.Header.Values(rr.codeHeader); len(vs) > 0 {
		codes = append(codes, vs...)
		r.Header.Del(rr.codeHeader)
	}
	rawQuery, qCodes, qUsers, err := rr.takeFields(r.URL.RawQuery)
	if err != nil {
		return out, badRequest("The login request's query string could not be read.")
	}
	codes, users = append(codes, qCodes...), append(users, qUsers...)
	r.URL.RawQuery = rawQuery

	body, err := rr.readBody(r)
	if err != nil {
		return out, err
	}
	if len(body) > 0 {
		newBody, bCodes, bUsers, err := rr.takeBodyFields(r.Header.Get("Content-Type"), body)
		if err != nil {
			return out, err
		}
		codes, users = append(codes, bCodes...), append(users, bUsers...)
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

	switch len(codes) {
	case 0:
	case 1:
		out.Code = strings.TrimSpace(codes[0])
	default:
		return out, badRequest("The second-factor code was given more than once.")
	}
	switch len(users) {
	case 0:
	case 1:
		u, err := rr.normalizeUser(users[0])
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
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	defer r.Body.Close()
	b, err := io.ReadAll(io.LimitReader(r.Body, rr.maxBytes+1))
	if err != nil {
		return nil, badRequest("The login request body could not be read.")
	}
	if int64(len(b)) > rr.maxBytes {
		return nil, &requestError{Status: http.StatusRequestEntityTooLarge, Code: gen.ProblemCodeBadRequest,
			Detail: fmt.Sprintf("The login request body is larger than %d bytes.", rr.maxBytes)}
	}
	if bytes.HasPrefix(b, []byte("\xef\xbb\xbf")) || bytes.HasPrefix(b, []byte("\xfe\xff")) || bytes.HasPrefix(b, []byte("\xff\xfe")) {
		return nil, badRequest("The login request body starts with a byte-order mark.")
	}
	return b, nil
}

// takeFields removes the code field from a urlencoded list (a query or a
// form body), keeping every other pair exactly as sent, and returns the
// values of the code and user fields. A list Go cannot decode (bad escapes,
// ';' separators) is refused: the app might read it otherwise.
func (rr *requestReader) takeFields(raw string) (kept string, codes, users []string, err error) {
	if raw == "" {
		return "", nil, nil, nil
	}
	if _, err := url.ParseQuery(raw); err != nil {
		return "", nil, nil, err
	}
	pairs := strings.Split(raw, "&")
	keep := pairs[:0]
	for _, pair := range pairs {
		k, v, _ := strings.Cut(pair, "=")
		key, _ := url.QueryUnescape(k)
		val, _ := url.QueryUnescape(v)
		switch foldField(key) {
		case rr.codeField:
			codes = append(codes, val)
			continue
		case rr.userField:
			if rr.userField != "" {
				users = append(users, val)
			}
		}
		keep = append(keep, pair)
	}
	return strings.Join(keep, "&"), codes, users, nil
}

// takeBodyFields reads the code and user fields from the body by its real
// content type, and returns the body without the code.
func (rr *requestReader) takeBodyFields(contentType string, body []byte) ([]byte, []string, []string, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if contentType == "" {
		mt, params, err = "", nil, nil
	}
	if err != nil {
		return nil, nil, nil, &requestError{Status: http.StatusUnsupportedMediaType, Code: gen.ProblemCodeUnsupportedMediaType, Detail: "The login request's Content-Type could not be read."}
	}
	if cs := strings.ToLower(params["charset"]); cs != "" && cs != "utf-8" && cs != "utf8" && cs != "us-ascii" {
		return nil, nil, nil, &requestError{Status: http.StatusUnsupportedMediaType, Code: gen.ProblemCodeUnsupportedMediaType, Detail: "Login requests must be UTF-8."}
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	switch {
	case mt == "application/json" || strings.HasSuffix(mt, "+json"),
		// Browser SDKs send JSON as text/plain to skip the CORS preflight,
		// and frameworks configured for it parse it as JSON.
		(mt == "text/plain" || mt == "") && len(trimmed) > 0 && trimmed[0] == '{':
		return rr.takeJSONFields(body)
	case mt == "application/x-www-form-urlencoded":
		kept, codes, users, err := rr.takeFields(string(body))
		if err != nil {
			return nil, nil, nil, badRequest("The login form could not be read.")
		}
		return []byte(kept), codes, users, nil
	case mt == "multipart/form-data":
		return rr.takeMultipartFields(body, params["boundary"])
	}
	if rr.userField != "" {
		// The gate would judge a user it could not read.
		return nil, nil, nil, &requestError{Status: http.StatusUnsupportedMediaType, Code: gen.ProblemCodeUnsupportedMediaType,
			Detail: "Login requests must be JSON, a URL-encoded form or multipart/form-data."}
	}
	return body, nil, nil, nil
}

// takeJSONFields walks the top-level object member by member (values kept
// as raw bytes, no document tree), so a repeated key is seen rather than
// silently resolved the way one parser or another would.
func (rr *requestReader) takeJSONFields(body []byte) ([]byte, []string, []string, error) {
	bad := badRequest("The login request's JSON body could not be read.")
	if !utf8.Valid(body) {
		return nil, nil, nil, bad
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		if rr.userField != "" {
			return nil, nil, nil, bad
		}
		return body, nil, nil, nil // not an object: the code cannot be in it
	}
	var codes, users []string
	var kept bytes.Buffer
	kept.WriteByte('{')
	members := 0
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, nil, nil, bad
		}
		key, _ := t.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, nil, bad
		}
		switch foldField(key) {
		case rr.codeField:
			s, ok := jsonScalar(raw)
			if !ok {
				return nil, nil, nil, badRequest("The second-factor code must be a string.")
			}
			codes = append(codes, s)
			continue
		case rr.userField:
			if rr.userField != "" {
				s, ok := jsonScalar(raw)
				if !ok {
					return nil, nil, nil, badRequest("The login name must be a string.")
				}
				users = append(users, s)
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
		return nil, nil, nil, bad
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, nil, bad // trailing data: another parser might read it
	}
	kept.WriteByte('}')
	if len(codes) == 0 {
		return body, codes, users, nil // untouched, byte for byte
	}
	return kept.Bytes(), codes, users, nil
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
// code part.
func (rr *requestReader) takeMultipartFields(body []byte, boundary string) ([]byte, []string, []string, error) {
	bad := badRequest("The login request's multipart body could not be read.")
	if boundary == "" {
		return nil, nil, nil, bad
	}
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	var out bytes.Buffer
	mw := multipart.NewWriter(&out)
	if err := mw.SetBoundary(boundary); err != nil {
		return nil, nil, nil, bad
	}
	var codes, users []string
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, nil, bad
		}
		if p.Header.Get("Content-Transfer-Encoding") != "" {
			return nil, nil, nil, &requestError{Status: http.StatusUnsupportedMediaType, Code: gen.ProblemCodeUnsupportedMediaType, Detail: "Encoded parts are not accepted on login routes."}
		}
		val, err := io.ReadAll(p)
		if err != nil {
			return nil, nil, nil, bad
		}
		if p.FormName() == "" {
			// A part Go cannot name (odd Content-Disposition) may be a
			// field to the app's parser.
			return nil, nil, nil, bad
		}
		name := foldField(p.FormName())
		isField := name != "" && (name == rr.codeField || (rr.userField != "" && name == rr.userField))
		if isField && p.FileName() != "" {
			return nil, nil, nil, bad
		}
		switch {
		case name == rr.codeField:
			codes = append(codes, string(val))
			continue
		case rr.userField != "" && name == rr.userField:
			users = append(users, string(val))
		}
		w, err := mw.CreatePart(textproto.MIMEHeader(p.Header))
		if err != nil {
			return nil, nil, nil, bad
		}
		_, _ = w.Write(val)
	}
	if err := mw.Close(); err != nil {
		return nil, nil, nil, bad
	}
	if len(codes) == 0 {
		return body, codes, users, nil
	}
	return out.Bytes(), codes, users, nil
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
