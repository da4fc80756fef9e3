// Package config holds totpgate's configuration: its shape, its defaults,
// how it is loaded (YAML file, then TOTPGATE_* environment, then flags) and
// how it is validated.
//
// Every leaf field carries a `yaml` name and a `doc` string. The loader derives
// the environment variable and the flag from the YAML path, and Reference
// renders the README's configuration table from the same tags, so the three
// spellings and the documentation cannot drift apart.
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/totpgate/totpgate/audit"
	"github.com/totpgate/totpgate/identity"
	"github.com/totpgate/totpgate/vaultkeys"
)

// Config is the whole configuration of one sidecar process.
type Config struct {
	Listen         string   `yaml:"listen" doc:"Address of the main listener: the app's traffic and the user API."`
	AdminListen    string   `yaml:"admin_listen" doc:"Address of the admin listener: /healthz, /readyz, /metrics and the admin API. Keep it off the public network."`
	TrustedProxies []string `yaml:"trusted_proxies" doc:"CIDRs of proxies whose X-Forwarded-* headers are believed. From any other peer they are replaced."`
	Upstream       Upstream `yaml:"upstream"`
	API            API      `yaml:"api"`
	Admin          Admin    `yaml:"admin"`
	Identity       Identity `yaml:"identity"`
	Login          Login    `yaml:"login"`
	Session        Session  `yaml:"session"`
	StepUp         StepUp   `yaml:"step_up"`
	MFA            MFA      `yaml:"mfa"`
	Store          Store    `yaml:"store"`
	Keyring        Keyring  `yaml:"keyring"`
	Audit          Audit    `yaml:"audit"`
	Server         Server   `yaml:"server"`
	Log            Log      `yaml:"log"`
}

// Upstream is the app the sidecar stands in front of.
type Upstream struct {
	URL                   string        `yaml:"url" doc:"Base URL of the app, normally on localhost in the same pod."`
	PreserveHost          bool          `yaml:"preserve_host" doc:"Send the client's Host header to the app (true) or the upstream URL's host (false)."`
	DialTimeout           time.Duration `yaml:"dial_timeout" doc:"Time allowed to open a connection to the app."`
	ResponseHeaderTimeout time.Duration `yaml:"response_header_timeout" doc:"Time allowed for the app to start answering; past it the client gets 504."`
	IdleConnTimeout       time.Duration `yaml:"idle_conn_timeout" doc:"How long an idle keep-alive connection to the app is kept."`
	MaxIdleConns          int           `yaml:"max_idle_conns" doc:"Idle keep-alive connections kept to the app."`
}

// API is the sidecar's own user-facing API on the main listener.
type API struct {
	Prefix       string   `yaml:"prefix" doc:"Path prefix of the user API (enrollment, status, challenge). Requests under it never reach the app."`
	MaxBodyBytes int64    `yaml:"max_body_bytes" doc:"Largest request body the user API accepts."`
	RatePerSec   float64  `yaml:"rate_per_second" doc:"Requests per second each client IP may make to the user API (challenges included)."`
	SelfService  bool     `yaml:"self_service" doc:"Serve the self-service page (status, enroll with QR code, recovery codes, disable, trusted devices) at the prefix, e.g. /mfa/."`
	RateBurst    int      `yaml:"rate_burst" doc:"Burst of requests a client IP may make above rate_per_second."`
	CORSOrigins  []string `yaml:"cors_origins" doc:"Origins (e.g. https://app.example.com) of single-page apps allowed to call the user API cross-origin, with credentials. State-changing calls from any other origin are refused with 403 (CSRF)."`
	RateIPv6Bits int      `yaml:"rate_ipv6_prefix" doc:"IPv6 clients share one rate-limit bucket per prefix of this length (64: one subscriber's /64)."`
}

// Admin is the admin API on the admin listener.
type Admin struct {
	Token     string `yaml:"token" secret:"true" doc:"Bearer token for the admin API. Prefer token_file. With neither set, the admin API refuses every call."`
	TokenFile string `yaml:"token_file" doc:"File holding the admin bearer token (re-read on each call, so it can be rotated)."`
}

// Identity is how the sidecar asks the app who a caller is.
type Identity struct {
	IntrospectPath string   `yaml:"introspect_path" doc:"Path of the app endpoint (on upstream.url) that answers 2xx with the caller's user as JSON when given the caller's credentials."`
	ForwardHeaders []string `yaml:"forward_headers" doc:"Request headers carrying the caller's app credentials, forwarded to identity.introspect_path."`
	NoSession      []int    `yaml:"no_session_statuses" doc:"Statuses of identity.introspect_path that mean a credential found in an app answer is no session (the answer then passes). Others fail closed. Add 403 only if the endpoint answers 403 for not logged in and nothing a client can provoke (a rate limiter) answers 403."`
	ContextHeaders []string `yaml:"context_headers" doc:"Request headers forwarded to identity.introspect_path that identify the application or tenant, not the user (e.g. X-App-Id); a caller who sends only these is unauthenticated."`
	UserIDPointer  string   `yaml:"user_id_pointer" doc:"JSON pointer (RFC 6901) to the user id in the introspection answer."`
	AccountPointer string   `yaml:"account_pointer" doc:"JSON pointer to the account label shown in authenticator apps (e.g. /email); empty uses the user id."`
}

// Login is how the app's login routes are intercepted.
type Login struct {
	Paths             []string      `yaml:"paths" doc:"The app's login routes (at least one). Matched on a normalized path (case and Unicode case variants, slashes, dot segments, percent-encoding, ;params, a .format suffix such as .json) and every method."`
	CodeHeader        string        `yaml:"code_header" doc:"Request header that may carry the TOTP or recovery code in the login call; removed before the app sees it."`
	CodeField         string        `yaml:"code_field" doc:"JSON body, form, multipart or query field that may carry the code; removed before the app sees it. Given twice (or in two places), the login is refused with 400."`
	RememberHeader    string        `yaml:"remember_device_header" doc:"Request header with which a one-call login asks to trust the device once the code passed (true or 1; false or 0 do not); removed before the app sees it. The device then gets the gate's __Host-totpgate-device cookie (see mfa.trusted_device_ttl). Any other value is refused with 400."`
	RememberField     string        `yaml:"remember_device_field" doc:"JSON body, form, multipart or query field that asks the same as remember_device_header (a JSON boolean, or true, false, 1, 0); removed before the app sees it. Given twice, in two places or with the header, the login is refused with 400."`
	UserIDPointer     string        `yaml:"user_id_pointer" doc:"JSON pointer to the user id in the app's successful login answer. The safe choice: it is the app's own id for the user it let in."`
	UserIDField       string        `yaml:"user_id_request_field" doc:"Last resort: login request field (JSON, form, multipart or query) holding the user id, used only when the answer names nobody but could carry a session. Only safe when user ids are the login names the app authenticates, normalized as the app does (user_id_normalize). Repeated or ambiguous fields are refused."`
	UserIDNormalize   []string      `yaml:"user_id_normalize" doc:"How the app normalizes the login name before it looks the user up, applied in order to user_id_request_field: trim, nfkc, casefold (e.g. [trim, nfkc] for Django, [casefold] for an app that lower-cases emails)."`
	UserIDHeader      string        `yaml:"user_id_header" doc:"Header of the app's login answer carrying the user id (checked with the pointer; two different ids refuse the login); empty: not used."`
	RequiredPointer   string        `yaml:"required_pointer" doc:"JSON pointer to a boolean in the app's login answer that requires MFA for that user even under the optional policy; an answer that cannot be read counts as requiring it. Empty: not used."`
	SessionCookies    []string      `yaml:"session_cookies" doc:"The app's session cookie names, removed from requests to login routes so an app that logs in the session the client already holds must issue a new one (which is then held). Set to [] for a framework that keeps the login form's CSRF token in the session."`
	NonSessionCookies []string      `yaml:"non_session_cookies" doc:"Cookies a login answer may set without counting as a session (CSRF tokens). Any other cookie being set counts as a possible session."`
	RefusedStatus     int           `yaml:"refused_status" doc:"A final app answer with this status or higher (400..599) is a refused login and goes out unchanged."`
	RefusedPointer    string        `yaml:"refused_pointer" doc:"For apps that answer 200 on a failed login: JSON pointer into the answer that holds refused_value when the login was refused; empty: not used."`
	RefusedValue      string        `yaml:"refused_value" doc:"The value at refused_pointer that means refused, compared with the JSON text of a string, number, boolean or null (e.g. false)."`
	RefusedHeader     string        `yaml:"refused_header" doc:"Header whose presence on the app's answer means the login was refused; empty: not used."`
	RevokePath        string        `yaml:"revoke_path" doc:"App path (e.g. /logout) called with the session of a held answer that will never be released (challenge out of attempts or expired, user locked or reset), presented as session.credentials say (without credentials: every cookie the answer set); empty: off."`
	RevokeMethod      string        `yaml:"revoke_method" doc:"HTTP method of the revoke call."`
	SweepInterval     time.Duration `yaml:"sweep_interval" doc:"How often expired challenges are deleted and their held sessions revoked."`
	ChallengeTTL      time.Duration `yaml:"challenge_ttl" doc:"How long a held login waits for its second factor."`
	ChallengeAttempts int           `yaml:"challenge_attempts" doc:"Wrong codes a login challenge survives."`
	MaxAnswerBytes    int64         `yaml:"max_answer_bytes" doc:"Largest app login answer (decoded) the gate holds in memory; a larger one is refused with 502."`
	MaxRequestBytes   int64         `yaml:"max_request_bytes" doc:"Largest login request body the gate reads; a larger one is refused with 413."`
	MaxConcurrent     int           `yaml:"max_concurrent" doc:"Login requests judged at once; more wait up to 2 s, then get 503. Bounds the gate's memory."`
}

// Validate reports every problem with the login settings.
func (l Login) Validate() error {
	var errs []error
	if len(l.Paths) == 0 {
		errs = append(errs, errors.New("login.paths: name at least one login route"))
	}
	for _, p := range l.Paths {
		if !strings.HasPrefix(p, "/") {
			errs = append(errs, fmt.Errorf("login.paths: %q must start with /", p))
		}
	}
	if l.CodeHeader == "" || l.CodeField == "" {
		errs = append(errs, errors.New("login.code_header and login.code_field: must not be empty"))
	}
	if l.RememberHeader == "" || l.RememberField == "" {
		errs = append(errs, errors.New("login.remember_device_header and login.remember_device_field: must not be empty"))
	}
	if l.RememberHeader != "" && strings.EqualFold(l.RememberHeader, l.CodeHeader) {
		errs = append(errs, errors.New("login.remember_device_header: must differ from login.code_header"))
	}
	for _, f := range []string{l.CodeField, l.UserIDField} {
		if l.RememberField != "" && strings.EqualFold(strings.TrimSpace(l.RememberField), strings.TrimSpace(f)) {
			errs = append(errs, errors.New("login.remember_device_field: must differ from login.code_field and login.user_id_request_field"))
		}
	}
	if l.UserIDPointer == "" && l.UserIDHeader == "" && l.UserIDField == "" {
		errs = append(errs, errors.New("login: set user_id_pointer, user_id_header or user_id_request_field"))
	}
	for name, p := range map[string]string{"user_id_pointer": l.UserIDPointer, "required_pointer": l.RequiredPointer, "refused_pointer": l.RefusedPointer} {
		if p != "" && !strings.HasPrefix(p, "/") {
			errs = append(errs, fmt.Errorf("login.%s: %q must start with /", name, p))
		}
	}
	for _, op := range l.UserIDNormalize {
		if op != "trim" && op != "nfkc" && op != "casefold" {
			errs = append(errs, fmt.Errorf("login.user_id_normalize: %q must be trim, nfkc or casefold", op))
		}
	}
	if l.RefusedStatus < 400 || l.RefusedStatus > 599 {
		errs = append(errs, fmt.Errorf("login.refused_status: %d must be 400..599", l.RefusedStatus))
	}
	if (l.RefusedPointer == "") != (l.RefusedValue == "") {
		errs = append(errs, errors.New("login.refused_pointer and login.refused_value: set both or neither"))
	}
	if l.RevokePath != "" && !strings.HasPrefix(l.RevokePath, "/") {
		errs = append(errs, fmt.Errorf("login.revoke_path: %q must start with /", l.RevokePath))
	}
	switch l.RevokeMethod {
	case "GET", "POST", "PUT", "DELETE":
	default:
		errs = append(errs, fmt.Errorf("login.revoke_method: %q must be GET, POST, PUT or DELETE", l.RevokeMethod))
	}
	errs = append(errs, positive("login.sweep_interval", l.SweepInterval))
	if l.ChallengeAttempts < 1 {
		errs = append(errs, errors.New("login.challenge_attempts: must be at least 1"))
	}
	if l.MaxAnswerBytes < 1024 {
		errs = append(errs, errors.New("login.max_answer_bytes: must be at least 1024"))
	}
	if l.MaxRequestBytes < 1024 {
		errs = append(errs, errors.New("login.max_request_bytes: must be at least 1024"))
	}
	if l.MaxConcurrent < 1 {
		errs = append(errs, errors.New("login.max_concurrent: must be at least 1"))
	}
	errs = append(errs, positive("login.challenge_ttl", l.ChallengeTTL))
	return errors.Join(errs...)
}

// Session describes the app's session credential, so the gate can find it
// in any answer, on any route, and ask the app whose it is.
type Session struct {
	Credentials []string `yaml:"credentials" doc:"The app's session credentials: where one appears in an answer and how it is presented back to the app, as <in>:<name>[ as <how>[:<name>]] with in = cookie, header, json (a member at any depth), pointer or location (a Location query or fragment parameter) and how = bearer, cookie:<name> or header:<name>. E.g. cookie:sessionid, json:sessionToken as bearer. An answer on any route that carries one the request did not present is attributed by identity.introspect_path and held for a user who needs a second factor. check-config explains each."`
	BodyRoutes  []string `yaml:"body_routes" doc:"Route prefixes (e.g. /graphql, /batch, /users) whose JSON answers are read (up to login.max_answer_bytes) for json and pointer credentials; other answers are checked by their headers only and stream through."`
}

// Parsed returns the credentials, checked.
func (s Session) Parsed() ([]identity.Credential, error) {
	var errs []error
	out := make([]identity.Credential, 0, len(s.Credentials))
	for _, spec := range s.Credentials {
		c, err := identity.ParseCredential(spec)
		if err != nil {
			errs = append(errs, fmt.Errorf("session.credentials: %w", err))
			continue
		}
		out = append(out, c)
	}
	return out, errors.Join(errs...)
}

// Validate reports every bad credential and body route.
func (s Session) Validate() error {
	_, err := s.Parsed()
	errs := []error{err}
	for _, p := range s.BodyRoutes {
		if !strings.HasPrefix(p, "/") {
			errs = append(errs, fmt.Errorf("session.body_routes: %q must start with /", p))
		}
	}
	if len(s.BodyRoutes) > 0 && len(s.Credentials) == 0 {
		errs = append(errs, errors.New("session.body_routes: set session.credentials too (body routes are read for json and pointer credentials)"))
	}
	return errors.Join(errs...)
}

// MFA is the second-factor policy.
type MFA struct {
	Issuer           string        `yaml:"issuer" doc:"Issuer shown in authenticator apps."`
	Policy           string        `yaml:"policy" doc:"optional: only enrolled users are challenged; required: every user must have MFA."`
	Algorithm        string        `yaml:"algorithm" doc:"TOTP hash for new enrollments: SHA1, SHA256 or SHA512 (enrolled users keep theirs)."`
	Digits           int           `yaml:"digits" doc:"TOTP code length for new enrollments: 6 or 8."`
	Period           int           `yaml:"period" doc:"TOTP time step in seconds for new enrollments."`
	Skew             int           `yaml:"skew" doc:"Time steps accepted either side of now."`
	SecretSize       int           `yaml:"secret_size" doc:"Bytes of randomness in a new TOTP secret."`
	RecoveryCodes    int           `yaml:"recovery_codes" doc:"Recovery codes issued at enrollment."`
	PendingTTL       time.Duration `yaml:"pending_ttl" doc:"How long a started enrollment waits for confirmation."`
	MaxFailures      int           `yaml:"max_failures" doc:"Failed codes per user within failure_window before a lock."`
	FailureWindow    time.Duration `yaml:"failure_window" doc:"Window in which failures are counted."`
	LockFor          time.Duration `yaml:"lock_for" doc:"How long a user is locked after max_failures."`
	TrustedDeviceTTL time.Duration `yaml:"trusted_device_ttl" doc:"How long a device stays trusted after the second factor that trusted it (the login asked with login.remember_device_header or _field, the challenge with remember_device, or the user with POST /mfa/devices, the self-service page's Trust this browser): a later login of the same user on it passes without a code. Each use rotates its token; a rotated-away token used again revokes the device. Disabling MFA, an admin reset, new recovery codes and a lockout revoke them all. 0 turns the feature off."`
}

// Store is where state is kept.
type Store struct {
	Driver           string        `yaml:"driver" doc:"sqlite: one file (embedded default, one replica). postgres: PostgreSQL, shared by every replica."`
	Path             string        `yaml:"path" doc:"SQLite database file, created with mode 0600."`
	DSN              string        `yaml:"dsn" secret:"true" doc:"PostgreSQL connection string, e.g. postgres://totpgate@db:5432/totpgate?sslmode=verify-full. Prefer dsn_file."`
	DSNFile          string        `yaml:"dsn_file" doc:"File holding the PostgreSQL connection string (a mounted Secret), read at start."`
	MaxConns         int           `yaml:"max_conns" doc:"Most PostgreSQL connections this replica opens."`
	StatementTimeout time.Duration `yaml:"statement_timeout" doc:"Longest a PostgreSQL statement may run; a login waiting longer fails closed with 503."`
}

// Keyring is how TOTP secrets are encrypted.
type Keyring struct {
	Backend     string `yaml:"backend" doc:"local: versioned AES-256-GCM keys in a file (embedded default). vault: HashiCorp Vault transit (keyring.vault.*)."`
	LocalPath   string `yaml:"local_path" doc:"Local keyring file, created with mode 0600 on first start."`
	MigrateFrom string `yaml:"migrate_from" doc:"While moving secrets to another keyring: the previous backend (local or vault), still used to decrypt secrets not yet moved. Run totpgate keys rewrap, then unset."`
	Vault       Vault  `yaml:"vault"`
}

// Audit is where security events go besides the JSON log.
type Audit struct {
	WebhookURL         string        `yaml:"webhook_url" doc:"URL that gets every audit event as a signed JSON POST (e.g. the app, to tell its user). Empty: no webhook."`
	WebhookSecret      string        `yaml:"webhook_secret" secret:"true" doc:"Shared secret (16+ bytes) for the HMAC-SHA256 signature header. Prefer webhook_secret_file."`
	WebhookSecretFile  string        `yaml:"webhook_secret_file" doc:"File holding the webhook secret (a mounted Secret), read at start."`
	WebhookQueue       int           `yaml:"webhook_queue" doc:"Events waiting for delivery; beyond it events are dropped (counted), so a slow receiver never slows a login."`
	WebhookMaxAttempts int           `yaml:"webhook_max_attempts" doc:"Delivery attempts per event on connection errors, 429 and 5xx, with jittered backoff."`
	WebhookTimeout     time.Duration `yaml:"webhook_timeout" doc:"Time allowed for one delivery attempt."`
}

// Validate reports a bad webhook setup.
func (a Audit) Validate() error {
	if a.WebhookURL == "" {
		return nil
	}
	// The webhook's rules are audit.NewWebhook's own; the configuration
	// adds the choice between an inline secret and a file (read at start,
	// and checked then by NewWebhook).
	var errs []error
	if (a.WebhookSecret == "") == (a.WebhookSecretFile == "") {
		errs = append(errs, errors.New("audit.webhook_secret, audit.webhook_secret_file: set exactly one with a webhook"))
	}
	settings := audit.WebhookConfig{URL: a.WebhookURL, Secret: []byte(a.WebhookSecret), QueueSize: a.WebhookQueue,
		MaxAttempts: a.WebhookMaxAttempts, Timeout: a.WebhookTimeout}
	for _, e := range settings.SettingErrors() {
		if e.Name == "secret" && a.WebhookSecret == "" {
			continue
		}
		errs = append(errs, fmt.Errorf("audit.webhook_%w", e))
	}
	return errors.Join(errs...)
}

// Vault is the Vault transit keyring. Empty connection settings fall back
// to Vault's own environment variables (VAULT_ADDR, VAULT_CACERT,
// VAULT_CLIENT_CERT, VAULT_CLIENT_KEY, VAULT_TLS_SERVER_NAME, VAULT_TOKEN).
type Vault struct {
	Address       string        `yaml:"address" doc:"Vault address, e.g. https://vault.vault:8200. Empty: VAULT_ADDR."`
	CACert        string        `yaml:"ca_cert" doc:"PEM file of the CA that signed Vault's certificate. Empty: VAULT_CACERT."`
	ClientCert    string        `yaml:"client_cert" doc:"Client certificate file for mutual TLS. Empty: VAULT_CLIENT_CERT."`
	ClientKey     string        `yaml:"client_key" doc:"Client key file for mutual TLS. Empty: VAULT_CLIENT_KEY."`
	TLSServerName string        `yaml:"tls_server_name" doc:"Server name checked in Vault's certificate (SNI). Empty: VAULT_TLS_SERVER_NAME."`
	Mount         string        `yaml:"mount" doc:"Path of the transit secrets engine."`
	Key           string        `yaml:"key" doc:"Transit key name. It must be derived (derived=true): each secret is bound to its user."`
	CreateKey     bool          `yaml:"create_key" doc:"Create the transit key at start when it is missing (needs create on <mount>/keys/<key>); otherwise a missing key stops the start with the command that creates it."`
	Timeout       time.Duration `yaml:"timeout" doc:"Longest a Vault operation may take, retries included; a login waiting longer fails closed with 503."`
	MaxRetries    int           `yaml:"max_retries" doc:"Retries after a connection error, 429 or 5xx (never after another 4xx), with jittered exponential backoff."`
	Auth          VaultAuth     `yaml:"auth"`
}

// VaultAuth is how totpgate logs in to Vault.
type VaultAuth struct {
	Method         string        `yaml:"method" doc:"token, kubernetes or approle."`
	Token          string        `yaml:"token" secret:"true" doc:"Vault token (method token). Prefer token_file. Empty: VAULT_TOKEN."`
	TokenFile      string        `yaml:"token_file" doc:"File holding the token (method token), re-read when it changes, e.g. a Vault Agent sink."`
	TokenFilePoll  time.Duration `yaml:"token_file_poll" doc:"How often token_file is checked for a new token."`
	Mount          string        `yaml:"mount" doc:"Auth mount path. Empty: kubernetes or approle, after the method."`
	Role           string        `yaml:"role" doc:"Vault role (method kubernetes)."`
	ServiceAccount string        `yaml:"service_account_token_file" doc:"Projected service-account token (method kubernetes), read at each login."`
	RoleID         string        `yaml:"role_id" doc:"AppRole role id (method approle)."`
	SecretIDFile   string        `yaml:"secret_id_file" doc:"File holding the AppRole secret id (method approle), read at each login."`
}

// Validate reports every problem with the identity settings.
func (i Identity) Validate() error {
	var errs []error
	if !strings.HasPrefix(i.IntrospectPath, "/") {
		errs = append(errs, fmt.Errorf("identity.introspect_path: %q must start with /", i.IntrospectPath))
	}
	if len(i.ForwardHeaders) == 0 {
		errs = append(errs, errors.New("identity.forward_headers: name at least one header"))
	}
	if !strings.HasPrefix(i.UserIDPointer, "/") {
		errs = append(errs, fmt.Errorf("identity.user_id_pointer: %q must be a JSON pointer starting with /", i.UserIDPointer))
	}
	for _, st := range i.NoSession {
		if st < 400 || st > 499 {
			errs = append(errs, fmt.Errorf("identity.no_session_statuses: %d must be a 4xx status", st))
		}
	}
	if i.AccountPointer != "" && !strings.HasPrefix(i.AccountPointer, "/") {
		errs = append(errs, fmt.Errorf("identity.account_pointer: %q must be a JSON pointer starting with /", i.AccountPointer))
	}
	return errors.Join(errs...)
}

// Validate reports policy values that are out of range; the TOTP
// parameters are checked in full by the mfa package at start.
func (m MFA) Validate() error {
	var errs []error
	if m.Policy != "optional" && m.Policy != "required" {
		errs = append(errs, fmt.Errorf("mfa.policy: %q must be optional or required", m.Policy))
	}
	if m.Issuer == "" {
		errs = append(errs, errors.New("mfa.issuer: must not be empty"))
	}
	if m.MaxFailures < 1 {
		errs = append(errs, errors.New("mfa.max_failures: must be at least 1"))
	}
	errs = append(errs, positive("mfa.pending_ttl", m.PendingTTL), positive("mfa.failure_window", m.FailureWindow), positive("mfa.lock_for", m.LockFor))
	if m.TrustedDeviceTTL < 0 {
		errs = append(errs, fmt.Errorf("mfa.trusted_device_ttl: %s must not be negative (0 turns trusted devices off)", m.TrustedDeviceTTL))
	}
	return errors.Join(errs...)
}

// Validate reports an unknown driver and the settings the driver lacks.
func (s Store) Validate() error {
	var errs []error
	switch s.Driver {
	case "sqlite":
		if s.Path == "" {
			errs = append(errs, errors.New("store.path: must not be empty"))
		}
	case "postgres":
		if (s.DSN == "") == (s.DSNFile == "") {
			errs = append(errs, errors.New("store.dsn, store.dsn_file: set exactly one for the postgres driver"))
		}
		if s.MaxConns < 1 || s.MaxConns > 1000 {
			errs = append(errs, errors.New("store.max_conns: must be 1..1000"))
		}
		errs = append(errs, positive("store.statement_timeout", s.StatementTimeout))
	default:
		errs = append(errs, fmt.Errorf("store.driver: %q is not supported (sqlite or postgres)", s.Driver))
	}
	return errors.Join(errs...)
}

// Validate reports an unknown backend, a missing path and, when Vault is
// used, every missing Vault setting.
func (k Keyring) Validate() error {
	var errs []error
	known := map[string]bool{"local": true, "vault": true}
	if !known[k.Backend] {
		errs = append(errs, fmt.Errorf("keyring.backend: %q is not supported (local or vault)", k.Backend))
	}
	if k.MigrateFrom != "" && (!known[k.MigrateFrom] || k.MigrateFrom == k.Backend) {
		errs = append(errs, fmt.Errorf("keyring.migrate_from: %q must be the other backend than %q, or empty", k.MigrateFrom, k.Backend))
	}
	if (k.Backend == "local" || k.MigrateFrom == "local") && k.LocalPath == "" {
		errs = append(errs, errors.New("keyring.local_path: must not be empty"))
	}
	if k.Backend == "vault" || k.MigrateFrom == "vault" {
		errs = append(errs, k.Vault.Validate())
	}
	return errors.Join(errs...)
}

// Validate reports every missing or contradictory Vault setting.
func (v Vault) Validate() error {
	// The connection rules are vaultkeys.Open's own; only the names and
	// the hint about Vault's environment are the configuration's.
	var errs []error
	settings := vaultkeys.Config{Address: v.Address, ClientCert: v.ClientCert, ClientKey: v.ClientKey,
		Mount: v.Mount, KeyName: v.Key, Timeout: v.Timeout, MaxRetries: v.MaxRetries}
	for _, e := range settings.SettingErrors() {
		hint := ""
		if e.Name == "address" {
			hint = " (or set VAULT_ADDR)"
		}
		errs = append(errs, fmt.Errorf("keyring.vault.%w%s", e, hint))
	}
	a := v.Auth
	switch a.Method {
	case "token":
		if (a.Token == "") == (a.TokenFile == "") {
			errs = append(errs, errors.New("keyring.vault.auth: method token needs exactly one of token (or VAULT_TOKEN) and token_file"))
		}
		if a.TokenFile != "" {
			errs = append(errs, positive("keyring.vault.auth.token_file_poll", a.TokenFilePoll))
		}
	case "kubernetes":
		if a.Role == "" {
			errs = append(errs, errors.New("keyring.vault.auth.role: method kubernetes needs a role"))
		}
		if a.ServiceAccount == "" {
			errs = append(errs, errors.New("keyring.vault.auth.service_account_token_file: must not be empty"))
		}
	case "approle":
		if a.RoleID == "" || a.SecretIDFile == "" {
			errs = append(errs, errors.New("keyring.vault.auth: method approle needs role_id and secret_id_file"))
		}
	default:
		errs = append(errs, fmt.Errorf("keyring.vault.auth.method: %q must be token, kubernetes or approle", a.Method))
	}
	return errors.Join(errs...)
}

// applyVaultEnv fills empty connection settings from Vault's standard
// environment variables, so a pod set up for the vault CLI works as is.
func (v *Vault) applyVaultEnv(getenv func(string) string) {
	for _, f := range []struct {
		field *string
		env   string
	}{
		{&v.Address, "VAULT_ADDR"}, {&v.CACert, "VAULT_CACERT"}, {&v.ClientCert, "VAULT_CLIENT_CERT"},
		{&v.ClientKey, "VAULT_CLIENT_KEY"}, {&v.TLSServerName, "VAULT_TLS_SERVER_NAME"},
	} {
		if *f.field == "" {
			*f.field = getenv(f.env)
		}
	}
	// A configured token file is the explicit choice; VAULT_TOKEN beside
	// it would only make the token settings contradict each other.
	if v.Auth.Method == "token" && v.Auth.Token == "" && v.Auth.TokenFile == "" {
		v.Auth.Token = getenv("VAULT_TOKEN")
	}
}

// Server holds the HTTP server limits shared by both listeners.
type Server struct {
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout" doc:"Time allowed for a client to send request headers."`
	IdleTimeout       time.Duration `yaml:"idle_timeout" doc:"How long an idle client keep-alive connection is kept."`
	ShutdownTimeout   time.Duration `yaml:"shutdown_timeout" doc:"On SIGTERM, how long in-flight requests get to finish."`
	MaxHeaderBytes    int           `yaml:"max_header_bytes" doc:"Largest request header block accepted."`
	StateMetricsAge   time.Duration `yaml:"state_metrics_max_age" doc:"How old the user and stored-secret counts on /metrics may be; the store is asked at most this often, whatever the scrape rate."`
}

// Log configures the structured log.
type Log struct {
	Level string `yaml:"level" doc:"Minimum level: debug, info, warn or error. Output is always JSON on stderr."`
}

// Default returns the embedded defaults: enough to run next to an app on
// 127.0.0.1:3000 with nothing else configured.
func Default() Config {
	return Config{
		Listen:      ":8080",
		AdminListen: "127.0.0.1:9090",
		Upstream: Upstream{
			URL:                   "http://127.0.0.1:3000",
			PreserveHost:          true,
			DialTimeout:           5 * time.Second,
			ResponseHeaderTimeout: 60 * time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConns:          256,
		},
		API: API{Prefix: "/mfa", MaxBodyBytes: 64 << 10, RatePerSec: 5, RateBurst: 30, RateIPv6Bits: 64},
		Identity: Identity{
			IntrospectPath: "/api/me",
			NoSession:      []int{401, 419, 440},
			ForwardHeaders: []string{"Cookie", "Authorization"},
			UserIDPointer:  "/id",
		},
		Login: Login{
			Paths: []string{"/login"}, CodeHeader: "X-TOTP-Code", CodeField: "totp_code",
			RememberHeader: "X-TOTP-Remember-Device", RememberField: "totp_remember_device",
			UserIDPointer: "/user/id", ChallengeTTL: 5 * time.Minute, ChallengeAttempts: 5,
			MaxAnswerBytes: 1 << 20, MaxRequestBytes: 64 << 10, MaxConcurrent: 64, RefusedStatus: 400,
			RevokeMethod: "POST", SweepInterval: time.Minute,
			SessionCookies:    []string{"sessionid", "connect.sid", "PHPSESSID", "JSESSIONID", "laravel_session", "_session_id", "session", "ASP.NET_SessionId", "rack.session"},
			NonSessionCookies: []string{"csrftoken", "XSRF-TOKEN", "_csrf", "csrf_token", "__RequestVerificationToken"},
		},
		StepUp: StepUp{MaxRequestBytes: 64 << 10, IdentityCacheTTL: 10 * time.Second, IdentityCacheEntries: 10000},
		MFA: MFA{
			Issuer: "totpgate", Policy: "optional", Algorithm: "SHA1", Digits: 6, Period: 30, Skew: 1,
			SecretSize: 20, RecoveryCodes: 10, PendingTTL: 15 * time.Minute,
			MaxFailures: 5, FailureWindow: 5 * time.Minute, LockFor: 15 * time.Minute,
			TrustedDeviceTTL: 30 * 24 * time.Hour,
		},
		Store: Store{Driver: "sqlite", Path: "totpgate.db", MaxConns: 10, StatementTimeout: 5 * time.Second},
		Keyring: Keyring{Backend: "local", LocalPath: "totpgate-keyring.json", Vault: Vault{
			Mount: "transit", Key: "totpgate", Timeout: 5 * time.Second, MaxRetries: 2,
			Auth: VaultAuth{Method: "token", TokenFilePoll: 5 * time.Second, ServiceAccount: "/var/run/secrets/kubernetes.io/serviceaccount/token"},
		}},
		Audit:  Audit{WebhookQueue: 1000, WebhookMaxAttempts: 5, WebhookTimeout: 5 * time.Second},
		Server: Server{ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second, ShutdownTimeout: 25 * time.Second, MaxHeaderBytes: 64 << 10, StateMetricsAge: 15 * time.Second},
		Log:    Log{Level: "info"},
	}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Listen == "" {
		errs = append(errs, errors.New("listen: must not be empty"))
	}
	if c.AdminListen == "" {
		errs = append(errs, errors.New("admin_listen: must not be empty"))
	}
	// Port 0 asks the OS for a free port, so two ":0" listeners do not clash.
	if c.Listen != "" && c.Listen == c.AdminListen && !strings.HasSuffix(c.Listen, ":0") {
		errs = append(errs, errors.New("admin_listen: must differ from listen"))
	}
	if _, err := c.TrustedPrefixes(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.Upstream.Validate(), c.API.Validate(), c.Admin.Validate(), c.Identity.Validate(), c.Login.Validate(),
		c.Session.Validate(), c.StepUp.Validate(), c.validateStepUp(), c.MFA.Validate(), c.Store.Validate(), c.Keyring.Validate(), c.Audit.Validate(), c.Server.Validate(), c.Log.Validate())
	return errors.Join(errs...)
}

// TrustedPrefixes parses trusted_proxies. A bare address counts as a /32 or /128.
func (c Config) TrustedPrefixes() ([]netip.Prefix, error) {
	var errs []error
	out := make([]netip.Prefix, 0, len(c.TrustedProxies))
	for _, s := range c.TrustedProxies {
		s = strings.TrimSpace(s)
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		errs = append(errs, fmt.Errorf("trusted_proxies: %q is neither a CIDR nor an IP address", s))
	}
	return out, errors.Join(errs...)
}

// Validate reports every problem with the upstream settings.
func (u Upstream) Validate() error {
	var errs []error
	if _, err := u.Parsed(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs,
		positive("upstream.dial_timeout", u.DialTimeout),
		positive("upstream.response_header_timeout", u.ResponseHeaderTimeout),
		positive("upstream.idle_conn_timeout", u.IdleConnTimeout))
	if u.MaxIdleConns < 1 {
		errs = append(errs, errors.New("upstream.max_idle_conns: must be at least 1"))
	}
	return errors.Join(errs...)
}

// Parsed returns the upstream URL, checked to be an absolute http(s) URL
// with no query or fragment.
func (u Upstream) Parsed() (*url.URL, error) {
	p, err := url.Parse(u.URL)
	switch {
	case err != nil:
		return nil, fmt.Errorf("upstream.url: %w", err)
	case p.Scheme != "http" && p.Scheme != "https":
		return nil, fmt.Errorf("upstream.url: %q must start with http:// or https://", u.URL)
	case p.Host == "":
		return nil, fmt.Errorf("upstream.url: %q has no host", u.URL)
	case p.RawQuery != "" || p.Fragment != "":
		return nil, fmt.Errorf("upstream.url: %q must not have a query or fragment", u.URL)
	}
	return p, nil
}

// Validate reports every problem with the user API settings.
func (a API) Validate() error {
	var errs []error
	switch {
	case !strings.HasPrefix(a.Prefix, "/") || a.Prefix == "/":
		errs = append(errs, fmt.Errorf("api.prefix: %q must start with / and name a path segment, e.g. /mfa", a.Prefix))
	case strings.HasSuffix(a.Prefix, "/") || strings.Contains(a.Prefix, "//") || strings.ContainsAny(a.Prefix, "?#%;"):
		errs = append(errs, fmt.Errorf("api.prefix: %q must be a plain path without a trailing slash", a.Prefix))
	}
	if a.MaxBodyBytes < 1024 {
		errs = append(errs, errors.New("api.max_body_bytes: must be at least 1024"))
	}
	if a.RatePerSec <= 0 || a.RateBurst < 1 {
		errs = append(errs, errors.New("api.rate_per_second and api.rate_burst: must be positive"))
	}
	for _, o := range a.CORSOrigins {
		if u, err := url.Parse(o); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || o == "*" {
			errs = append(errs, fmt.Errorf("api.cors_origins: %q must be an origin such as https://app.example.com", o))
		}
	}
	if a.RateIPv6Bits < 16 || a.RateIPv6Bits > 128 {
		errs = append(errs, errors.New("api.rate_ipv6_prefix: must be 16..128"))
	}
	return errors.Join(errs...)
}

// Validate reports every problem with the admin settings.
func (a Admin) Validate() error {
	if a.Token != "" && a.TokenFile != "" {
		return errors.New("admin: set token or token_file, not both")
	}
	if a.Token != "" && len(a.Token) < 16 {
		return errors.New("admin.token: must be at least 16 characters")
	}
	return nil
}

// Validate reports every problem with the server limits.
func (s Server) Validate() error {
	errs := []error{
		positive("server.read_header_timeout", s.ReadHeaderTimeout),
		positive("server.idle_timeout", s.IdleTimeout),
		positive("server.shutdown_timeout", s.ShutdownTimeout),
	}
	if s.MaxHeaderBytes < 4096 {
		errs = append(errs, errors.New("server.max_header_bytes: must be at least 4096"))
	}
	if s.StateMetricsAge < 0 {
		errs = append(errs, errors.New("server.state_metrics_max_age: must not be negative"))
	}
	return errors.Join(errs...)
}

// Validate reports a bad log level.
func (l Log) Validate() error {
	switch strings.ToLower(l.Level) {
	case "debug", "info", "warn", "error":
		return nil
	}
	return fmt.Errorf("log.level: %q must be debug, info, warn or error", l.Level)
}

func positive(name string, d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("%s: must be positive, got %s", name, d)
	}
	return nil
}
