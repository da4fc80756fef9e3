package proxy

import (
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Action is what the gate does with the app's answer. The zero value
// refuses: deny by default, in the type too.
type Action int

const (
	// Refuse: the answer is not released and no challenge is issued
	// (503 mfa_unavailable): the gate could not read or attribute it, or
	// the second factor could not be checked.
	Refuse Action = iota
	// Release: the answer needs no second factor and goes out as judged.
	Release
	// Hold: the answer goes out only after a second factor (or, with
	// Enroll, an enrollment inside the login).
	Hold
)

func (a Action) String() string {
	return [...]string{"refuse", "release", "hold"}[a]
}

// Reasons a verdict gives; they are audit outcomes too, so keep them stable.
const (
	ReasonAppRefused         = "app_refused"         // release: the app refused the login
	ReasonNoSession          = "no_session"          // release: names nobody and carries nothing that could be a session
	ReasonNoMFA              = "no_mfa"              // release: the user has no MFA and none is required
	ReasonEnrolled           = "mfa_enrolled"        // hold: the user has MFA
	ReasonEnrollmentRequired = "enrollment_required" // hold: MFA required, the user must enroll
	ReasonUnreadable         = "unreadable_answer"   // refuse: an answer the gate cannot decode or parse
	ReasonUnattributed       = "unattributed"        // refuse: could be a session, but names nobody
	ReasonAmbiguousUser      = "ambiguous_user"      // refuse: the answer names more than one user
	ReasonUnavailable        = "unavailable"         // refuse: the user's second factor could not be looked up
)

// Verdict is the gate's decision on one answer, computed by Judge and only
// applied by the handler.
type Verdict struct {
	Action Action
	Reason string
	// User is who the answer was attributed to, and UserSource from where:
	// "answer_header", "answer_body" or "request_field".
	User, UserSource string
	// Marker says what in the answer could be a session (never its value).
	Marker string
	Err    error
}

// RefusalSignal says how the app tells a refused login: a final status at or
// above MinStatus, or (for apps that answer 200 on failure) a JSON pointer
// holding a value, or a header being present.
type RefusalSignal struct {
	MinStatus int
	Pointer   string
	Value     string
	Header    string
}

// policy is the compiled judgement of the login gate; Judge is a pure
// function of it, the request, the answer and the user's state.
type policy struct {
	creds             *credentials
	userIDHeader      string
	userIDPointer     string
	requestField      bool
	required          bool
	requiredPointer   string
	refused           RefusalSignal
	nonSessionCookies map[string]bool
}

// UserState answers whether a user has MFA on; an error means it could not
// be told, and the gate fails closed.
type UserState func(user string) (enrolled bool, err error)

// Lookups are what a verdict may ask outside the answer.
type Lookups struct {
	Enrolled UserState
	// Whose asks the app whose session a found credential is: "" when it
	// is none. Nil: no introspection configured.
	Whose func(Found) (string, error)
	// Holder says whose session the request itself presented ("" none):
	// an answer that renews the session of the user who sent the request
	// grants nothing new. Nil on login routes.
	Holder func() (string, error)
}

// Judge decides what to do with the app's answer a to the login request
// req. It releases only what it positively knows needs no second factor:
// a refused login, an answer that carries nothing that could be a session,
// or a session of a known user without MFA. Everything else is held or
// refused.
func (p *policy) Judge(req loginRequest, a *answer, l Lookups) Verdict {
	if a.Status < 200 || a.Status > 599 {
		return Verdict{Action: Refuse, Reason: ReasonUnreadable}
	}
	refused := a.Status >= p.refused.MinStatus || (p.refused.Header != "" && len(a.Header.Values(p.refused.Header)) > 0)
	var facts jsonFacts
	var isJSON bool
	var scanErr error
	if a.Unreadable == "" {
		facts, isJSON, scanErr = p.scan(a)
	}
	if !refused && p.refused.Pointer != "" && isJSON && scanErr == nil {
		vs := facts.At[p.refused.Pointer]
		refused = len(vs) == 1 && matchesRefusal(vs[0], p.refused.Value)
	}
	if refused {
		return p.refusedByApp(a, facts, isJSON && scanErr == nil, l)
	}
	if a.Unreadable != "" || scanErr != nil {
		return Verdict{Action: Refuse, Reason: ReasonUnreadable}
	}

	v := Verdict{}
	user, source, ok := p.answerUser(a, facts)
	if !ok {
		return Verdict{Action: Refuse, Reason: ReasonAmbiguousUser}
	}
	if user == "" {
		found := p.found(a, facts, isJSON)
		v.Marker = sessionMarker(a, facts, p.nonSessionCookies, p.creds)
		if !isJSON {
			// A body the gate does not parse may still carry the session.
			textFound, marker, readable := p.fromText(a, true)
			if !readable {
				return Verdict{Action: Refuse, Reason: ReasonUnreadable, Marker: marker}
			}
			found = append(found, textFound...)
			if v.Marker == "" {
				v.Marker = marker
			}
		}
		switch {
		case len(found) == 0 && v.Marker == "":
			return Verdict{Action: Release, Reason: ReasonNoSession}
		case len(found) > 0 && v.Marker == "" && l.Whose != nil:
			// Every possible session is a configured credential: ask
			// the app whose each one is.
			return p.attribute(found, l, p.requiredByApp(facts, isJSON))
		case !p.requestField || !req.UserSet || req.User == "":
			if v.Marker == "" {
				v.Marker = found[0].marker()
			}
			v.Reason = ReasonUnattributed
			return v
		}
		user, source = req.User, "request_field"
	}
	v.User, v.UserSource = user, source
	enrolled, err := l.Enrolled(user)
	switch {
	case err != nil:
		v.Reason, v.Err = ReasonUnavailable, err
	case enrolled:
		v.Action, v.Reason = Hold, ReasonEnrolled
	case p.required || p.requiredByApp(facts, isJSON):
		v.Action, v.Reason = Hold, ReasonEnrollmentRequired
	default:
		v.Action, v.Reason = Release, ReasonNoMFA
	}
	return v
}

// refusedByApp releases an answer the app marked as a refused login,
// unless it still carries the session of a user who needs a second factor
// (some apps set a session on a 4xx): a configured credential the app says
// is such a session, or a possible session in an answer that names an
// enrolled user.
func (p *policy) refusedByApp(a *answer, facts jsonFacts, isJSON bool, l Lookups) Verdict {
	if found := p.found(a, facts, isJSON); len(found) > 0 && l.Whose != nil {
		if v := p.attribute(found, l, false); v.Action != Release {
			return v
		}
	}
	if user, source, ok := p.answerUser(a, facts); ok && user != "" && sessionMarker(a, facts, p.nonSessionCookies, p.creds) != "" {
		enrolled, err := l.Enrolled(user)
		switch {
		case err != nil:
			return Verdict{Action: Refuse, Reason: ReasonUnavailable, User: user, UserSource: source, Err: err}
		case enrolled:
			return Verdict{Action: Hold, Reason: ReasonEnrolled, User: user, UserSource: source}
		}
	}
	return Verdict{Action: Release, Reason: ReasonAppRefused}
}

// matchesRefusal compares a JSON value with login.refused_value: a JSON
// literal (true, false, null, a number) matches only that literal, any
// other text only a string, so "false" the string is not false.
func matchesRefusal(v jsonValue, want string) bool {
	switch want {
	case "true", "false":
		return v.Kind == 'b' && v.Text == want
	case "null":
		return v.Kind == 'z'
	}
	if _, err := strconv.ParseFloat(want, 64); err == nil {
		return v.Kind == 'n' && v.Text == want
	}
	return v.Kind == 's' && v.Text == want
}

// JudgeCredentials decides on an answer of any route that carries the
// configured credentials found (the caller has dropped the ones the
// request itself presented). Nothing here can be a login refusal but a
// refusing status.
func (p *policy) JudgeCredentials(a *answer, found []Found, l Lookups) Verdict {
	if a.Status < 200 || a.Status > 599 {
		return Verdict{Action: Refuse, Reason: ReasonUnreadable}
	}
	if v := p.attribute(found, l, false); v.Action != Release || a.Status < p.refused.MinStatus {
		return v
	}
	return Verdict{Action: Release, Reason: ReasonAppRefused}
}

// attribute asks the app whose each found credential is and decides: no
// session among them passes, sessions of users without MFA pass, one user
// who needs a second factor is held, two are ambiguous.
func (p *policy) attribute(found []Found, l Lookups, requiredByApp bool) Verdict {
	if l.Whose == nil {
		return Verdict{Action: Refuse, Reason: ReasonUnattributed, Marker: found[0].marker()}
	}
	seen := map[string]bool{}
	var users []string
	for _, f := range found {
		u, err := l.Whose(f)
		if err != nil {
			return Verdict{Action: Refuse, Reason: ReasonUnavailable, Err: err}
		}
		if u != "" && !seen[u] {
			seen[u] = true
			users = append(users, u)
		}
	}
	if len(users) == 0 {
		return Verdict{Action: Release, Reason: ReasonNoSession}
	}
	var needs []Verdict
	for _, u := range users {
		enrolled, err := l.Enrolled(u)
		switch {
		case err != nil:
			return Verdict{Action: Refuse, Reason: ReasonUnavailable, User: u, UserSource: "introspection", Err: err}
		case enrolled:
			needs = append(needs, Verdict{Action: Hold, Reason: ReasonEnrolled, User: u, UserSource: "introspection"})
		case p.required || requiredByApp:
			needs = append(needs, Verdict{Action: Hold, Reason: ReasonEnrollmentRequired, User: u, UserSource: "introspection"})
		}
	}
	if len(needs) > 0 && l.Holder != nil {
		holder, err := l.Holder()
		if err != nil {
			return Verdict{Action: Refuse, Reason: ReasonUnavailable, Err: err}
		}
		kept := needs[:0]
		for _, n := range needs {
			if n.User != holder {
				kept = append(kept, n)
			}
		}
		needs = kept
	}
	switch len(needs) {
	case 0:
		return Verdict{Action: Release, Reason: ReasonNoMFA, User: users[0], UserSource: "introspection"}
	case 1:
		return needs[0]
	}
	return Verdict{Action: Refuse, Reason: ReasonAmbiguousUser}
}

// fromText reads a body that is not JSON: configured json credentials
// found in text or markup, a marker for other credential-looking members,
// and readable false for a binary body that names a credential.
//
// strict (login routes) refuses every body that is not readable text; off
// (body routes, which may serve files) only one that names a configured
// credential.
func (p *policy) fromText(a *answer, strict bool) (found []Found, marker string, readable bool) {
	var keys map[string]Credential
	if !p.creds.empty() {
		keys = p.creds.jsonKeys
	}
	switch textKind(a.Header.Get("Content-Type"), a.Body) {
	case "text":
		for _, pair := range textPairs(a.Body, keys) {
			if c, ok := keys[pair[0]]; ok {
				found = append(found, Found{Credential: c, Value: pair[1]})
			} else if marker == "" {
				marker = "member " + pair[0] + " in a " + a.Header.Get("Content-Type") + " body"
			}
		}
	case "binary":
		// Not text the gate can read (msgpack, UTF-16, protobuf): it may
		// carry the session in a form no scan sees.
		if strict || binaryCredentialWord(a.Body, keys) {
			return nil, "a body the gate cannot read", false
		}
	}
	return found, marker, true
}

// found lists the configured credentials in the answer.
func (p *policy) found(a *answer, facts jsonFacts, isJSON bool) []Found {
	if p.creds.empty() {
		return nil
	}
	out := p.creds.fromHeaders(a.Header)
	if isJSON {
		out = append(out, p.creds.fromJSON(facts)...)
	}
	return out
}

// scan parses a JSON answer (by content type, or a body that looks like
// JSON) for the configured pointers and credential-looking members. A body
// that claims to be JSON and is not is an error: the gate cannot read it.
func (p *policy) scan(a *answer) (jsonFacts, bool, error) {
	mt, _, _ := mime.ParseMediaType(a.Header.Get("Content-Type"))
	trimmed := strings.TrimLeft(string(a.Body[:min(len(a.Body), 64)]), " \t\r\n")
	claims := mt == "application/json" || strings.HasSuffix(mt, "+json")
	looks := trimmed != "" && (trimmed[0] == '{' || trimmed[0] == '[')
	if !claims && !looks {
		return jsonFacts{}, false, nil
	}
	pointers := []string{p.userIDPointer, p.requiredPointer, p.refused.Pointer}
	var keys map[string]bool
	if !p.creds.empty() {
		var cp []string
		cp, keys = p.creds.scanTargets()
		pointers = append(pointers, cp...)
	}
	facts, err := scanJSON(a.Body, pointers, keys)
	if err != nil {
		if claims {
			return facts, true, err
		}
		return jsonFacts{}, false, nil // text that happens to start with a bracket
	}
	return facts, true, nil
}

// answerUser reads the user the answer names: its header, else its JSON
// pointer. ok is false when the answer names two different users.
func (p *policy) answerUser(a *answer, facts jsonFacts) (user, source string, ok bool) {
	if p.userIDHeader != "" {
		vs := a.Header.Values(p.userIDHeader)
		for _, v := range vs[min(len(vs), 1):] {
			if v != vs[0] {
				return "", "", false
			}
		}
		if len(vs) > 0 && vs[0] != "" {
			user, source = vs[0], "answer_header"
		}
	}
	if p.userIDPointer != "" {
		vs := facts.At[p.userIDPointer]
		var fromBody string
		for _, v := range vs {
			if v.Kind != 's' && v.Kind != 'n' {
				continue
			}
			if fromBody != "" && v.Text != fromBody {
				return "", "", false
			}
			fromBody = v.Text
		}
		switch {
		case fromBody == "":
		case user == "":
			user, source = fromBody, "answer_body"
		case user != fromBody:
			return "", "", false
		}
	}
	return user, source, true
}

// requiredByApp reads the per-user "MFA required" flag. An answer the gate
// could not read as JSON counts as requiring it: when in doubt, hold.
func (p *policy) requiredByApp(facts jsonFacts, isJSON bool) bool {
	if p.requiredPointer == "" {
		return false
	}
	if !isJSON {
		return true
	}
	vs := facts.At[p.requiredPointer]
	if len(vs) == 0 {
		return false
	}
	for _, v := range vs {
		if v.Kind != 'b' || v.Text != "false" {
			return true // true, or anything the gate cannot read as false
		}
	}
	return false
}

// redirectTargets are the URLs an answer sends the browser to: Location,
// and Refresh ("0; url=…"), which every browser follows too.
func redirectTargets(h http.Header) []string {
	var out []string
	if loc := h.Get("Location"); loc != "" {
		out = append(out, loc)
	}
	for _, r := range h.Values("Refresh") {
		if i := strings.Index(strings.ToLower(r), "url="); i >= 0 {
			out = append(out, strings.Trim(strings.TrimSpace(r[i+4:]), `"'`))
		}
	}
	return out
}

// paramPattern finds key=value pairs anywhere in a Location's query or
// fragment (#access_token=…, #/app?token=…, ?code=…).
var paramPattern = regexp.MustCompile(`([A-Za-z0-9_.\-]+)=`)

// sessionMarker names the first thing in the answer that could be a session
// credential, or "" when there is none: a cookie being set (other than the
// ones declared harmless and cookies being deleted), a credential-looking
// header, a credential-looking Location parameter, or a credential-looking
// JSON member.
func sessionMarker(a *answer, facts jsonFacts, harmless map[string]bool, known *credentials) string {
	if known == nil {
		known = newCredentials(nil)
	}
	for _, line := range a.Header.Values("Set-Cookie") {
		c, err := http.ParseSetCookie(line)
		if err != nil {
			return "Set-Cookie (unparsable)"
		}
		if _, ok := known.cookies[c.Name]; harmless[c.Name] || ok || deletes(c) {
			continue
		}
		return "Set-Cookie " + c.Name
	}
	for name := range a.Header {
		if name != "Set-Cookie" && credentialHeader(name) && !known.hasHeader(name) {
			return "header " + name
		}
	}
	for _, loc := range redirectTargets(a.Header) {
		rest := loc
		if u, err := url.Parse(loc); err == nil {
			rest = u.RawQuery + "#" + u.Fragment
			if u.User != nil {
				return "Location userinfo"
			}
		}
		if dec, err := url.QueryUnescape(rest); err == nil {
			rest += "&" + dec
		}
		for _, m := range paramPattern.FindAllStringSubmatch(rest, -1) {
			if _, ok := known.location[m[1]]; credentialParam(m[1]) && !ok {
				return "Location parameter " + m[1]
			}
		}
	}
	if _, ok := known.jsonKeys[facts.CredentialKey]; facts.CredentialKey != "" && !ok {
		return "JSON member " + facts.CredentialKey
	}
	return ""
}

// longAgo: a Set-Cookie expiring before it is a deletion (servers use 1970).
var longAgo = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// deletes reports a Set-Cookie that removes the cookie: it cannot carry a
// session.
func deletes(c *http.Cookie) bool {
	// Max-Age wins over Expires (RFC 6265 5.3): a cookie with a positive
	// Max-Age lives whatever its Expires says.
	return c.MaxAge < 0 || c.Value == "" || (c.MaxAge == 0 && !c.Expires.IsZero() && c.Expires.Before(longAgo))
}
