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
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/totpgate/totpgate"
	"github.com/totpgate/totpgate/api"
	"github.com/totpgate/totpgate/audit"
	"github.com/totpgate/totpgate/config"
	"github.com/totpgate/totpgate/gen"
	"github.com/totpgate/totpgate/identity"
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
// of the step-up identity cache.
func newApp(ctx context.Context, cfg config.Config, log *slog.Logger, now func() time.Time) (_ *app, err error) {
	upstream, err := cfg.Upstream.Parsed()
	if err != nil {
		return nil, err
	}
	trusted, err := cfg.TrustedPrefixes()
	if err != nil {
		return nil, err
	}
	upstreamAddr := upstream.Host
	if upstream.Port() == "" {
		upstreamAddr = net.JoinHostPort(upstream.Hostname(), map[string]string{"http": "80", "https": "443"}[upstream.Scheme])
	}
	doc, err := gen.GetSpec()
	if err != nil {
		return nil, fmt.Errorf("load embedded spec: %w", err)
	}
	validator, err := proxy.NewValidator(doc, cfg.API.MaxBodyBytes)
	if err != nil {
		return nil, err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	version, revision := buildVersion()
	metrics.NewBuildInfo(reg, version, revision)
	credentials, err := cfg.Session.Parsed()
	if err != nil {
		return nil, err
	}
	routes := make([]string, 0, len(cfg.Login.Paths)+1)
	for _, p := range cfg.Login.Paths {
		routes = append(routes, proxy.NormalizePath(p))
	}
	if len(credentials) > 0 {
		routes = append(routes, proxy.AnyRoute) // sessions found on routes nobody configured
	}
	stepUpRoutes := make([]proxy.StepUpRoute, len(cfg.StepUp.Routes))
	stepUpPaths := make([]string, len(cfg.StepUp.Routes))
	for i, r := range cfg.StepUp.Routes {
		stepUpRoutes[i] = proxy.StepUpRoute{Path: r.Path, Methods: r.Methods, MaxAge: r.MaxAge}
		stepUpPaths[i] = r.Path
	}
	auditRec := metrics.Fanout{audit.NewLog(log), metrics.NewRecorder(reg, routes, stepUpPaths)}
	var background []func(context.Context)
	if cfg.Audit.WebhookURL != "" {
		hook, err := newWebhook(cfg.Audit, reg, log)
		if err != nil {
			return nil, err
		}
		auditRec = append(auditRec, hook)
		background = append(background, hook.Run)
	}

	transport := proxy.NewTransport(proxy.TransportOptions{
		DialTimeout:           cfg.Upstream.DialTimeout,
		ResponseHeaderTimeout: cfg.Upstream.ResponseHeaderTimeout,
		IdleConnTimeout:       cfg.Upstream.IdleConnTimeout,
		MaxIdleConns:          cfg.Upstream.MaxIdleConns,
	})
	// A database that is down at start must not stop the sidecar: the app's
	// traffic passes through, second-factor work fails closed, and the
	// store opens (migrations included) once the database is back.
	st := store.NewLazy(ctx, func(ctx context.Context) (store.Store, error) { return openStore(ctx, cfg.Store) }, 2*time.Second, log)
	closers := []func() error{st.Close, func() error { transport.CloseIdleConnections(); return nil }}
	defer func() {
		if err != nil {
			(&app{closers: closers}).Close()
		}
	}()
	rawKeys, closeKeys, err := openKeyring(ctx, cfg.Keyring, log)
	if err != nil {
		return nil, err
	}
	closers = append(closers, closeKeys)
	keys := metrics.NewKeyringMetrics(reg).Wrap(rawKeys, cfg.Keyring.Backend)
	metrics.NewState(reg, st, cfg.Server.StateMetricsAge, time.Now)
	rotator, err := rotation.New(rotation.Config{
		Store: st, Keys: keys, Settings: encryptedSettings, Logger: log, Metrics: metrics.NewRewrap(reg),
	})
	if err != nil {
		return nil, err
	}
	m := cfg.MFA
	svc, err := newMFA(ctx, m, st, keys, now)
	if err != nil {
		return nil, err
	}
	upstreamRT := metrics.NewTransport(reg, transport)
	passClient := proxy.NewUpstreamClient(transport, upstream)
	if c, ok := passClient.(*proxy.UpstreamClient); ok {
		closers = append(closers, func() error { c.CloseIdleConnections(); return nil })
	}
	introspect, err := identity.NewIntrospector(&http.Client{Transport: upstreamRT, Timeout: cfg.Upstream.ResponseHeaderTimeout},
		upstream.JoinPath(cfg.Identity.IntrospectPath).String(), cfg.Identity.ForwardHeaders, cfg.Identity.UserIDPointer, cfg.Identity.AccountPointer)
	if err != nil {
		return nil, err
	}
	introspect.ForwardHost(cfg.Upstream.PreserveHost)
	introspect.ForwardContext(cfg.Identity.ContextHeaders)
	introspect.NoSessionStatuses(cfg.Identity.NoSession)
	peers := proxy.NewPeers(trusted)
	challengeCfg := mfa.ChallengeConfig{TTL: cfg.Login.ChallengeTTL, MaxAttempts: cfg.Login.ChallengeAttempts}
	var stepUps api.StepUps
	var stepUpGate api.StepUpGate
	if len(stepUpRoutes) > 0 {
		fw, err := proxy.NewStepUpForwarder(proxy.StepUpForwarderOptions{
			Upstream: upstream, PreserveHost: cfg.Upstream.PreserveHost, TrustedProxies: trusted, Transport: upstreamRT,
			Credentials: credentials, MaxAnswerBytes: cfg.Login.MaxAnswerBytes,
		})
		if err != nil {
			return nil, err
		}
		stepUps, stepUpGate = svc, fw
	}
	if cfg.Login.RevokePath != "" {
		challengeCfg.Revoker = proxy.NewRevoker(proxy.RevokerOptions{
			Upstream: upstream, Method: cfg.Login.RevokeMethod, Path: cfg.Login.RevokePath, Transport: upstreamRT,
			Timeout: cfg.Upstream.ResponseHeaderTimeout, Credentials: credentials, Attempts: 4, Backoff: 250 * time.Millisecond,
			Log: log, Audit: auditRec,
		})
	}
	a, err := api.New(api.Deps{
		Logger:   log,
		Gatherer: reg,
		Spec:     totpgate.OpenAPISpec(),
		MFA:      svc,
		Identify: introspect.Identify,
		Required: m.Policy == "required",

		Keys:            rotator,
		Challenges:      svc,
		ChallengeConfig: challengeCfg,
		Release:         proxy.ReleaseHeld,
		StepUps:         stepUps,
		StepUpGate:      stepUpGate,
		Audit:           auditRec,
		ClientIP:        func(r *http.Request) string { return peers.ClientIP(r).String() },
		Devices:         svc,
		Checks: []api.Check{
			{Name: "upstream", Run: dialCheck(upstreamAddr, cfg.Upstream.DialTimeout)},
			{Name: "store", Run: func(ctx context.Context) error { return quiet(st.Ping(ctx), "store not answering") }},
			{Name: "keys", Run: func(ctx context.Context) error { return quiet(keys.Ping(ctx), "keyring not usable") }},
		},
	})
	if err != nil {
		return nil, err
	}
	apiHandler := validator.Wrap(a.Handler())
	userAPI := http.Handler(apiHandler)
	if cfg.API.SelfService {
		userAPI = selfservice.Mount(proxy.SpecPrefix, apiHandler)
	}

	// One budget per client network for the user API and for requests
	// held at step-up routes.
	apiLimit := proxy.NewRateLimit(peers, cfg.API.RatePerSec, cfg.API.RateBurst, cfg.API.RateIPv6Bits, time.Now)
	front, err := proxy.New(proxy.Options{
		Upstream:       upstream,
		PreserveHost:   cfg.Upstream.PreserveHost,
		Transport:      upstreamRT,
		PassThrough:    upstreamRT.With(passClient),
		TrustedProxies: trusted,
		APIPrefix:      cfg.API.Prefix,
		API:            apiLimit.Wrap(proxy.NewCORS(cfg.API.CORSOrigins).Wrap(userAPI)),
		Logger:         log,
		Login: &proxy.LoginOptions{
			Paths:              cfg.Login.Paths,
			CodeHeader:         cfg.Login.CodeHeader,
			CodeField:          cfg.Login.CodeField,
			RememberHeader:     cfg.Login.RememberHeader,
			RememberField:      cfg.Login.RememberField,
			Devices:            svc,
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
			Challenge:       challengeCfg,
			ChallengeURL:    cfg.API.Prefix + "/challenge",
			MFA:             svc,
			MaxAnswerBytes:  cfg.Login.MaxAnswerBytes,
			MaxRequestBytes: cfg.Login.MaxRequestBytes,
			MaxConcurrent:   cfg.Login.MaxConcurrent,
			Audit:           auditRec,
			Required:        m.Policy == "required",
			RequiredPointer: cfg.Login.RequiredPointer,
			Credentials:     credentials,
			BodyRoutes:      cfg.Session.BodyRoutes,
			Introspector:    introspect,
		},
		StepUp: &proxy.StepUpOptions{
			Routes:               stepUpRoutes,
			MaxRequestBytes:      cfg.StepUp.MaxRequestBytes,
			MaxConcurrent:        cfg.Login.MaxConcurrent,
			IdentityCacheTTL:     cfg.StepUp.IdentityCacheTTL,
			IdentityCacheEntries: cfg.StepUp.IdentityCacheEntries,
			Required:             m.Policy == "required",
			// A held request ends unused when it expires: there is no
			// session of its own to revoke.
			Challenge:    mfa.ChallengeConfig{TTL: cfg.Login.ChallengeTTL, MaxAttempts: cfg.Login.ChallengeAttempts},
			ChallengeURL: cfg.API.Prefix + "/step-up",
			MFA:          svc,
			Audit:        auditRec,
			RateLimit:    apiLimit,
			Now:          now,
		},
	})
	if err != nil {
		return nil, err
	}
	// The admin listener has its own body bound: an import file is larger
	// than anything the user API takes.
	adminValidator, err := proxy.NewValidator(doc, api.MaxAdminBodyBytes)
	if err != nil {
		return nil, err
	}
	return &app{
		main:         front,
		upstreamHost: upstreamAddr,
		admin:        adminHandler(adminValidator.Wrap(a.Handler()), cfg.Admin, peers),
		closers:      closers,
		background:   append(background, sweepChallenges(st, svc, challengeCfg, cfg.Login.SweepInterval, log), rotator.Serve),
	}, nil
}

// newMFA builds the second-factor service from the mfa settings (serve and
// users import share it).
func newMFA(ctx context.Context, m config.MFA, st store.Store, keys mfa.Keyring, now func() time.Time) (*mfa.Service, error) {
	return mfa.New(ctx, st, keys, mfa.Config{
		Issuer:        m.Issuer,
		Params:        mfaParams(m),
		SecretSize:    m.SecretSize,
		RecoveryCodes: m.RecoveryCodes,
		PendingTTL:    m.PendingTTL,
		Limits:        store.Limits{MaxFailures: m.MaxFailures, Window: m.FailureWindow, LockFor: m.LockFor},
		QRSize:        256,

		TrustedDeviceTTL: m.TrustedDeviceTTL,
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
	want := cfg.Token
	if cfg.TokenFile != "" {
		b, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			return false
		}
		want = strings.TrimSpace(string(b))
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if want == "" || !ok {
		return false
	}
	// Hash both so the comparison time does not depend on the lengths either.
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}
