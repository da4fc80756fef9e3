package vaultkeys

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	vault "github.com/hashicorp/vault/api"
	"github.com/totpgate/totpgate/internal/backoff"
)

// Auth is a way to obtain a Vault token.
type Auth interface {
	// Name is the method, for logs and readiness ("token", "kubernetes", "approle").
	Name() string
	// Login returns a token with its lease (Auth.ClientToken, Renewable,
	// LeaseDuration). It may use c, but must not rely on c's current token.
	Login(ctx context.Context, c *vault.Client) (*vault.SecretAuth, error)
}

// Token authenticates with a fixed token, or one read from File (a Vault
// Agent sink, a mounted Secret), which is re-read when it changes.
type Token struct {
	Value string
	File  string
	// PollInterval is how often File is checked for a new token.
	PollInterval time.Duration
}

// Name implements Auth.
func (Token) Name() string { return "token" }

// Login looks the token up to learn whether and for how long it can be
// renewed.
func (t Token) Login(ctx context.Context, c *vault.Client) (*vault.SecretAuth, error) {
	tok, err := t.read()
	if err != nil {
		return nil, err
	}
	clone, err := c.Clone()
	if err != nil {
		return nil, err
	}
	clone.SetToken(tok)
	s, err := clone.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("token lookup: %w", mapError(err))
	}
	renewable, _ := s.TokenIsRenewable()
	ttl, _ := s.TokenTTL()
	return &vault.SecretAuth{ClientToken: tok, Renewable: renewable, LeaseDuration: int(ttl / time.Second)}, nil
}

func (t Token) read() (string, error) {
	if t.File == "" {
		if t.Value == "" {
			return "", errors.New("no token configured")
		}
		return t.Value, nil
	}
	b, err := os.ReadFile(t.File)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", errors.New("token file is empty")
	}
	return tok, nil
}

// Kubernetes logs in with the pod's service-account token.
type Kubernetes struct {
	Mount string // auth mount, e.g. "kubernetes"
	Role  string
	// TokenFile is the projected service-account token, read at each login
	// because the kubelet rotates it.
	TokenFile string
}

// Name implements Auth.
func (Kubernetes) Name() string { return "kubernetes" }

// Login implements Auth.
func (k Kubernetes) Login(ctx context.Context, c *vault.Client) (*vault.SecretAuth, error) {
	jwt, err := os.ReadFile(k.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("read service account token: %w", err)
	}
	return writeLogin(ctx, c, k.Mount, map[string]any{"role": k.Role, "jwt": string(bytes.TrimSpace(jwt))})
}

// AppRole logs in with a role id and a secret id read from a file.
type AppRole struct {
	Mount        string // auth mount, e.g. "approle"
	RoleID       string
	SecretIDFile string
}

// Name implements Auth.
func (AppRole) Name() string { return "approle" }

// Login implements Auth.
func (a AppRole) Login(ctx context.Context, c *vault.Client) (*vault.SecretAuth, error) {
	sid, err := os.ReadFile(a.SecretIDFile)
	if err != nil {
		return nil, fmt.Errorf("read secret id: %w", err)
	}
	return writeLogin(ctx, c, a.Mount, map[string]any{"role_id": a.RoleID, "secret_id": string(bytes.TrimSpace(sid))})
}

func writeLogin(ctx context.Context, c *vault.Client, mount string, body map[string]any) (*vault.SecretAuth, error) {
	clone, err := c.Clone()
	if err != nil {
		return nil, err
	}
	clone.ClearToken()
	s, err := clone.Logical().WriteWithContext(ctx, "auth/"+mount+"/login", body)
	if err != nil {
		return nil, mapError(err)
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return nil, errors.New("login answered without a token")
	}
	return s.Auth, nil
}

// session keeps the client's token valid: it renews the token before it
// expires and logs in again when renewal is no longer possible (max TTL
// reached, token revoked). Its state feeds readiness.
type session struct {
	client *vault.Client
	auth   Auth
	log    *slog.Logger

	relogin chan struct{} // nudged when Vault refuses the token

	mu      sync.Mutex
	current *vault.SecretAuth
	err     error // why the last login or renewal failed; nil when healthy
	expires time.Time
	watcher *vault.LifetimeWatcher
}

func newSession(c *vault.Client, a Auth, log *slog.Logger) *session {
	return &session{client: c, auth: a, log: log, relogin: make(chan struct{}, 1)}
}

func (s *session) login(ctx context.Context) error {
	auth, err := s.auth.Login(ctx, s.client)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.err = fmt.Errorf("%s login failed: %w", s.auth.Name(), err)
		return err
	}
	s.client.SetToken(auth.ClientToken)
	s.current = auth
	s.err = nil
	s.expires = time.Time{}
	if auth.LeaseDuration > 0 {
		s.expires = time.Now().Add(time.Duration(auth.LeaseDuration) * time.Second)
	}
	return nil
}

// fail records a problem found after login (the transit key is unusable)
// for readiness.
func (s *session) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
}

// healthy is nil while the session holds a token believed valid.
func (s *session) healthy() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	if !s.expires.IsZero() && time.Now().After(s.expires) {
		return errors.New("vault token expired and not yet renewed")
	}
	return nil
}

// nudge asks run to log in again (Vault answered 403 to the token).
func (s *session) nudge() {
	select {
	case s.relogin <- struct{}{}:
	default:
	}
}

func (s *session) stopWatcher() {
	s.mu.Lock()
	w := s.watcher
	s.watcher = nil
	s.mu.Unlock()
	if w != nil {
		w.Stop()
	}
}

// run keeps the token alive until ctx ends. When the first login has not
// succeeded yet (Vault was down at start), it logs in first and then calls
// onFirstLogin.
func (s *session) run(ctx context.Context, onFirstLogin func(context.Context)) {
	defer s.stopWatcher()
	tok, fileToken := s.auth.(Token)
	fileToken = fileToken && tok.File != ""
	var poll <-chan time.Time
	if fileToken {
		interval := tok.PollInterval
		if interval <= 0 {
			interval = 5 * time.Second
		}
		t := time.NewTicker(interval)
		defer t.Stop()
		poll = t.C
	}
	for {
		if !s.loggedIn() {
			if !s.loginUntilDone(ctx) {
				return
			}
			if onFirstLogin != nil {
				onFirstLogin(ctx)
				onFirstLogin = nil
			}
		}
		// A file token is renewed by whoever writes the file (Vault Agent);
		// other tokens are renewed here.
		var done <-chan error
		var renewed <-chan *vault.RenewOutput
		if !fileToken {
			done, renewed = s.watch()
		}
		select {
		case <-ctx.Done():
			return
		case r := <-renewed:
			s.mu.Lock()
			if r != nil && r.Secret != nil && r.Secret.Auth != nil {
				s.expires = time.Now().Add(time.Duration(r.Secret.Auth.LeaseDuration) * time.Second)
			}
			s.mu.Unlock()
			continue
		case err := <-done:
			if err != nil {
				s.log.Warn("vault token renewal failed; logging in again", "method", s.auth.Name(), "error", err)
			} else {
				s.log.Info("vault token reached its max TTL; logging in again", "method", s.auth.Name())
			}
		case <-poll:
			if !s.tokenFileChanged(tok) {
				continue
			}
		case <-s.relogin:
			s.log.Warn("vault refused the token; logging in again", "method", s.auth.Name())
		}
		s.stopWatcher()
		if !s.loginUntilDone(ctx) {
			return
		}
	}
}

// loginUntilDone logs in, retrying with backoff; false when ctx ended.
func (s *session) loginUntilDone(ctx context.Context) bool {
	for failures := 1; ; failures++ {
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := s.login(lctx)
		cancel()
		if err == nil {
			return true
		}
		wait := backoff.Policy{Min: 200 * time.Millisecond, Max: 30 * time.Second}.Wait(failures)
		s.log.Error("vault login failed", "method", s.auth.Name(), "error", err, "retry_in", wait.String())
		if backoff.Sleep(ctx, wait) != nil {
			return false
		}
	}
}

// loggedIn reports whether a login has succeeded at least once.
func (s *session) loggedIn() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current != nil
}

// watch starts a lifetime watcher on the current token when it can be
// renewed, and returns its channels (nil channels when it cannot).
func (s *session) watch() (<-chan error, <-chan *vault.RenewOutput) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.watcher == nil {
		if s.current == nil || !s.current.Renewable || s.current.LeaseDuration <= 0 {
			return nil, nil
		}
		w, err := s.client.NewLifetimeWatcher(&vault.LifetimeWatcherInput{
			Secret: &vault.Secret{Auth: s.current},
		})
		if err != nil {
			s.err = fmt.Errorf("token renewal: %w", err)
			return nil, nil
		}
		s.watcher = w
		go w.Start()
	}
	return s.watcher.DoneCh(), s.watcher.RenewCh()
}

func (s *session) tokenFileChanged(t Token) bool {
	tok, err := t.read()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.log.Warn("vault token file unreadable; keeping the current token", "error", err)
		return false
	}
	return s.current == nil || tok != s.current.ClientToken
}
