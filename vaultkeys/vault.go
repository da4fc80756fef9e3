// Package vaultkeys implements keyring.Keyring on HashiCorp Vault's transit
// secrets engine.
//
// The transit key is derived (derived=true) and every call passes the
// binding (for a user's secret "user:" + the user id, see store.Binding)
// as the derivation context, so each user's secret is sealed under its own
// key and a ciphertext copied into another user's row does not decrypt.
// Ciphertexts are stored exactly as Vault returns them ("vault:vN:..."),
// which keyring.ParseVersion reads without asking Vault. Rotation, rewrap
// (batch_input, plaintext never leaves Vault) and the minimum decryption
// version map one to one onto transit endpoints.
package vaultkeys

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	vault "github.com/hashicorp/vault/api"

	"github.com/totpgate/totpgate/internal/backoff"
	"github.com/totpgate/totpgate/internal/setting"
	"github.com/totpgate/totpgate/keyring"
)

// Config is what Open needs. The zero value is not usable: Address, Mount,
// KeyName and Auth are required.
type Config struct {
	Address string
	// TLS: CA bundle, client certificate and key files, and the SNI name.
	CACert, ClientCert, ClientKey, TLSServerName string

	Mount   string // transit mount path, e.g. "transit"
	KeyName string // transit key name
	// CreateKey creates the key (aes256-gcm96, derived) when it is missing;
	// otherwise a missing key is an error at Open.
	CreateKey bool

	// Timeout bounds one operation, retries included: a login waiting on
	// Vault fails closed after this long.
	Timeout time.Duration
	// MaxRetries is how often a request is retried after a connection
	// error, 429 or 5xx (never after another 4xx).
	MaxRetries int
	// RetryWaitMin and RetryWaitMax bound the jittered exponential backoff.
	RetryWaitMin, RetryWaitMax time.Duration

	Auth   Auth
	Logger *slog.Logger
}

// SettingErrors checks the settings a configuration file gives under
// keyring.vault (not Auth, Logger or the retry waits, which the caller
// builds): every problem.
func (c Config) SettingErrors() setting.Errors {
	var errs setting.Errors
	add := errs.Add
	if !setting.IsHTTPURL(c.Address) {
		add("address", "%q must be an http(s) URL", c.Address)
	}
	if c.Mount == "" || strings.Trim(c.Mount, "/") != c.Mount {
		add("mount", "%q must be a path without leading or trailing slashes", c.Mount)
	}
	if c.KeyName == "" || strings.ContainsAny(c.KeyName, "/ ") {
		add("key", "%q must be one path segment", c.KeyName)
	}
	if (c.ClientCert == "") != (c.ClientKey == "") {
		add("client_cert", "set client_cert and client_key both or neither")
	}
	if c.Timeout <= 0 {
		add("timeout", "must be positive")
	}
	if c.MaxRetries < 0 {
		add("max_retries", "must not be negative")
	}
	return errs
}

// Validate reports every missing or out-of-range setting.
func (c Config) Validate() error {
	var errs []error
	for _, e := range c.SettingErrors() {
		errs = append(errs, fmt.Errorf("vaultkeys: %w", e))
	}
	if c.RetryWaitMin < 0 || c.RetryWaitMax < c.RetryWaitMin {
		errs = append(errs, errors.New("vaultkeys: retry waits must satisfy 0 <= min <= max"))
	}
	if c.Auth == nil {
		errs = append(errs, errors.New("vaultkeys: an auth method is required"))
	}
	return errors.Join(errs...)
}

// Keys is a keyring.Keyring on one transit key. Safe for concurrent use.
type Keys struct {
	client  *vault.Client
	cfg     Config
	log     *slog.Logger
	session *session
	stop    context.CancelFunc
	done    chan struct{}
}

var _ keyring.Keyring = (*Keys)(nil)

// Open builds the client, logs in and checks (or creates) the transit key.
// It keeps the Vault token alive in the background until Close.
func Open(ctx context.Context, cfg Config) (*Keys, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	client, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "vaultkeys")
	k := &Keys{client: client, cfg: cfg, log: log, done: make(chan struct{})}
	k.session = newSession(client, cfg.Auth, log)
	loginCtx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	err = k.session.login(loginCtx)
	cancel()
	var onFirstLogin func(context.Context)
	switch {
	case err != nil && !transient(err):
		return nil, fmt.Errorf("vaultkeys: login (%s): %w", cfg.Auth.Name(), err)
	case err != nil:
		// Vault is down or sealed: start anyway, so the app's traffic flows;
		// operations fail closed until the background login succeeds.
		log.Warn("vault not reachable at start; second-factor checks fail until it is", "error", err.Error())
		onFirstLogin = func(ctx context.Context) {
			if err := k.ensureKey(ctx); err != nil {
				k.session.fail(err)
				log.Error("vault transit key not usable", "error", err.Error())
			}
		}
	default:
		if err := k.ensureKey(ctx); err != nil {
			return nil, err
		}
	}
	bg, stop := context.WithCancel(context.Background())
	k.stop = stop
	go func() {
		defer close(k.done)
		k.session.run(bg, onFirstLogin)
	}()
	return k, nil
}

// transient reports whether err may go away by itself: no answer, 429 or
// 5xx. A 4xx (bad token, wrong role) is a configuration error.
func transient(err error) bool {
	var ve *vaultError
	if !errors.As(err, &ve) {
		return false
	}
	return ve.status == 0 || ve.status == http.StatusTooManyRequests || ve.status >= 500
}

// Close stops renewing the token. It does not revoke it: another replica
// or a Vault Agent may share it.
func (k *Keys) Close() error {
	if k.stop != nil {
		k.stop()
		<-k.done
	}
	return nil
}

func newClient(cfg Config) (*vault.Client, error) {
	vc := vault.DefaultConfig()
	if vc.Error != nil {
		return nil, fmt.Errorf("vaultkeys: client config: %w", vc.Error)
	}
	vc.Address = cfg.Address
	vc.MaxRetries = cfg.MaxRetries
	vc.MinRetryWait = cfg.RetryWaitMin
	vc.MaxRetryWait = cfg.RetryWaitMax
	vc.Timeout = cfg.Timeout
	vc.CheckRetry = retryPolicy
	// The client counts its retries from 0.
	vc.Backoff = func(minWait, maxWait time.Duration, attempt int, _ *http.Response) time.Duration {
		return backoff.Policy{Min: minWait, Max: maxWait}.Wait(attempt + 1)
	}
	if err := vc.ConfigureTLS(&vault.TLSConfig{
		CACert: cfg.CACert, ClientCert: cfg.ClientCert, ClientKey: cfg.ClientKey, TLSServerName: cfg.TLSServerName,
	}); err != nil {
		return nil, fmt.Errorf("vaultkeys: tls: %w", err)
	}
	c, err := vault.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vaultkeys: client: %w", err)
	}
	// NewClient picks up VAULT_TOKEN from the environment; the configured
	// auth method is the only source of the token.
	c.ClearToken()
	return c, nil
}

// retryPolicy retries connection errors, 429 and 5xx (except 501), and
// nothing else: a 4xx is an answer, and repeating it only adds load.
func retryPolicy(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
}

func (k *Keys) path(op string) string {
	return k.cfg.Mount + "/" + op + "/" + k.cfg.KeyName
}

// call runs one Vault request under the operation timeout and maps its
// error onto the keyring sentinels.
func (k *Keys) call(ctx context.Context, op string, fn func(ctx context.Context) (*vault.Secret, error)) (*vault.Secret, error) {
	if !k.session.loggedIn() {
		return nil, fmt.Errorf("vaultkeys: %s: %w: not logged in to Vault yet", op, keyring.ErrUnavailable)
	}
	ctx, cancel := context.WithTimeout(ctx, k.cfg.Timeout)
	defer cancel()
	s, err := fn(ctx)
	if err != nil {
		var re *vault.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusForbidden {
			k.session.nudge() // revoked or expired token: log in again
		}
		return nil, fmt.Errorf("vaultkeys: %s: %w", op, mapError(err))
	}
	return s, nil
}

// vaultError is a failed Vault call reduced to a keyring sentinel and the
// HTTP status (0: no answer). Vault's own message is dropped: it names no
// key material, but it could echo input.
type vaultError struct {
	sentinel error
	status   int
	cause    error // only for connection errors, which carry no input
}

func (e *vaultError) Error() string {
	switch {
	case e.cause != nil:
		return fmt.Sprintf("%v: %v", e.sentinel, e.cause)
	case e.status == http.StatusForbidden:
		return fmt.Sprintf("%v: permission denied (vault 403)", e.sentinel)
	default:
		return fmt.Sprintf("%v (vault %d)", e.sentinel, e.status)
	}
}

func (e *vaultError) Unwrap() error { return e.sentinel }

// mapError turns a Vault error into a *vaultError with a keyring sentinel.
func mapError(err error) error {
	var re *vault.ResponseError
	if !errors.As(err, &re) {
		return &vaultError{sentinel: keyring.ErrUnavailable, cause: err}
	}
	msg := strings.ToLower(strings.Join(re.Errors, "; "))
	bad := re.StatusCode == http.StatusBadRequest
	sentinel := keyring.ErrUnavailable
	switch {
	case bad && strings.Contains(msg, "message authentication failed"):
		sentinel = keyring.ErrDecrypt
	case bad && strings.Contains(msg, "disallowed by policy"):
		sentinel = keyring.ErrVersionRetired
	case bad && strings.Contains(msg, "invalid key version"):
		sentinel = keyring.ErrUnknownVersion
	case bad && (strings.Contains(msg, "ciphertext") || strings.Contains(msg, "base64")):
		sentinel = keyring.ErrMalformed
	}
	return &vaultError{sentinel: sentinel, status: re.StatusCode}
}

func encodeContext(bindTo string) (string, error) {
	if bindTo == "" {
		return "", errors.New("bindTo must not be empty")
	}
	return base64.StdEncoding.EncodeToString([]byte(bindTo)), nil
}

// Encrypt seals plaintext under the latest key version, derived for bindTo.
func (k *Keys) Encrypt(ctx context.Context, bindTo string, plaintext []byte) (string, error) {
	kctx, err := encodeContext(bindTo)
	if err != nil {
		return "", fmt.Errorf("vaultkeys: encrypt: %w", err)
	}
	s, err := k.call(ctx, "encrypt", func(ctx context.Context) (*vault.Secret, error) {
		return k.client.Logical().WriteWithContext(ctx, k.path("encrypt"), map[string]any{
			"plaintext": base64.StdEncoding.EncodeToString(plaintext),
			"context":   kctx,
		})
	})
	if err != nil {
		return "", err
	}
	ct, _ := dataString(s, "ciphertext")
	if _, _, err := keyring.ParseVersion(ct); err != nil {
		return "", fmt.Errorf("vaultkeys: encrypt: unexpected answer: %w", err)
	}
	return ct, nil
}

// Decrypt opens a ciphertext with the key derived for bindTo.
func (k *Keys) Decrypt(ctx context.Context, bindTo string, ciphertext string) ([]byte, error) {
	kctx, err := encodeContext(bindTo)
	if err != nil {
		return nil, fmt.Errorf("vaultkeys: decrypt: %w", err)
	}
	if backend, _, err := keyring.ParseVersion(ciphertext); err != nil || backend != keyring.BackendVault {
		return nil, fmt.Errorf("vaultkeys: decrypt: %w: not a vault ciphertext", keyring.ErrMalformed)
	}
	s, err := k.call(ctx, "decrypt", func(ctx context.Context) (*vault.Secret, error) {
		return k.client.Logical().WriteWithContext(ctx, k.path("decrypt"), map[string]any{
			"ciphertext": ciphertext,
			"context":    kctx,
		})
	})
	if err != nil {
		return nil, err
	}
	b64, _ := dataString(s, "plaintext")
	pt, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("vaultkeys: decrypt: unexpected answer: bad base64")
	}
	return pt, nil
}

// Rewrap moves ciphertexts to the latest key version inside Vault, in one
// batch request. Items that are not vault ciphertexts fail individually.
func (k *Keys) Rewrap(ctx context.Context, items []keyring.Item) ([]keyring.Result, error) {
	results := make([]keyring.Result, len(items))
	batch := make([]rewrapItem, 0, len(items))
	index := make([]int, 0, len(items)) // batch position -> item position
	for i, it := range items {
		kctx, err := encodeContext(it.BindTo)
		if err == nil {
			if backend, _, perr := keyring.ParseVersion(it.Ciphertext); perr != nil || backend != keyring.BackendVault {
				err = fmt.Errorf("%w: not a vault ciphertext", keyring.ErrMalformed)
			}
		}
		if err != nil {
			results[i] = keyring.Result{Err: fmt.Errorf("vaultkeys: rewrap item %d: %w", i, err)}
			continue
		}
		batch = append(batch, rewrapItem{Ciphertext: it.Ciphertext, Context: kctx})
		index = append(index, i)
	}
	if len(batch) == 0 {
		return results, nil
	}
	body, err := json.Marshal(rewrapRequest{BatchInput: batch})
	if err != nil {
		return nil, fmt.Errorf("vaultkeys: rewrap: %w", err)
	}
	var answer rewrapAnswer
	_, err = k.call(ctx, "rewrap", func(ctx context.Context) (*vault.Secret, error) {
		req := k.client.NewRequest(http.MethodPut, "/v1/"+k.path("rewrap"))
		req.BodyBytes = body
		// Logical().WriteRawWithContext cancels its context before the
		// answer is read (hashicorp/vault#31986), so a large answer fails
		// with "context canceled"; this is the call its read and delete
		// paths make. ctx bounds the call and lives until the answer is
		// decoded.
		//lint:ignore SA1019 see above
		resp, err := k.client.RawRequestWithContext(ctx, req)
		if resp != nil {
			defer resp.Body.Close()
		}
		if err != nil {
			return nil, err
		}
		return nil, resp.DecodeJSON(&answer)
	})
	var ve *vaultError
	if err != nil && errors.As(err, &ve) && ve.status == http.StatusBadRequest && len(batch) > 1 {
		// Vault answers 400 without per-item results when every item of
		// a batch fails; find out which failed and why one at a time.
		return k.rewrapEach(ctx, items, results, index)
	}
	if err != nil {
		return nil, err
	}
	got := answer.Data.BatchResults
	if len(got) != len(batch) {
		return nil, fmt.Errorf("vaultkeys: rewrap: %w: %d results for %d items", keyring.ErrUnavailable, len(got), len(batch))
	}
	for j, r := range got {
		results[index[j]] = r.result(index[j])
	}
	return results, nil
}

func (k *Keys) rewrapEach(ctx context.Context, items []keyring.Item, results []keyring.Result, index []int) ([]keyring.Result, error) {
	for _, i := range index {
		one, err := k.Rewrap(ctx, items[i:i+1])
		if err != nil {
			var ve *vaultError
			if errors.As(err, &ve) && ve.status == http.StatusBadRequest {
				results[i] = keyring.Result{Err: fmt.Errorf("vaultkeys: rewrap item %d: %w", i, err)}
				continue
			}
			return nil, err
		}
		results[i] = one[0]
	}
	return results, nil
}

// Transit's batch rewrap, typed: decoded into maps (api.Secret), the
// answer cost the rewrap job about 4 µs of CPU a secret, on cores it
// shares with Vault (docs/benchmarks.md, "Key rewrap").
type (
	rewrapRequest struct {
		BatchInput []rewrapItem `json:"batch_input"`
	}
	rewrapItem struct {
		Ciphertext string `json:"ciphertext"`
		Context    string `json:"context"`
	}
	rewrapAnswer struct {
		Data struct {
			BatchResults []rewrapResult `json:"batch_results"`
		} `json:"data"`
	}
	rewrapResult struct {
		Ciphertext string `json:"ciphertext"`
		Error      string `json:"error"`
	}
)

// result is item i's outcome.
func (r rewrapResult) result(i int) keyring.Result {
	if r.Error != "" {
		return keyring.Result{Err: fmt.Errorf("vaultkeys: rewrap item %d: %w", i, mapError(&vault.ResponseError{StatusCode: http.StatusBadRequest, Errors: []string{r.Error}}))}
	}
	_, v, err := keyring.ParseVersion(r.Ciphertext)
	if err != nil {
		return keyring.Result{Err: fmt.Errorf("vaultkeys: rewrap item %d: unexpected answer: %w", i, err)}
	}
	return keyring.Result{Ciphertext: r.Ciphertext, Version: v}
}

// Rotate adds a key version; Encrypt uses it at once.
func (k *Keys) Rotate(ctx context.Context) (keyring.Status, error) {
	if _, err := k.call(ctx, "rotate", func(ctx context.Context) (*vault.Secret, error) {
		return k.client.Logical().WriteWithContext(ctx, k.cfg.Mount+"/keys/"+k.cfg.KeyName+"/rotate", nil)
	}); err != nil {
		return keyring.Status{}, err
	}
	return k.Status(ctx)
}

// Status reads the key's versions from Vault.
func (k *Keys) Status(ctx context.Context) (keyring.Status, error) {
	info, err := k.readKey(ctx)
	if err != nil {
		return keyring.Status{}, err
	}
	return info.status(k.cfg.KeyName), nil
}

// SetMinDecryptionVersion retires every version below v, refusing a v
// above the latest version or below the current minimum.
func (k *Keys) SetMinDecryptionVersion(ctx context.Context, v int) (keyring.Status, error) {
	info, err := k.readKey(ctx)
	if err != nil {
		return keyring.Status{}, err
	}
	if v > info.latest {
		return keyring.Status{}, fmt.Errorf("vaultkeys: %w: %d is above the latest version %d", keyring.ErrInvalidMinVersion, v, info.latest)
	}
	if v < info.minDecrypt {
		return keyring.Status{}, fmt.Errorf("vaultkeys: %w: %d is below the current minimum %d", keyring.ErrInvalidMinVersion, v, info.minDecrypt)
	}
	if _, err := k.call(ctx, "configure key", func(ctx context.Context) (*vault.Secret, error) {
		return k.client.Logical().WriteWithContext(ctx, k.cfg.Mount+"/keys/"+k.cfg.KeyName+"/config", map[string]any{"min_decryption_version": v})
	}); err != nil {
		return keyring.Status{}, err
	}
	return k.Status(ctx)
}

// Ping checks that the token works and the key is readable: what a login
// needs. The auth state is reported first, since it explains the rest.
func (k *Keys) Ping(ctx context.Context) error {
	if err := k.session.healthy(); err != nil {
		return fmt.Errorf("vaultkeys: %w: %w", keyring.ErrUnavailable, err)
	}
	_, err := k.readKey(ctx)
	return err
}

type keyInfo struct {
	keyType                        string
	derived                        bool
	latest, minDecrypt, minEncrypt int
}

func (i keyInfo) status(name string) keyring.Status {
	return keyring.Status{
		Backend: keyring.BackendVault, KeyName: name, LatestVersion: i.latest,
		MinDecryptionVersion: i.minDecrypt, MinEncryptionVersion: i.minEncrypt,
	}
}

// errKeyMissing is readKey's answer for a 404, so ensureKey can create it.
var errKeyMissing = errors.New("transit key not found")

func (k *Keys) readKey(ctx context.Context) (keyInfo, error) {
	s, err := k.call(ctx, "read key", func(ctx context.Context) (*vault.Secret, error) {
		return k.client.Logical().ReadWithContext(ctx, k.cfg.Mount+"/keys/"+k.cfg.KeyName)
	})
	if err != nil {
		return keyInfo{}, err
	}
	if s == nil || s.Data == nil {
		return keyInfo{}, fmt.Errorf("vaultkeys: read key %q at %s: %w", k.cfg.KeyName, k.cfg.Mount, errKeyMissing)
	}
	info := keyInfo{
		latest:     dataInt(s, "latest_version"),
		minDecrypt: dataInt(s, "min_decryption_version"),
		minEncrypt: dataInt(s, "min_encryption_version"),
	}
	info.keyType, _ = dataString(s, "type")
	info.derived, _ = s.Data["derived"].(bool)
	return info, nil
}

// ensureKey checks the key exists with the type and derivation totpgate
// relies on, creating it when allowed.
func (k *Keys) ensureKey(ctx context.Context) error {
	info, err := k.readKey(ctx)
	if errors.Is(err, errKeyMissing) && k.cfg.CreateKey {
		if _, err := k.call(ctx, "create key", func(ctx context.Context) (*vault.Secret, error) {
			return k.client.Logical().WriteWithContext(ctx, k.cfg.Mount+"/keys/"+k.cfg.KeyName, map[string]any{
				"type": "aes256-gcm96", "derived": true,
			})
		}); err != nil {
			return err
		}
		k.log.Info("created transit key", "mount", k.cfg.Mount, "key", k.cfg.KeyName)
		info, err = k.readKey(ctx)
	}
	if errors.Is(err, errKeyMissing) {
		return fmt.Errorf("%w; create it with `vault write -f %s/keys/%s type=aes256-gcm96 derived=true` or set keyring.vault.create_key", err, k.cfg.Mount, k.cfg.KeyName)
	}
	if err != nil {
		return err
	}
	var errs []error
	if !info.derived {
		errs = append(errs, fmt.Errorf("vaultkeys: transit key %s/%s is not derived; totpgate binds each secret to its user and needs derived=true (a new key is required: derivation cannot be turned on later)", k.cfg.Mount, k.cfg.KeyName))
	}
	switch info.keyType {
	case "aes256-gcm96", "aes128-gcm96", "chacha20-poly1305":
	default:
		errs = append(errs, fmt.Errorf("vaultkeys: transit key %s/%s has type %q; an encryption key (aes256-gcm96) is needed", k.cfg.Mount, k.cfg.KeyName, info.keyType))
	}
	return errors.Join(errs...)
}

func dataString(s *vault.Secret, key string) (string, bool) {
	if s == nil || s.Data == nil {
		return "", false
	}
	v, ok := s.Data[key].(string)
	return v, ok
}

// dataInt reads a number Vault sends as JSON (json.Number with the api
// client's decoder).
func dataInt(s *vault.Secret, key string) int {
	if s == nil || s.Data == nil {
		return 0
	}
	switch v := s.Data[key].(type) {
	case interface{ Int64() (int64, error) }:
		n, _ := v.Int64()
		return int(n)
	case float64:
		return int(v)
	case int:
		return v
	}
	return 0
}
