package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/totpgate/totpgate/gen"
)

// Exit codes of `totpgate users`, for scripts.
const (
	exitFailed       = 1 // the call failed (network, 5xx, unexpected answer)
	exitUsage        = 2
	exitNotFound     = 3 // the user has no MFA record
	exitUnauthorized = 4 // the admin token was refused or missing
)

// exitError carries an exit code to main.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// ExitCode is what main exits with.
func (e *exitError) ExitCode() int { return e.code }

const usersUsage = `usage: totpgate users get|reset|unlock USER [flags]
       totpgate users import FILE [--dry-run] [--recovery-codes OUT] [--issuer NAME]
       totpgate users export --out FILE --i-understand-this-writes-secrets

  get USER      print the user's MFA record as JSON (state, failures, lock, codes left; never a secret)
  reset USER    remove the user's MFA (they enroll again); held logins of the user are revoked
  unlock USER   lift a lockout
  import FILE   turn on the TOTP secrets an app already has, without re-enrollment: one a line,
                otpauth://totp/... URIs, otpauth-migration:// exports, or CSV user_id,secret[,algorithm,digits,period].
                Works on the store and keyring directly. Every line is checked first: one bad line
                (weak or malformed secret, a user with a different second factor) imports nothing (exit 5).
                Rerunning changes nothing. Secrets are never printed.
  export        write every active user's secret as an otpauth:// URI to a new 0600 file, for leaving
                totpgate (users import reads it back). Needs the explicit flag.

Flags:
  --admin-url URL     the admin listener (default: http://<admin_listen> of the configuration)
  --token-file FILE   file holding the admin bearer token (default: admin.token_file, or admin.token)

Configuration (admin_listen, admin.token, admin.token_file) is read like serve's.
Exit codes: 0 done, 1 failed, 2 usage, 3 no such user, 4 admin token refused, 5 import lines refused.
`

// usersCommand runs the admin user operations over the admin API.
func usersCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) >= 1 && args[0] == "export" {
		return exportCommand(ctx, args[1:], getenv, stdout, stderr)
	}
	if len(args) < 2 || strings.HasPrefix(args[1], "-") {
		fmt.Fprint(stderr, usersUsage)
		return &exitError{exitUsage, errUsage}
	}
	op, user := args[0], args[1]
	if op == "import" {
		return importCommand(ctx, args[1:], getenv, stdout, stderr)
	}
	if op != "get" && op != "reset" && op != "unlock" {
		fmt.Fprint(stderr, usersUsage)
		return &exitError{exitUsage, errUsage}
	}
	var adminURL, tokenFile string
	cfg, err := loadConfigWith("users "+op, args[2:], getenv, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&adminURL, "admin-url", "", "admin listener URL")
		fs.StringVar(&tokenFile, "token-file", "", "file holding the admin bearer token")
	})
	if err != nil {
		return &exitError{exitUsage, err}
	}
	if adminURL == "" {
		host := cfg.AdminListen
		if strings.HasPrefix(host, ":") {
			host = "127.0.0.1" + host
		}
		adminURL = "http://" + host
	}
	token := cfg.Admin.Token
	if tokenFile == "" {
		tokenFile = cfg.Admin.TokenFile
	}
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return &exitError{exitUnauthorized, fmt.Errorf("users: admin token file: %w", err)}
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return &exitError{exitUnauthorized, errors.New("users: no admin token: set admin.token_file (TOTPGATE_ADMIN_TOKEN_FILE) or --token-file")}
	}
	c, err := gen.NewClientWithResponses(strings.TrimSuffix(adminURL, "/"), gen.WithHTTPClient(&http.Client{Timeout: 30 * time.Second}),
		gen.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
			r.Header.Set("Authorization", "Bearer "+token)
			return nil
		}))
	if err != nil {
		return &exitError{exitUsage, fmt.Errorf("users: --admin-url: %w", err)}
	}
	var res *http.Response
	var body []byte
	var record *gen.AdminUser
	switch op {
	case "get":
		r, err := c.AdminGetUserWithResponse(ctx, user)
		if err != nil {
			return &exitError{exitFailed, fmt.Errorf("users: %w", err)}
		}
		res, body, record = r.HTTPResponse, r.Body, r.JSON200
	case "reset":
		r, err := c.AdminResetUserWithResponse(ctx, user)
		if err != nil {
			return &exitError{exitFailed, fmt.Errorf("users: %w", err)}
		}
		res, body = r.HTTPResponse, r.Body
	case "unlock":
		r, err := c.AdminUnlockUserWithResponse(ctx, user)
		if err != nil {
			return &exitError{exitFailed, fmt.Errorf("users: %w", err)}
		}
		res, body = r.HTTPResponse, r.Body
	}
	switch {
	case res.StatusCode == http.StatusNotFound:
		return &exitError{exitNotFound, fmt.Errorf("users: %s: no MFA record for %q", op, user)}
	case res.StatusCode == http.StatusUnauthorized:
		return &exitError{exitUnauthorized, errors.New("users: the admin API refused the token")}
	case res.StatusCode >= 300:
		return &exitError{exitFailed, fmt.Errorf("users: %s: the admin API answered %d: %s", op, res.StatusCode, problemDetail(body))}
	}
	if record != nil {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(record)
	}
	past := map[string]string{"reset": "reset", "unlock": "unlocked"}[op]
	fmt.Fprintf(stdout, "%s %s\n", past, user)
	return nil
}

// problemDetail is the detail of a problem+json answer, for the message.
func problemDetail(body []byte) string {
	var p struct{ Detail, Code string }
	if json.Unmarshal(body, &p) != nil || p.Code == "" {
		return "(no problem details)"
	}
	return p.Code + ": " + p.Detail
}
