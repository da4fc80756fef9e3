package proxy

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// maxJSONDepth bounds nesting; deeper answers are unreadable.
const maxJSONDepth = 256

var errBadJSON = errors.New("proxy: the answer is not valid JSON")

// scanJSON walks a JSON document in place, without building it in memory
// or allocating per token: a login answer may be large, and many are
// judged at once. It collects the values at the wanted pointers and the
// first credential-looking member, and refuses anything that is not
// exactly one valid JSON value (RFC 8259).
func scanJSON(body []byte, pointers []string, keys map[string]bool) (jsonFacts, error) {
	s := &jsonScanner{b: body, want: map[string]bool{}, keys: keys, facts: jsonFacts{At: map[string][]jsonValue{}, Keys: map[string][]string{}}}
	for _, p := range pointers {
		if p != "" {
			s.want[p] = true
			if len(p) >= len(s.wantLen) {
				s.wantLen = append(s.wantLen, make([]bool, len(p)+1-len(s.wantLen))...)
			}
			s.wantLen[len(p)] = true
		}
	}
	if err := s.value(0, nil); err != nil {
		return s.facts, err
	}
	s.ws()
	if s.i != len(s.b) {
		return s.facts, errBadJSON
	}
	return s.facts, nil
}

type jsonScanner struct {
	b    []byte
	i    int
	path []byte // the current JSON pointer
	want map[string]bool
	// wantLen[n]: some wanted pointer is n bytes long; most paths are
	// ruled out by length before any hashing.
	wantLen []bool
	// keys are member names whose string values are collected at any depth.
	keys  map[string]bool
	facts jsonFacts
}

func (s *jsonScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\r', '\n':
			s.i++
		default:
			return
		}
	}
}

// value scans one value; key is the raw (still escaped) member name that
// holds it, nil in an array or at the top.
func (s *jsonScanner) value(depth int, key []byte) error {
	if depth > maxJSONDepth {
		return errBadJSON
	}
	s.ws()
	if s.i >= len(s.b) {
		return errBadJSON
	}
	var v jsonValue
	start := s.i
	switch c := s.b[s.i]; {
	case c == '{':
		v.Kind = 'o'
		if err := s.object(depth); err != nil {
			return err
		}
	case c == '[':
		v.Kind = 'o'
		if err := s.array(depth); err != nil {
			return err
		}
	case c == '"':
		raw, err := s.str()
		if err != nil {
			return err
		}
		v.Kind = 's'
		if s.facts.CredentialKey == "" && bytes.ContainsAny(raw, "=<") {
			// A string that carries a credential of its own: a redirect
			// URL with #access_token=, a form_post page as HTML.
			if pairs := textPairs([]byte(unquote(raw)), nil); len(pairs) > 0 {
				s.facts.CredentialKey = pairs[0][0] + " (inside a string)"
			}
		}
		if kw := s.keyWanted(key); s.wanted() || kw != "" {
			v.Text = unquote(raw)
			if kw != "" && v.Text != "" {
				s.facts.Keys[kw] = append(s.facts.Keys[kw], v.Text)
			}
		} else if len(raw) > 0 {
			v.Text = "x" // only emptiness matters below
		}
	case c == 't' || c == 'f' || c == 'n':
		for _, lit := range []string{"true", "false", "null"} {
			if bytes.HasPrefix(s.b[s.i:], []byte(lit)) {
				s.i += len(lit)
				v.Kind, v.Text = 'b', lit
				if lit == "null" {
					v.Kind = 'z'
				}
				break
			}
		}
		if v.Kind == 0 {
			return errBadJSON
		}
	default:
		if err := s.number(); err != nil {
			return err
		}
		v.Kind = 'n'
		if s.wanted() {
			v.Text = string(s.b[start:s.i])
		}
	}
	if s.wanted() {
		s.facts.At[string(s.path)] = append(s.facts.At[string(s.path)], v)
	}
	if key != nil && s.facts.CredentialKey == "" && v.Kind != 'z' && v.Text != "false" && (v.Kind != 's' || v.Text != "") && s.keyWanted(key) == "" {
		if credentialKeyRaw(key) {
			s.facts.CredentialKey = unquote(key)
		}
	}
	return nil
}

// keyWanted returns the collected member name raw stands for, or "".
func (s *jsonScanner) keyWanted(raw []byte) string {
	if raw == nil || len(s.keys) == 0 {
		return ""
	}
	if bytes.IndexByte(raw, '\\') >= 0 {
		if k := unquote(raw); s.keys[k] {
			return k
		}
		return ""
	}
	if s.keys[string(raw)] {
		return string(raw)
	}
	return ""
}

func (s *jsonScanner) wanted() bool {
	return len(s.path) < len(s.wantLen) && s.wantLen[len(s.path)] && s.want[string(s.path)]
}

func (s *jsonScanner) object(depth int) error {
	s.i++ // {
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return nil
	}
	for {
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return errBadJSON
		}
		key, err := s.str()
		if err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return errBadJSON
		}
		s.i++
		mark := len(s.path)
		s.path = appendPointerToken(append(s.path, '/'), key)
		err = s.value(depth+1, key)
		s.path = s.path[:mark]
		if err != nil {
			return err
		}
		if done, err := s.after('}'); done || err != nil {
			return err
		}
	}
}

func (s *jsonScanner) array(depth int) error {
	s.i++ // [
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		return nil
	}
	for n := 0; ; n++ {
		mark := len(s.path)
		s.path = strconv.AppendInt(append(s.path, '/'), int64(n), 10)
		err := s.value(depth+1, nil)
		s.path = s.path[:mark]
		if err != nil {
			return err
		}
		if done, err := s.after(']'); done || err != nil {
			return err
		}
	}
}

// after reads what follows a member or element: a comma (more to come)
// or the closing delimiter (done).
func (s *jsonScanner) after(closing byte) (done bool, err error) {
	s.ws()
	switch {
	case s.i >= len(s.b):
		return false, errBadJSON
	case s.b[s.i] == ',':
		s.i++
		return false, nil
	case s.b[s.i] == closing:
		s.i++
		return true, nil
	}
	return false, errBadJSON
}

// str scans a string and returns its raw content between the quotes.
func (s *jsonScanner) str() ([]byte, error) {
	s.i++ // opening quote
	start := s.i
	for s.i < len(s.b) {
		switch c := s.b[s.i]; {
		case c == '"':
			raw := s.b[start:s.i]
			s.i++
			return raw, nil
		case c == '\\':
			if s.i+1 >= len(s.b) {
				return nil, errBadJSON
			}
			switch s.b[s.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i += 2
			case 'u':
				if s.i+6 > len(s.b) {
					return nil, errBadJSON
				}
				for _, h := range s.b[s.i+2 : s.i+6] {
					if !isHex(h) {
						return nil, errBadJSON
					}
				}
				s.i += 6
			default:
				return nil, errBadJSON
			}
		case c < 0x20:
			return nil, errBadJSON
		default:
			s.i++
		}
	}
	return nil, errBadJSON
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func (s *jsonScanner) number() error {
	digits := func() int {
		n := 0
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
			n++
		}
		return n
	}
	if s.i < len(s.b) && s.b[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i < len(s.b) && s.b[s.i] == '0':
		s.i++
	case digits() == 0:
		return errBadJSON
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if digits() == 0 {
			return errBadJSON
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if digits() == 0 {
			return errBadJSON
		}
	}
	return nil
}

// unquote decodes the raw content of a scanned (so well-formed) string the
// way encoding/json does: invalid UTF-8 and lone surrogates become U+FFFD.
func unquote(raw []byte) string {
	if bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		return string(raw)
	}
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			r, size := utf8.DecodeRune(raw[i:])
			out = utf8.AppendRune(out, r)
			i += size
			continue
		}
		switch raw[i+1] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r := hexRune(raw[i+2 : i+6])
			i += 6
			if utf16.IsSurrogate(r) {
				if i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
					if dec := utf16.DecodeRune(r, hexRune(raw[i+2:i+6])); dec != utf8.RuneError {
						out = utf8.AppendRune(out, dec)
						i += 6
						continue
					}
				}
				r = utf8.RuneError
			}
			out = utf8.AppendRune(out, r)
			continue
		default: // " \ /
			out = append(out, raw[i+1])
		}
		i += 2
	}
	return string(out)
}

func hexRune(h []byte) rune {
	n, _ := strconv.ParseUint(string(h), 16, 32)
	return rune(n)
}

// appendPointerToken appends a raw member name as an RFC 6901 token.
func appendPointerToken(dst, raw []byte) []byte {
	if bytes.IndexByte(raw, '\\') < 0 && bytes.IndexByte(raw, '~') < 0 && bytes.IndexByte(raw, '/') < 0 {
		return append(dst, raw...)
	}
	return append(dst, escapePointer(unquote(raw))...)
}

func escapePointer(k string) string {
	return strings.ReplaceAll(strings.ReplaceAll(k, "~", "~0"), "/", "~1")
}
