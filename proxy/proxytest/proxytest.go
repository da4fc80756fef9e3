// Package proxytest builds the proxy for benchmarks and tests of other
// packages: the login gate in front of an app, with the settings the
// benchmarks share, so each measures the same gate.
package proxytest

import (
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/totpgate/totpgate/audit"
	"github.com/totpgate/totpgate/mfa"
	"github.com/totpgate/totpgate/proxy"
)

// LoginFront is a front with the login gate on /login in front of
// upstream (the user id at /user/id of the app's answer, the code in
// X-TOTP-Code or totp_code), checking codes with svc, logging nothing.
// maxIdle bounds the idle connections to the app.
func LoginFront(upstream *url.URL, svc *mfa.Service, maxIdle int) (*proxy.Front, error) {
	discard := slog.New(slog.DiscardHandler)
	return proxy.New(proxy.Options{
		Upstream:  upstream,
		Transport: proxy.NewTransport(proxy.TransportOptions{DialTimeout: time.Second, ResponseHeaderTimeout: 5 * time.Second, IdleConnTimeout: time.Minute, MaxIdleConns: maxIdle}),
		APIPrefix: "/mfa", API: http.NotFoundHandler(), Logger: discard,
		Login: &proxy.LoginOptions{
			Paths: []string{"/login"}, CodeHeader: "X-TOTP-Code", CodeField: "totp_code", UserIDPointer: "/user/id",
			Challenge: mfa.ChallengeConfig{TTL: time.Minute, MaxAttempts: 5}, ChallengeURL: "/mfa/challenge",
			MFA: svc, MaxAnswerBytes: 1 << 20, Audit: audit.NewLog(discard),
		},
	})
}
