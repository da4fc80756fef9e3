package main

import (
	"context"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/totpgate/totpgate/config"
	"github.com/totpgate/totpgate/gen"
	"github.com/totpgate/totpgate/totp"
)

// The journey of examples/typescript, through the Go client generated in
// gen/: enroll, confirm, log in with MFA in one call and in two, recover.
// The sidecar runs in-process in front of a small app on loopback.
func Example_clientJourney() {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/me": // who is calling: the app's session cookie
			c, err := r.Cookie("session")
			if err != nil {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			json.NewEncoder(w).Encode(map[string]string{"id": c.Value})
		case "/login": // any user, password "pw"
			var creds struct{ User, Password string }
			json.NewDecoder(r.Body).Decode(&creds)
			if creds.Password != "pw" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			json.NewEncoder(w).Encode(map[string]any{"token": "SESSION-" + creds.User, "user": map[string]string{"id": creds.User}})
		}
	}))
	defer app.Close()
	dir, _ := os.MkdirTemp("", "totpgate-example")
	defer os.RemoveAll(dir)
	cfg := config.Default()
	cfg.Listen, cfg.AdminListen, cfg.Upstream.URL = "127.0.0.1:0", "127.0.0.1:0", app.URL
	cfg.Store.Path, cfg.Keyring.LocalPath = filepath.Join(dir, "db"), filepath.Join(dir, "keys.json")
	ls, err := listen(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveOn(ctx, cfg, slog.New(slog.DiscardHandler), ls, time.Now, nil) }()
	defer func() { stop(); <-done }()
	base := "http://" + ls.main.Addr().String()
	for range 100 { // until the sidecar answers
		if res, err := http.Get(base + "/mfa/openapi.yaml"); err == nil {
			res.Body.Close()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The caller's app session identifies the user to the sidecar.
	c, _ := gen.NewClientWithResponses(base)
	asAlice := func(ctx context.Context, r *http.Request) error { r.Header.Set("Cookie", "session=alice"); return nil }

	en, _ := c.StartEnrollmentWithResponse(ctx, asAlice)
	fmt.Println("enroll:", en.StatusCode())
	secret, _ := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(en.JSON201.Secret)
	p := totp.DefaultParams()
	code := func(offset int64) string { return totp.Code(secret, p.Step(time.Now())+offset, p) }

	conf, _ := c.ConfirmEnrollmentWithResponse(ctx, gen.CodeRequest{Code: code(-1)}, asAlice)
	fmt.Println("confirm:", conf.StatusCode(), len(conf.JSON200.RecoveryCodes), "recovery codes")

	login := func(codeHeader string) (*http.Response, string) {
		req, _ := http.NewRequest("POST", base+"/login", strings.NewReader(`{"user":"alice","password":"pw"}`))
		if codeHeader != "" {
			req.Header.Set("X-TOTP-Code", codeHeader)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return &http.Response{}, err.Error()
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, string(b)
	}
	res, body := login(code(0))
	fmt.Println("one call:", res.StatusCode, strings.Contains(body, "SESSION-alice"))

	res, body = login("")
	var held struct {
		Code        string `json:"code"`
		ChallengeID string `json:"challenge_id"`
	}
	json.Unmarshal([]byte(body), &held)
	fmt.Println("two calls, first:", res.StatusCode, held.Code)
	second := code(1)
	ch, _ := c.CompleteChallengeWithResponse(ctx, gen.ChallengeRequest{ChallengeId: held.ChallengeID, Code: &second})
	fmt.Println("two calls, second:", ch.StatusCode(), strings.Contains(string(ch.Body), "SESSION-alice"))

	res, _ = login(conf.JSON200.RecoveryCodes[0])
	fmt.Println("recovery code:", res.StatusCode)
	st, _ := c.GetStatusWithResponse(ctx, asAlice)
	fmt.Println("status:", st.JSON200.State, st.JSON200.RecoveryCodesRemaining)
	// Output:
	// enroll: 201
	// confirm: 200 10 recovery codes
	// one call: 200 true
	// two calls, first: 401 mfa_required
	// two calls, second: 200 true
	// recovery code: 200
	// status: active 9
}
