package proxy_test

import (
	"context"
	"encoding/base32"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/totpgate/totpgate/identity"
	"github.com/totpgate/totpgate/mfa/mfatest"
	"github.com/totpgate/totpgate/proxy"
	"github.com/totpgate/totpgate/totp"
)

// An app that reads its token as Rails' token authenticator
// (/^(Token|Bearer)\s+/) or Django REST framework (header.split()) do: any
// whitespace after the scheme, Token as well as Bearer.
var lenientBearer = regexp.MustCompile(`(?i)^\s*(?:Bearer|Token)\s+(\S+)\s*$`)

// A stolen bearer token spelt the way the app reads it but the gate might
// not (a tab, two spaces, another case, another scheme) never skips the
// step-up: it is read as the session it is, or refused.
func TestStepUpReadsBearerTokensAsTheAppDoes(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	changes := 0
	tokens := map[string]string{"TA": "alice"}
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := ""
		if m := lenientBearer.FindStringSubmatch(r.Header.Get("Authorization")); m != nil {
			user = tokens[m[1]]
		}
		switch r.URL.Path {
		case "/api/me":
			if user == "" {
				w.WriteHeader(401)
				return
			}
			json.NewEncoder(w).Encode(map[string]string{"id": user})
		case "/settings/password":
			if user == "" {
				w.WriteHeader(401)
				return
			}
			mu.Lock()
			changes++
			mu.Unlock()
			json.NewEncoder(w).Encode(map[string]any{"changed_for": user})
		default:
			io.WriteString(w, "page")
		}
	}))
	defer app.Close()
	clock := mfatest.NewClock(time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC))
	svc := mfatest.New(t, clock.Now).Service
	// alice has MFA on
	en, err := svc.StartEnrollment(context.Background(), "alice", "alice")
	if err != nil {
		t.Fatal(err)
	}
	secret, _ := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(en.Secret)
	p := totp.DefaultParams()
	if _, err := svc.ConfirmEnrollment(context.Background(), "alice", totp.Code(secret, p.Step(clock.Now()), p)); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(app.URL)
	in, _ := identity.NewIntrospector(&http.Client{Timeout: 5 * time.Second}, app.URL+"/api/me", []string{"Authorization"}, "/id", "")
	tok, _ := identity.ParseCredential("json:token as bearer")
	tr := proxy.NewTransport(proxy.TransportOptions{DialTimeout: 2 * time.Second, ResponseHeaderTimeout: 10 * time.Second, IdleConnTimeout: time.Minute, MaxIdleConns: 4})
	f, err := proxy.New(proxy.Options{
		Upstream: u, Transport: tr, APIPrefix: "/mfa", Logger: slog.New(slog.DiscardHandler), API: http.NotFoundHandler(),
		Login: &proxy.LoginOptions{
			Paths: []string{"/login"}, CodeHeader: "X-TOTP-Code", CodeField: "totp_code", UserIDPointer: "/user/id",
			Challenge: stepUpChallenge, ChallengeURL: "/mfa/challenge", MFA: svc, MaxAnswerBytes: 1 << 20, Audit: &eventLog{},
			Credentials: []proxy.Credential{tok}, Introspector: in,
		},
		StepUp: &proxy.StepUpOptions{
			Routes:    []proxy.StepUpRoute{{Path: "/settings/password", Methods: []string{"POST"}, MaxAge: 5 * time.Minute}},
			Challenge: stepUpChallenge, ChallengeURL: "/mfa/step-up", MFA: svc, Audit: &eventLog{}, Now: clock.Now,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(f)
	defer front.Close()

	for _, tc := range []struct {
		auth string
		want int
	}{
		{"Bearer TA", 401}, {"Bearer\tTA", 401}, {"Bearer  TA", 401}, {"bearer TA", 401}, {" Bearer TA ", 401},
		{"Token TA", 400}, // a scheme the gate does not read as a session: refused, not let through
	} {
		req, _ := http.NewRequest("POST", front.URL+"/settings/password", strings.NewReader(`{"password":"pwned"}`))
		req.Header.Set("Authorization", tc.auth)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tc.want {
			t.Errorf("Authorization %q: %d %s, want %d", tc.auth, res.StatusCode, strings.TrimSpace(string(b)), tc.want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if changes != 0 {
		t.Errorf("the app changed alice's password %d times without a step-up code", changes)
	}
}
