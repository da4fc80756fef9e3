package config

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// StepUp lists the app's sensitive routes: a request to one needs a recent
// second factor for the app session making it, whatever the app's own
// session says.
type StepUp struct {
	Routes               StepUpRoutes  `yaml:"routes" doc:"Sensitive routes, each {path, methods, max_age} in YAML (e.g. {path: /settings/password, methods: [POST], max_age: 5m}; methods empty: every method), or [METHOD|METHOD ]PATH MAX_AGE, comma-separated, in the environment and flags (e.g. POST /settings/password 5m). A request to one from an enrolled user's app session without a second factor given within max_age (1s..24h) is held and answered 401 mfa_step_up_required; POST {prefix}/step-up with a code sends it to the app once. Matched on the normalized path, like login.paths (a login route wins); a listed method also catches its lower case and method-override spellings, GET also HEAD, PUT, PATCH and DELETE also POST. Needs session.credentials and identity.introspect_path."`
	MaxRequestBytes      int64         `yaml:"max_request_bytes" doc:"Largest request body to a step-up route the gate holds while it waits for the code; a larger one is refused with 413."`
	IdentityCacheTTL     time.Duration `yaml:"identity_cache_ttl" doc:"How long whose session a credential is (identity.introspect_path's positive answer) is remembered for step-up routes, keyed by a SHA-256 of the credential; 0: ask the app every time. At most 5m."`
	IdentityCacheEntries int           `yaml:"identity_cache_entries" doc:"Most credentials the step-up identity cache remembers; beyond it one is forgotten for each new one."`
}

// StepUpRoute is one sensitive route.
type StepUpRoute struct {
	Path    string        `yaml:"path"`
	Methods []string      `yaml:"methods"`
	MaxAge  time.Duration `yaml:"max_age"`
}

// StepUpRoutes is step_up.routes; in the environment and flags each route
// is [METHOD|METHOD ]PATH MAX_AGE and routes are separated by commas.
type StepUpRoutes []StepUpRoute

// maxStepUpAge bounds a route's max_age: a day-old second factor is no
// step-up.
const maxStepUpAge = 24 * time.Hour

// String renders the routes the way the environment and flags spell them.
func (rs StepUpRoutes) String() string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		s := r.Path + " " + r.MaxAge.String()
		if len(r.Methods) > 0 {
			s = strings.Join(r.Methods, "|") + " " + s
		}
		parts[i] = s
	}
	return strings.Join(parts, ", ")
}

// ParseStepUpRoutes reads the environment and flag spelling of
// step_up.routes.
func ParseStepUpRoutes(s string) (StepUpRoutes, error) {
	var out StepUpRoutes
	var errs []error
	for part := range strings.SplitSeq(s, ",") {
		f := strings.Fields(part)
		if len(f) == 0 {
			continue
		}
		var r StepUpRoute
		switch len(f) {
		case 2:
			r.Path = f[0]
		case 3:
			r.Methods, r.Path = strings.Split(f[0], "|"), f[1]
		default:
			errs = append(errs, fmt.Errorf("%q: want [METHOD|METHOD ]PATH MAX_AGE, e.g. POST /settings/password 5m", strings.TrimSpace(part)))
			continue
		}
		d, err := time.ParseDuration(f[len(f)-1])
		if err != nil {
			errs = append(errs, fmt.Errorf("%q: max_age %q is not a duration such as 5m", strings.TrimSpace(part), f[len(f)-1]))
			continue
		}
		r.MaxAge = d
		out = append(out, r)
	}
	return out, errors.Join(errs...)
}

// Validate reports every problem with the step-up settings themselves;
// Config.Validate adds what they need of the other parts.
func (s StepUp) Validate() error {
	var errs []error
	for _, r := range s.Routes {
		if !strings.HasPrefix(r.Path, "/") {
			errs = append(errs, fmt.Errorf("step_up.routes: path %q must start with /", r.Path))
		}
		if r.MaxAge <= 0 || r.MaxAge > maxStepUpAge {
			errs = append(errs, fmt.Errorf("step_up.routes: %s: max_age %s must be above 0 and at most 24h", r.Path, r.MaxAge))
		}
		for _, m := range r.Methods {
			if !methodToken(m) {
				errs = append(errs, fmt.Errorf("step_up.routes: %s: method %q must be an HTTP method such as POST", r.Path, m))
			}
		}
	}
	if s.MaxRequestBytes < 1024 {
		errs = append(errs, errors.New("step_up.max_request_bytes: must be at least 1024"))
	}
	if s.IdentityCacheTTL < 0 || s.IdentityCacheTTL > 5*time.Minute {
		errs = append(errs, fmt.Errorf("step_up.identity_cache_ttl: %s must be 0..5m", s.IdentityCacheTTL))
	}
	if s.IdentityCacheEntries < 1 {
		errs = append(errs, errors.New("step_up.identity_cache_entries: must be at least 1"))
	}
	return errors.Join(errs...)
}

// validateStepUp reports what step-up routes need of the other parts.
func (c Config) validateStepUp() error {
	if len(c.StepUp.Routes) == 0 {
		return nil
	}
	var errs []error
	if len(c.Session.Credentials) == 0 {
		errs = append(errs, errors.New("step_up.routes: set session.credentials too (the gate identifies the caller of a step-up route by the app session credential the request presents)"))
	}
	if c.Identity.IntrospectPath == "" {
		errs = append(errs, errors.New("step_up.routes: set identity.introspect_path too (the app is asked whose session a step-up request presents)"))
	}
	for _, r := range c.StepUp.Routes {
		if rest, ok := strings.CutPrefix(r.Path, c.API.Prefix); ok && (rest == "" || rest[0] == '/') {
			errs = append(errs, fmt.Errorf("step_up.routes: %s is under api.prefix %s, which never reaches the app", r.Path, c.API.Prefix))
		}
	}
	return errors.Join(errs...)
}

// methodToken: an HTTP method name (RFC 9110 token), letters only.
func methodToken(m string) bool {
	if m == "" {
		return false
	}
	for _, c := range m {
		if (c < 'A' || c > 'Z') && (c < 'a' || c > 'z') {
			return false
		}
	}
	return true
}
