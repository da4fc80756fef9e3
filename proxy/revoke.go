package proxy

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/totpgate/totpgate/audit"
	"github.com/totpgate/totpgate/internal/backoff"
	"github.com/totpgate/totpgate/mfa"
)

// RevokerOptions configures the call that ends, at the app, a session
// held in a login answer that will never be released.
type RevokerOptions struct {
	Upstream     *url.URL
	Method, Path string // e.g. POST /logout
	Transport    http.RoundTripper
	Timeout      time.Duration // per attempt
	// Credentials say where the session is in an answer and how it is
	// presented back; with none, every cookie the answer set is sent back.
	Credentials []Credential
	Attempts    int           // tries on connection errors, 429 and 5xx
	Backoff     time.Duration // before the second try; doubled, with jitter
	Log         *slog.Logger
	Audit       audit.Recorder
}

// Revoker implements mfa.Revoker with a call to the app.
type Revoker struct {
	o      RevokerOptions
	target string
	creds  *credentials
	client *http.Client
}

// NewRevoker builds the revoker; the call never follows redirects.
func NewRevoker(o RevokerOptions) *Revoker {
	if o.Method == "" {
		o.Method = http.MethodPost
	}
	o.Attempts = max(o.Attempts, 1)
	return &Revoker{
		o: o, target: o.Upstream.JoinPath(o.Path).String(), creds: newCredentials(o.Credentials),
		client: &http.Client{Transport: o.Transport, Timeout: o.Timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
	}
}

// presented is one credential value and how the app takes it back.
type presented struct {
	As     string `json:"as"`
	AsName string `json:"as_name,omitempty"`
	Value  string `json:"value"`
}

// Material lists the session credentials of a held answer.
func (r *Revoker) Material(a mfa.HeldAnswer) []byte {
	var out []presented
	if r.creds.empty() {
		for _, c := range (&http.Response{Header: a.Header}).Cookies() {
			out = append(out, presented{As: "cookie", AsName: c.Name, Value: c.Value})
		}
	} else {
		found := r.creds.fromHeaders(a.Header)
		if r.creds.inBody() {
			pointers, keys := r.creds.scanTargets()
			if facts, err := scanJSON(a.Body, pointers, keys); err == nil {
				found = append(found, r.creds.fromJSON(facts)...)
			}
		}
		for _, f := range found {
			out = append(out, presented{As: f.Credential.As, AsName: f.Credential.AsName, Value: f.Value})
		}
	}
	if len(out) == 0 {
		return nil
	}
	b, _ := json.Marshal(out)
	return b
}

// Revoke calls the app in the background, retrying with backoff, and
// records the outcome (session_revoked: ok, refused, failed).
func (r *Revoker) Revoke(ctx context.Context, user string, material []byte, why string) {
	var list []presented
	if json.Unmarshal(material, &list) != nil || len(list) == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx)
	go func() {
		outcome := r.call(ctx, list)
		r.o.Audit.Record(ctx, audit.Event{Name: audit.SessionRevoked, UserID: user, Route: why, Outcome: outcome})
		if outcome != "ok" {
			r.o.Log.WarnContext(ctx, "revoking a held session at the app did not succeed", slog.String("reason", why), slog.String("outcome", outcome))
		}
	}()
}

func (r *Revoker) call(ctx context.Context, list []presented) string {
	for attempt := 1; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, r.o.Method, r.target, http.NoBody)
		if err != nil {
			return "failed"
		}
		for _, p := range list {
			Credential{As: p.As, AsName: p.AsName}.Present(req.Header, p.Value)
		}
		res, err := r.client.Do(req)
		retry := err != nil
		if err == nil {
			res.Body.Close()
			switch {
			case res.StatusCode < 400:
				return "ok"
			case res.StatusCode == http.StatusTooManyRequests || res.StatusCode >= 500:
				retry = true
			default:
				return "refused"
			}
		}
		if !retry || attempt >= r.o.Attempts {
			return "failed"
		}
		if backoff.Sleep(ctx, backoff.Policy{Min: r.o.Backoff, Max: 30 * r.o.Backoff}.Wait(attempt)) != nil {
			return "failed"
		}
	}
}

var _ mfa.Revoker = (*Revoker)(nil)
