package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/totpgate/totpgate/config"
)

// listeners are opened before serving so that a port in use fails start-up
// at once, and so tests can ask for port 0 and learn the real address.
type listeners struct {
	main, admin net.Listener
}

func listen(cfg config.Config) (listeners, error) {
	m, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return listeners{}, fmt.Errorf("listen: %w", err)
	}
	a, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		m.Close()
		return listeners{}, fmt.Errorf("admin_listen: %w", err)
	}
	return listeners{main: m, admin: a}, nil
}

func serve(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	ls, err := listen(cfg)
	if err != nil {
		return err
	}
	return serveOn(ctx, cfg, log, ls, time.Now, nil)
}

// serveOn runs both servers until ctx ends, then drains in-flight requests
// for up to server.shutdown_timeout. now is the clock of the second factor
// (codes, challenges, step-up proofs). ready, when set, is called with the
// bound addresses once the servers accept connections.
func serveOn(ctx context.Context, cfg config.Config, log *slog.Logger, ls listeners, now func() time.Time, ready func(main, admin net.Addr)) error {
	app, err := newApp(ctx, cfg, log, now)
	if err != nil {
		ls.main.Close()
		ls.admin.Close()
		return err
	}
	defer app.Close()
	bgCtx, stopBackground := context.WithCancel(ctx)
	var bg sync.WaitGroup
	for _, job := range app.background {
		bg.Go(func() { job(bgCtx) })
	}
	defer bg.Wait() // before app.Close: jobs use the store
	defer stopBackground()

	servers := []*http.Server{
		newServer(cfg.Server, app.main, log),
		newServer(cfg.Server, app.admin, log),
	}
	errc := make(chan error, len(servers))
	for i, l := range []net.Listener{ls.main, ls.admin} {
		go func() { errc <- servers[i].Serve(l) }()
	}
	if err := dialCheck(app.upstreamHost, cfg.Upstream.DialTimeout)(ctx); err != nil {
		log.Warn("upstream is not reachable yet; proxied requests get 502 until it answers",
			slog.String("upstream", cfg.Upstream.URL))
	}
	log.Info("totpgate started",
		slog.String("version", versionString()),
		slog.String("listen", ls.main.Addr().String()),
		slog.String("admin_listen", ls.admin.Addr().String()),
		slog.String("upstream", cfg.Upstream.URL),
		slog.String("api_prefix", cfg.API.Prefix))
	if ready != nil {
		ready(ls.main.Addr(), ls.admin.Addr())
	}

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", slog.Duration("grace", cfg.Server.ShutdownTimeout))
	case serveErr = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Server.ShutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	shutdownErrs := make([]error, len(servers))
	for i, s := range servers {
		wg.Go(func() { shutdownErrs[i] = s.Shutdown(sctx) })
	}
	wg.Wait()
	if errors.Is(serveErr, http.ErrServerClosed) {
		serveErr = nil
	}
	if err := errors.Join(append(shutdownErrs, serveErr)...); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("stopped")
	return nil
}

func newServer(c config.Server, h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: c.ReadHeaderTimeout,
		IdleTimeout:       c.IdleTimeout,
		MaxHeaderBytes:    c.MaxHeaderBytes,
		// No WriteTimeout: streamed downloads and server-sent events may run
		// for as long as the app keeps them open.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// dialCheck reports whether the upstream accepts TCP connections; it makes no
// assumption about the app's routes.
func dialCheck(addr string, timeout time.Duration) func(context.Context) error {
	return func(ctx context.Context) error {
		d := net.Dialer{Timeout: timeout}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return errors.New("upstream not reachable")
		}
		return c.Close()
	}
}
