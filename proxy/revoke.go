package proxy

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/totpgate/totpgate/mfa"
)

// NewRevoker returns a function that asks the app to end a session it
// issued in a login answer that will never be released: it sends
// POST {upstream}{path} carrying the cookies that answer set. Failures are
// logged; the session never reached the client either way.
func NewRevoker(upstream *url.URL, path string, transport http.RoundTripper, timeout time.Duration, log *slog.Logger) func(context.Context, mfa.HeldAnswer) {
	target := upstream.JoinPath(path).String()
	client := &http.Client{Transport: transport, Timeout: timeout}
	return func(ctx context.Context, a mfa.HeldAnswer) {
		cookies := (&http.Response{Header: a.Header}).Cookies()
		if len(cookies) == 0 {
			return // nothing to name the session by
		}
		req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodPost, target, http.NoBody)
		if err != nil {
			return
		}
		for _, c := range cookies {
			req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
		}
		res, err := client.Do(req)
		if err != nil {
			log.WarnContext(ctx, "revoke call to the app failed", slog.String("error", err.Error()))
			return
		}
		res.Body.Close()
		if res.StatusCode >= 400 {
			log.WarnContext(ctx, "revoke call to the app refused", slog.Int("status", res.StatusCode))
		}
	}
}
