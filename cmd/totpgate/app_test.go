package main

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/totpgate/totpgate/config"
	"github.com/totpgate/totpgate/store"
)

// builderConfig is the embedded defaults in dir, in front of upstream.
func builderConfig(t *testing.T, upstream string) config.Config {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Upstream.URL = upstream
	cfg.Store.Path = filepath.Join(dir, "totpgate.db")
	cfg.Keyring.LocalPath = filepath.Join(dir, "totpgate-keyring.json")
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Each builder of newApp can be called alone, and each part is what the
// next one needs: observability counts every configured login route and
// the webhook, the upstream reaches the app, the second factor works on
// the store and keyring it opened, and the front and admin handlers
// answer.
func TestBuilders(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	log := slog.New(slog.DiscardHandler)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("app:" + r.URL.Path)) }))
	t.Cleanup(app.Close)
	cfg := builderConfig(t, app.URL)
	cfg.Audit.WebhookURL, cfg.Audit.WebhookSecret = "http://127.0.0.1:1/hook", "0123456789abcdef"

	obs, err := buildObservability(cfg, true, log)
	if err != nil {
		t.Fatal(err)
	}
	if len(obs.audit) != 3 || len(obs.background) != 1 {
		t.Errorf("audit goes to %d recorders with %d background jobs, want log, metrics and webhook, and the webhook's delivery", len(obs.audit), len(obs.background))
	}
	up, err := buildUpstream(cfg, obs.reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, c := range up.closers {
			c()
		}
	})
	if up.addr != strings.TrimPrefix(app.URL, "http://") {
		t.Errorf("upstream addr %q, want %q", up.addr, app.URL)
	}
	sf, err := buildSecondFactor(ctx, cfg, obs, up, log, time.Now)
	t.Cleanup(func() {
		for i := len(sf.closers) - 1; i >= 0; i-- {
			sf.closers[i]()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sf.svc.StartEnrollment(ctx, "alice", "alice"); err != nil {
		t.Fatalf("the second factor does not work on its store and keyring: %v", err)
	}
	if u, err := sf.store.GetUser(ctx, "alice"); err != nil || u.State != store.StatePending {
		t.Fatalf("alice after enrollment start: %+v %v", u, err)
	}

	a, err := newApp(ctx, cfg, log, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	for _, tc := range []struct {
		h          http.Handler
		path, want string
	}{{a.main, "/anything", "app:/anything"}, {a.admin, "/healthz", `"status"`}} {
		rec := httptest.NewRecorder()
		tc.h.ServeHTTP(rec, httptest.NewRequest("GET", tc.path, nil))
		if !strings.Contains(rec.Body.String(), tc.want) {
			t.Errorf("GET %s = %d %q, want %q in it", tc.path, rec.Code, rec.Body, tc.want)
		}
	}
}

// A builder that fails hands back what it opened, so newApp closes it: a
// keyring that cannot be opened leaves no store open.
func TestSecondFactorBuilderFailureClosesTheStore(t *testing.T) {
	t.Parallel()
	cfg := builderConfig(t, "http://127.0.0.1:1")
	if err := os.WriteFile(cfg.Keyring.LocalPath, []byte("not a keyring"), 0o600); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	obs, err := buildObservability(cfg, false, log)
	if err != nil {
		t.Fatal(err)
	}
	up, err := buildUpstream(cfg, obs.reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	sf, err := buildSecondFactor(context.Background(), cfg, obs, up, log, time.Now)
	if err == nil {
		t.Fatal("a broken keyring file was accepted")
	}
	if len(sf.closers) == 0 {
		t.Fatal("the failed builder handed back nothing to close: the store it opened stays open")
	}
	for _, c := range sf.closers {
		c()
	}
	if err := sf.store.Ping(context.Background()); err == nil {
		t.Error("the store still answers after its closer ran")
	}
}
