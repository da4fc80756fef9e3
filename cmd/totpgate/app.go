package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/totpgate/totpgate"
	"github.com/totpgate/totpgate/api"
	"github.com/totpgate/totpgate/audit"
	"github.com/totpgate/totpgate/config"
	"github.com/totpgate/totpgate/gen"
	"github.com/totpgate/totpgate/identity"
	"github.com/totpgate/totpgate/internal/foreground"
	"github.com/totpgate/totpgate/metrics"
	"github.com/totpgate/totpgate/mfa"
	"github.com/totpgate/totpgate/problem"
	"github.com/totpgate/totpgate/proxy"
	"github.com/totpgate/totpgate/rotation"
	"github.com/totpgate/totpgate/selfservice"
	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/totp"
)

// app is everything serve wires together: the two listeners' handlers and
// what must be closed on the way out.
type app struct {
	main, admin  http.Handler
	upstreamHost string
	closers      []func() error
	// background jobs run until the servers stop.
	background []func(context.Context)
}

func (a *app) Close() error {
	var errs []error
	for i := len(a.closers) - 1; i >= 0; i-- {
		errs = append(errs, a.closers[i]())
	}
	return errors.Join(errs...)
}

// newApp does all start-up work (parsing, loading keys, opening the store)
// so the request path does none. now is the clock of the second factor and
// of the step-up identity cache. Each part is built by a builder of its
// own, in the order they depend on each other: observability, the
// upstream, the second factor, the API, the front.
func newApp(ctx context.Context, cfg config.Config, log *slog.Logger, now func() time.Time) (_ *app, err error) {
	a := &app{}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	credentials, err := cfg.Session.Parsed()
	if err != nil {
		return nil, err
	}
	obs, err := buildObservability(cfg, len(credentials) > 0, log)
	if err != nil {
		return nil, err
	}
	a.background = obs.background
	up, err := buildUpstream(cfg, obs.reg, credentials)
	if err != nil {
		return nil, err
	}
	a.closers = append(a.closers, up.closers...)
	a.upstreamHost = up.addr
	sf, err := buildSecondFactor(ctx, cfg, obs, up, log, now)
	a.closers = append(a.closers, sf.closers...)
	if err != nil {
		return nil, err
	}
	doc, err := gen.GetSpec()
	if err != nil {
		return nil, fmt.Errorf("load embedded spec: %w", err)
	}
	ops, err := buildAPI(cfg, obs, up, sf, log)
	if err != nil {
		return nil, err
	}
	// One budget per client network for the user API and for requests
	// held at step-up routes.
	limit := proxy.NewRateLimit(up.peers, cfg.API.RatePerSec, cfg.API.RateBurst, cfg.API.RateIPv6Bits, time.Now)
	a.main, err = buildFront(cfg, doc, ops, limit, obs, up, sf, log, now)
	if err != nil {
		return nil, err
	}
	// The admin listener has its own body bound: an import file is larger
	// than anything the user API takes.
	adminValidator, err := proxy.NewValidator(doc, api.MaxAdminBodyBytes)
	if err != nil {
		return nil, err
	}
	a.admin = adminHandler(adminValidator.Wrap(ops.Handler()), cfg.Admin, up.peers)
	a.background = append(a.background, sweepChallenges(sf.store, sf.svc, sf.challenge, cfg.Login.SweepInterval, log), sf.rotator.Serve)
	return a, nil
}

// observability is the metrics registry and where security events go.
type observability struct {
	reg   *prometheus.Registry
	audit metrics.Fanout
	// background delivers the webhook's queue.
	background []func(context.Context)
}

// buildObservability registers the process and build metrics and sends
// audit events to the log, the metrics and, when configured, the webhook.
// anyRoute: session credentials are configured, so sessions found on
// routes nobody configured count under proxy.AnyRoute.
func buildObservability(cfg config.Config, anyRoute bool, log *slog.Logger) (observability, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	version, revision := buildVersion()
	metrics.NewBuildInfo(reg, version, revision)
	routes := make([]string, 0, len(cfg.Login.Paths)+1)
	for _, p := range cfg.Login.Paths {
		routes = append(routes, proxy.NormalizePath(p))
	}
	if anyRoute {
		routes = append(routes, proxy.AnyRoute)
	}
	stepUpPaths := make([]string, len(cfg.StepUp.Routes))
	for i, r := range cfg.StepUp.Routes {
		stepUpPaths[i] = r.Path
	}
	o := observability{reg: reg, audit: metrics.Fanout{audit.NewLog(log), metrics.NewRecorder(reg, routes, stepUpPaths)}}
	if cfg.Audit.WebhookURL != "" {
		hook, err := newWebhook(cfg.Audit, reg, log)
		if err != nil {
			return observability{}, err
		}
		o.audit = append(o.audit, hook)
		o.background = append(o.background, hook.Run)
	}
	return o, nil
}

// upstream is how the sidecar reaches the app and who may speak for the
// client.
type upstream struct {
	url         *url.URL
	addr        string // host:port, for the readiness dial
	trusted     []netip.Prefix
	peers       proxy.Peers
	credentials []identity.Credential
	// rt carries the gate's own calls (logins, identity, revocation,
	// step-up), instrumented; pass is the pass-through's client.
	rt         *metrics.Transport
	pass       http.RoundTripper
	introspect *identity.Introspector
	closers    []func() error
}

// buildUpstream parses the upstream and the trusted proxies and builds the
// transports and the identity introspector.
func buildUpstream(cfg config.Config, reg prometheus.Registerer, credentials []identity.Credential) (upstream, error) {
	u, err := cfg.Upstream.Parsed()
	if err != nil {
		return upstream{}, err
	}
	trusted, err := cfg.TrustedPrefixes()
	if err != nil {
		return upstream{}, err
	}
	up := upstream{url: u, addr: u.Host, trusted: trusted, peers: proxy.NewPeers(trusted), credentials: credentials}
	if u.Port() == "" {
		up.addr = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
	}
	transport := proxy.NewTransport(proxy.TransportOptions{
		DialTimeout:           cfg.Upstream.DialTimeout,
		ResponseHeaderTimeout: cfg.Upstream.ResponseHeaderTimeout,
		IdleConnTimeout:       cfg.Upstream.IdleConnTimeout,
		MaxIdleConns:          cfg.Upstream.MaxIdleConns,
	})
	up.closers = append(up.closers, func() error { transport.CloseIdleConnections(); return nil })
	up.rt = metrics.NewTransport(reg, transport)
	up.pass = proxy.NewUpstreamClient(transport, u)
	if c, ok := up.pass.(*proxy.UpstreamClient); ok {
		up.closers = append(up.closers, func() error { c.CloseIdleConnections(); return nil })
	}
	up.introspect, err = identity.NewIntrospector(&http.Client{Transport: up.rt, Timeout: cfg.Upstream.ResponseHeaderTimeout},
		u.JoinPath(cfg.Identity.IntrospectPath).String(), cfg.Identity.ForwardHeaders, cfg.Identity.UserIDPointer, cfg.Identity.AccountPointer)
	if err != nil {
		return upstream{}, err
	}
	up.introspect.ForwardHost(cfg.Upstream.PreserveHost)
	up.introspect.ForwardContext(cfg.Identity.ContextHeaders)
	up.introspect.NoSessionStatuses(cfg.Identity.NoSession)
	return up, nil
}

// secondFactor is the state and rules of the second factor: the store, the
// keyring, the mfa service, key rotation and the challenge policy.
type secondFactor struct {
	store     *store.Lazy
	keys      *metrics.Keyring
	svc       *mfa.Service
	rotator   *rotation.Manager
	challenge mfa.ChallengeConfig
	closers   []func() error
}

// buildSecondFactor opens the store (lazily: a database that is down at
// start must not stop the sidecar; the app's traffic passes through,
// second-factor work fails closed, and the store opens, migrations
// included, once the database is back) and the keyring, and builds the
// mfa service. Its closers are valid also when it fails.
func buildSecondFactor(ctx context.Context, cfg config.Config, obs observability, up upstream, log *slog.Logger, now func() time.Time) (secondFactor, error) {
	st := store.NewLazy(ctx, func(ctx context.Context) (store.Store, error) { return openStore(ctx, cfg.Store) }, 2*time.Second, log)
	sf := secondFactor{store: st, closers: []func() error{st.Close}}
	rawKeys, closeKeys, err := openKeyring(ctx, cfg.Keyring, log)
	if err != nil {
		return sf, err
	}
	sf.closers = append(sf.closers, closeKeys)
	sf.keys = metrics.NewKeyringMetrics(obs.reg).Wrap(rawKeys, cfg.Keyring.Backend)
	metrics.NewState(obs.reg, st, cfg.Server.StateMetricsAge, time.Now)
	// A rewrap job in this sidecar steps aside while a login's code is
	// checked, for at most rewrapYield at a time.
	logins := foreground.New(rewrapYield)
	sf.rotator, err = rotation.New(rotation.Config{
		Store: st, Keys: sf.keys, Settings: encryptedSettings, Logger: log, Metrics: metrics.NewRewrap(obs.reg), Foreground: logins,
	})
	if err != nil {
		return sf, err
	}
	if sf.svc, err = newMFA(ctx, cfg.MFA, st, sf.keys, logins, now); err != nil {
		return sf, err
	}
	sf.challenge = mfa.ChallengeConfig{TTL: cfg.Login.ChallengeTTL, MaxAttempts: cfg.Login.ChallengeAttempts}
	if cfg.Login.RevokePath != "" {
		sf.challenge.Revoker = proxy.NewRevoker(proxy.RevokerOptions{
			Upstream: up.url, Method: cfg.Login.RevokeMethod, Path: cfg.Login.RevokePath, Transport: up.rt,
			Timeout: cfg.Upstream.ResponseHeaderTimeout, Credentials: up.credentials, Attempts: 4, Backoff: 250 * time.Millisecond,
			Log: log, Audit: obs.audit,
		})
	}
	return sf, nil
}

// buildAPI builds the strict server of openapi.yaml on the second factor:
// the user API, the challenges, step-up completion, the admin operations
// and the probes.
func buildAPI(cfg config.Config, obs observability, up upstream, sf secondFactor, log *slog.Logger) (*api.API, error) {
	var stepUps api.StepUps
	var stepUpGate api.StepUpGate
	if len(cfg.StepUp.Routes) > 0 {
		fw, err := proxy.NewStepUpForwarder(proxy.StepUpForwarderOptions{
			Upstream: up.url, PreserveHost: cfg.Upstream.PreserveHost, TrustedProxies: up.trusted,
			Transport:   proxy.TransportOptions{DialTimeout: cfg.Upstream.DialTimeout, ResponseHeaderTimeout: cfg.Upstream.ResponseHeaderTimeout},
			Instrument:  func(t http.RoundTripper) http.RoundTripper { return up.rt.With(t) },
			Credentials: up.credentials, MaxAnswerBytes: cfg.Login.MaxAnswerBytes,
		})
		if err != nil {
			return nil, err
		}
		stepUps, stepUpGate = sf.svc, fw
	}
	return api.New(api.Deps{
		Logger:   log,
		Gatherer: obs.reg,
		Spec:     totpgate.OpenAPISpec(),
		MFA:      sf.svc,
		Identify: up.introspect.Identify,
		Required: cfg.MFA.Policy == "required",

		Keys:            sf.rotator,
		Challenges:      sf.svc,
		ChallengeConfig: sf.challenge,
		Release:         proxy.ReleaseHeld,
		StepUps:         stepUps,
		StepUpGate:      stepUpGate,
		Audit:           obs.audit,
		ClientIP:        func(r *http.Request) string { return up.peers.ClientIP(r).String() },
		Devices:         sf.svc,
		Checks: []api.Check{
			{Name: "upstream", Run: dialCheck(up.addr, cfg.Upstream.DialTimeout)},
			{Name: "store", Run: func(ctx context.Context) error { return quiet(sf.store.Ping(ctx), "store not answering") }},
			{Name: "keys", Run: func(ctx context.Context) error { return quiet(sf.keys.Ping(ctx), "keyring not usable") }},
		},
	})
}

// buildFront is the main listener: the user API under its prefix (checked
// against the spec, rate limited, CORS), the login gate, step-up routes and
// the pass-through.
func buildFront(cfg config.Config, doc *openapi3.T, ops *api.API, limit *proxy.RateLimit, obs observability, up upstream, sf secondFactor,
	log *slog.Logger, now func() time.Time) (*proxy.Front, error) {
	validator, err := proxy.NewValidator(doc, cfg.API.MaxBodyBytes)
	if err != nil {
		return nil, err
	}
	userAPI := http.Handler(validator.Wrap(ops.Handler()))
	if cfg.API.SelfService {
		userAPI = selfservice.Mount(proxy.SpecPrefix, userAPI)
	}
	stepUpRoutes := make([]proxy.StepUpRoute, len(cfg.StepUp.Routes))
	for i, r := range cfg.StepUp.Routes {
		stepUpRoutes[i] = proxy.StepUpRoute{Path: r.Path, Methods: r.Methods, MaxAge: r.MaxAge}
	}
	required := cfg.MFA.Policy == "required"
	return proxy.New(proxy.Options{
		Upstream:       up.url,
		PreserveHost:   cfg.Upstream.PreserveHost,
		Transport:      up.rt,
		PassThrough:    up.rt.With(up.pass),
		TrustedProxies: up.trusted,
		APIPrefix:      cfg.API.Prefix,
		API:            limit.Wrap(proxy.NewCORS(cfg.API.CORSOrigins).Wrap(userAPI)),
		Logger:         log,
		Login: &proxy.LoginOptions{
			Paths:              cfg.Login.Paths,
			CodeHeader:         cfg.Login.CodeHeader,
			CodeField:          cfg.Login.CodeField,
			RememberHeader:     cfg.Login.RememberHeader,
			RememberField:      cfg.Login.RememberField,
			Devices:            sf.svc,
			UserIDPointer:      cfg.Login.UserIDPointer,
			UserIDHeader:       cfg.Login.UserIDHeader,
			UserIDRequestField: cfg.Login.UserIDField,
			UserIDNormalize:    cfg.Login.UserIDNormalize,
			SessionCookies:     cfg.Login.SessionCookies,
			NonSessionCookies:  cfg.Login.NonSessionCookies,
			Refused: proxy.RefusalSignal{
				MinStatus: cfg.Login.RefusedStatus, Pointer: cfg.Login.RefusedPointer,
				Value: cfg.Login.RefusedValue, Header: cfg.Login.RefusedHeader,
			},
			Challenge:       sf.challenge,
			ChallengeURL:    cfg.API.Prefix + "/challenge",
			MFA:             sf.svc,
			MaxAnswerBytes:  cfg.Login.MaxAnswerBytes,
			MaxRequestBytes: cfg.Login.MaxRequestBytes,
			MaxConcurrent:   cfg.Login.MaxConcurrent,
			Audit:           obs.audit,
			Required:        required,
			RequiredPointer: cfg.Login.RequiredPointer,
			Credentials:     up.credentials,
			BodyRoutes:      cfg.Session.BodyRoutes,
			Introspector:    up.introspect,
		},
		StepUp: &proxy.StepUpOptions{
			Routes:               stepUpRoutes,
			MaxRequestBytes:      cfg.StepUp.MaxRequestBytes,
			MaxConcurrent:        cfg.Login.MaxConcurrent,
			IdentityCacheTTL:     cfg.StepUp.IdentityCacheTTL,
			IdentityCacheEntries: cfg.StepUp.IdentityCacheEntries,
			Required:             required,
			Challenge:            heldRequests(sf.challenge),
			ChallengeURL:         cfg.API.Prefix + "/step-up",
			MFA:                  sf.svc,
			Audit:                obs.audit,
			RateLimit:            limit,
			Now:                  now,
			Page:                 selfServicePage(cfg.API),
		},
	})
}

// heldRequests is the challenge policy of held step-up requests: the
// logins' one, without the revoker (a held request that ends unused has
// no session of its own to revoke).
func heldRequests(logins mfa.ChallengeConfig) mfa.ChallengeConfig {
	logins.Revoker = nil
	return logins
}

// selfServicePage is the self-service page's path when it is served, ""
// otherwise.
func selfServicePage(a config.API) string {
	if !a.SelfService {
		return ""
	}
	return a.Prefix + "/"
}

// rewrapYield is the longest a rewrap job waits for logins in one go:
// a steady stream of logins slows the job down but never stops it.
const rewrapYield = 50 * time.Millisecond

// newMFA builds the second-factor service from the mfa settings (serve and
// users import share it).
func newMFA(ctx context.Context, m config.MFA, st store.Store, keys mfa.Keyring, logins mfa.Foreground, now func() time.Time) (*mfa.Service, error) {
	return mfa.New(ctx, st, keys, mfa.Config{
		Issuer:        m.Issuer,
		Params:        mfaParams(m),
		SecretSize:    m.SecretSize,
		RecoveryCodes: m.RecoveryCodes,
		PendingTTL:    m.PendingTTL,
		Limits:        store.Limits{MaxFailures: m.MaxFailures, Window: m.FailureWindow, LockFor: m.LockFor},
		QRSize:        256,

		TrustedDeviceTTL: m.TrustedDeviceTTL,
		Foreground:       logins,
	}, now)
}

func mfaParams(m config.MFA) totp.Params {
	return totp.Params{Algorithm: strings.ToUpper(m.Algorithm), Digits: m.Digits, Period: m.Period, Skew: m.Skew}
}

func newWebhook(cfg config.Audit, reg prometheus.Registerer, log *slog.Logger) (*audit.Webhook, error) {
	secret := cfg.WebhookSecret
	if cfg.WebhookSecretFile != "" {
		b, err := os.ReadFile(cfg.WebhookSecretFile)
		if err != nil {
			return nil, fmt.Errorf("audit.webhook_secret_file: %w", err)
		}
		secret = strings.TrimSpace(string(b))
	}
	return audit.NewWebhook(audit.WebhookConfig{
		URL: cfg.WebhookURL, Secret: []byte(secret), QueueSize: cfg.WebhookQueue, MaxAttempts: cfg.WebhookMaxAttempts,
		Timeout: cfg.WebhookTimeout, RetryMin: 200 * time.Millisecond, RetryMax: 30 * time.Second, Logger: log,
	}, reg)
}

// sweepChallenges revokes the app sessions of expired login challenges and
// deletes them, and deletes expired trusted devices, every interval; it
// touches only expired rows, never a live challenge or device.
func sweepChallenges(st store.Store, svc *mfa.Service, cc mfa.ChallengeConfig, every time.Duration, log *slog.Logger) func(context.Context) {
	return func(ctx context.Context) {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				if _, err := svc.RevokeHeld(ctx, "", cc); err != nil {
					log.Warn("revoke expired challenges", slog.String("error", err.Error()))
				}
				if n, err := st.DeleteExpiredChallenges(ctx, now); err != nil {
					log.Warn("sweep expired challenges", slog.String("error", err.Error()))
				} else if n > 0 {
					log.Debug("swept expired challenges", slog.Int("count", n))
				}
				if n, err := st.DeleteExpiredDevices(ctx, now); err != nil {
					log.Warn("sweep expired trusted devices", slog.String("error", err.Error()))
				} else if n > 0 {
					log.Debug("swept expired trusted devices", slog.Int("count", n))
				}
			}
		}
	}
}

// quiet replaces a dependency's error with a fixed message fit for /readyz.
func quiet(err error, msg string) error {
	if err != nil {
		return errors.New(msg)
	}
	return nil
}

// adminHandler serves the admin listener: probes and metrics without
// credentials, the admin API behind the bearer token, and nothing else (the
// user API must not be reachable here, nor the admin API on the main
// listener, which only ever forwards paths under /mfa to the API).
func adminHandler(apiHandler http.Handler, cfg config.Admin, peers proxy.Peers) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peers.AssignRequestID(w, r)
		switch p := r.URL.Path; {
		case p == "/healthz" || p == "/readyz" || p == "/metrics":
			apiHandler.ServeHTTP(w, r)
		case strings.HasPrefix(p, "/admin/"):
			if !adminAuthorized(r, cfg) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="totpgate-admin"`)
				problem.Write(w, r, problem.New(http.StatusUnauthorized, gen.ProblemCodeUnauthenticated, "A valid admin bearer token is required."))
				return
			}
			apiHandler.ServeHTTP(w, r)
		default:
			problem.Write(w, r, problem.New(http.StatusNotFound, gen.ProblemCodeNotFound, "No such endpoint on the admin listener."))
		}
	})
}

// adminAuthorized compares the bearer token in constant time. The token file
// is read on each call so a rotated token takes effect without a restart.
func adminAuthorized(r *http.Request, cfg config.Admin) bool {
	want, err := adminTokenOf(cfg)
	if err != nil {
		return false
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if want == "" || !ok {
		return false
	}
	// Hash both so the comparison time does not depend on the lengths either.
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}
