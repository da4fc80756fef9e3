package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/totpgate/totpgate/config"
	"github.com/totpgate/totpgate/demo"
)

// demoCommand runs the demo app and the sidecar in front of it, on
// loopback with the embedded defaults (SQLite, local keyring), the
// self-service page on, and says what to open.
func demoCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listenAddr := fs.String("listen", "127.0.0.1:8080", "address of the sidecar (open it in a browser)")
	adminAddr := fs.String("admin-listen", "127.0.0.1:9090", "address of the admin listener (/metrics)")
	dir := fs.String("dir", "", "directory for the demo's SQLite file and keyring (default: a new temporary one)")
	if err := fs.Parse(args); err != nil {
		return &exitError{exitUsage, err}
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "totpgate-demo-")
		if err != nil {
			return err
		}
		*dir = d
	}
	appLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("demo app: %w", err)
	}
	appSrv := &http.Server{Handler: demo.New(), ReadHeaderTimeout: 10 * time.Second}
	go appSrv.Serve(appLn)
	defer appSrv.Close()

	cfg := config.Default()
	cfg.Listen, cfg.AdminListen = *listenAddr, *adminAddr
	cfg.Upstream.URL = "http://" + appLn.Addr().String()
	cfg.API.SelfService = true
	cfg.MFA.Issuer = "totpgate demo"
	cfg.Identity.AccountPointer = "/email"
	cfg.Session.Credentials = []string{"cookie:" + demo.SessionCookie}
	cfg.Store.Path = *dir + "/totpgate.db"
	cfg.Keyring.LocalPath = *dir + "/totpgate-keyring.json"
	cfg.Log.Level = "warn" // the audit lines are info: see /metrics, or run serve
	if err := cfg.Validate(); err != nil {
		return err
	}
	log, err := newLogger(stderr, cfg.Log.Level)
	if err != nil {
		return err
	}
	ls, err := listen(cfg)
	if err != nil {
		return err
	}
	err = serveOn(ctx, cfg, log, ls, time.Now, func(main, admin net.Addr) {
		fmt.Fprintf(stdout, `totpgate demo: a demo app, with totpgate in front of it.

  Open     http://%s/
  Log in   alice, bob or carol, password %s
  Then     turn on two-factor login on the settings page (a phone's authenticator app scans the QR code),
           log out, and log in again with the code, or with a recovery code.
  Metrics  http://%s/metrics

State (SQLite and keyring) is in %s. Ctrl-C stops the demo.
`, main, demo.Password, admin, *dir)
	})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
