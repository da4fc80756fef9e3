// Package mfa is the second factor itself: enrollment, code checks with
// replay and brute-force protection, recovery codes, disable and reset. It
// owns the rules; the store keeps state and the keyring keeps secrets
// encrypted. HTTP lives elsewhere (api, proxy).
package mfa

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/totpgate/totpgate/keyring"
	"github.com/totpgate/totpgate/store"
	"github.com/totpgate/totpgate/totp"
)

// Expected outcomes; check with errors.Is. Anything else wraps
// ErrUnavailable and must fail closed.
var (
	ErrNotEnrolled     = errors.New("mfa: not enrolled")
	ErrAlreadyEnrolled = errors.New("mfa: already enrolled")
	ErrNotPending      = errors.New("mfa: no pending enrollment")
	ErrInvalidCode     = errors.New("mfa: invalid code")
	ErrLocked          = errors.New("mfa: locked")
	// ErrUnavailable: the store or keyring failed; the check was not made.
	ErrUnavailable = errors.New("mfa: unavailable")
)

// CodeError explains a refused code. It matches ErrInvalidCode or ErrLocked.
type CodeError struct {
	Locked      bool
	LockedUntil time.Time // set when locked
	Remaining   int       // attempts left in the window
	Replay      bool      // a correct code already used in its time step
	// LockStarted: this failure started the lock (the others found it).
	LockStarted bool
	// DevicesRevoked is how many trusted devices the lock revoked (with
	// LockStarted).
	DevicesRevoked int
}

func (e *CodeError) Error() string {
	if e.Locked {
		return "mfa: locked"
	}
	return "mfa: invalid code"
}

// Is lets errors.Is match the sentinel for the kind of refusal.
func (e *CodeError) Is(target error) bool {
	return (e.Locked && target == ErrLocked) || (!e.Locked && target == ErrInvalidCode)
}

// Method is how a second factor was given.
type Method string

// The methods.
const (
	MethodTOTP     Method = "totp"
	MethodRecovery Method = "recovery_code"
)

// Keyring is what the service needs of a keyring.
type Keyring interface {
	Encrypt(ctx context.Context, bindTo string, plaintext []byte) (string, error)
	Decrypt(ctx context.Context, bindTo string, ciphertext string) ([]byte, error)
}

// Config is the policy of the service.
type Config struct {
	Issuer        string
	Params        totp.Params // for new enrollments; enrolled users keep theirs
	SecretSize    int
	RecoveryCodes int
	PendingTTL    time.Duration
	Limits        store.Limits
	QRSize        int
	// TrustedDeviceTTL is how long a trusted device stays trusted after
	// the second factor that trusted it; 0 turns trusted devices off.
	TrustedDeviceTTL time.Duration
	// Foreground, when set, marks every code check (the keyring's decrypt
	// and the store's commit) as foreground work, which a rewrap job in
	// this process steps aside for (rotation.Config.Foreground).
	Foreground Foreground
}

// Foreground marks work in progress until end is called
// (foreground.Gate).
type Foreground interface {
	Begin() (end func())
}

// DefaultConfig is the documented default policy.
func DefaultConfig() Config {
	return Config{
		Issuer:        "totpgate",
		Params:        totp.DefaultParams(),
		SecretSize:    totp.DefaultSecretSize,
		RecoveryCodes: 10,
		PendingTTL:    15 * time.Minute,
		Limits:        store.Limits{MaxFailures: 5, Window: 5 * time.Minute, LockFor: 15 * time.Minute},
		QRSize:        256,

		TrustedDeviceTTL: 30 * 24 * time.Hour,
	}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	errs := []error{c.Params.Validate()}
	if c.Issuer == "" {
		errs = append(errs, errors.New("mfa.issuer: must not be empty"))
	}
	if c.SecretSize < totp.MinSecretSize {
		errs = append(errs, fmt.Errorf("mfa.secret_size: must be at least %d bytes", totp.MinSecretSize))
	}
	if c.RecoveryCodes < 1 || c.RecoveryCodes > totp.MaxRecoveryCodes {
		errs = append(errs, fmt.Errorf("mfa.recovery_codes: must be 1..%d", totp.MaxRecoveryCodes))
	}
	if c.PendingTTL <= 0 {
		errs = append(errs, errors.New("mfa.pending_ttl: must be positive"))
	}
	if c.TrustedDeviceTTL < 0 {
		errs = append(errs, errors.New("mfa.trusted_device_ttl: must not be negative (0 turns trusted devices off)"))
	}
	if c.Limits.MaxFailures < 1 || c.Limits.Window <= 0 || c.Limits.LockFor <= 0 {
		errs = append(errs, errors.New("mfa.lockout: max failures, window and lock duration must be positive"))
	}
	return errors.Join(errs...)
}

// Service applies the rules.
type Service struct {
	store store.Store
	keys  Keyring
	cfg   Config
	now   func() time.Time
	// pepper is the HMAC key for recovery code hashes, loaded at New or,
	// when the keyring was down then, on first use.
	pepper     atomic.Pointer[[]byte]
	pepperLoad sync.Mutex
}

// PepperSetting holds the recovery-code HMAC key, encrypted by the keyring,
// shared by every replica (the first to start creates it).
const (
	PepperSetting = "recovery_pepper"
	PepperBinding = "totpgate/recovery-pepper"
)

// New loads (or creates) the recovery-code key and returns the service.
func New(ctx context.Context, st store.Store, keys Keyring, cfg Config, now func() time.Time) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Service{store: st, keys: keys, cfg: cfg, now: now}
	// A keyring outage at start must not stop the sidecar (the app's
	// traffic passes through regardless); the key loads on first use. Any
	// other failure (a wrong keyring, a broken store) is a start-up error.
	if _, err := s.recoveryKey(ctx); err != nil && !errors.Is(err, keyring.ErrUnavailable) && !errors.Is(err, store.ErrUnavailable) {
		return nil, err
	}
	return s, nil
}

// errKeyLoading: another request is loading the recovery key right now.
var errKeyLoading = errors.New("mfa: recovery key is being loaded")

// recoveryKey returns the recovery-code HMAC key, loading it if needed.
// While one request loads it the others fail fast instead of queueing
// behind a keyring that may be timing out.
func (s *Service) recoveryKey(ctx context.Context) ([]byte, error) {
	if p := s.pepper.Load(); p != nil {
		return *p, nil
	}
	if !s.pepperLoad.TryLock() {
		return nil, unavailable("recovery key", errKeyLoading)
	}
	defer s.pepperLoad.Unlock()
	if p := s.pepper.Load(); p != nil {
		return *p, nil
	}
	p, err := loadPepper(ctx, s.store, s.keys)
	if err != nil {
		return nil, err
	}
	s.pepper.Store(&p)
	return p, nil
}

func loadPepper(ctx context.Context, st store.Store, keys Keyring) ([]byte, error) {
	ct, err := st.Setting(ctx, PepperSetting)
	if errors.Is(err, store.ErrNotFound) {
		fresh, gerr := totp.GenerateSecret(32)
		if gerr != nil {
			return nil, fmt.Errorf("mfa: recovery key: %w", gerr)
		}
		enc, eerr := keys.Encrypt(ctx, PepperBinding, fresh)
		if eerr != nil {
			return nil, fmt.Errorf("mfa: encrypt recovery key: %w", eerr)
		}
		var stored []byte
		stored, err = st.PutSettingIfAbsent(ctx, PepperSetting, []byte(enc))
		ct = stored
	}
	if err != nil {
		return nil, fmt.Errorf("mfa: load recovery key: %w", err)
	}
	pepper, err := keys.Decrypt(ctx, PepperBinding, string(ct))
	if err != nil {
		return nil, fmt.Errorf("mfa: decrypt recovery key: %w", err)
	}
	return pepper, nil
}

// Status returns the user's row; a user with none is StateNone.
func (s *Service) Status(ctx context.Context, user string) (store.User, error) {
	memo := memoOf(ctx)
	if u, ok := memo.get(user); ok {
		return u, nil
	}
	u, err := s.store.GetUser(ctx, user)
	if errors.Is(err, store.ErrNotFound) {
		u, err = store.User{ID: user, State: store.StateNone}, nil
	}
	if err != nil {
		return store.User{}, unavailable("status", err)
	}
	memo.put(u)
	return u, nil
}

// Enrollment is the one answer that carries the secret.
type Enrollment struct {
	Secret    string // base32
	URI       string
	QRPNG     []byte
	Params    totp.Params
	ExpiresAt time.Time
}

// StartEnrollment makes a new secret and stores it encrypted as pending,
// replacing an earlier pending one.
func (s *Service) StartEnrollment(ctx context.Context, user, account string) (Enrollment, error) {
	u, err := s.Status(ctx, user)
	if err != nil {
		return Enrollment{}, err
	}
	if u.State == store.StateActive {
		return Enrollment{}, ErrAlreadyEnrolled
	}
	secret, err := totp.GenerateSecret(s.cfg.SecretSize)
	if err != nil {
		return Enrollment{}, unavailable("generate secret", err)
	}
	defer clear(secret)
	p := s.cfg.Params
	now := s.now()
	if _, err := s.storePending(ctx, user, secret, p, now); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return Enrollment{}, ErrAlreadyEnrolled
		}
		return Enrollment{}, err
	}
	uri := totp.URI(s.cfg.Issuer, account, secret, p)
	png, err := totp.QRPNG(uri, s.cfg.QRSize)
	if err != nil {
		return Enrollment{}, fmt.Errorf("mfa: qr: %w", err)
	}
	return Enrollment{Secret: totp.EncodeSecret(secret), URI: uri, QRPNG: png, Params: p, ExpiresAt: now.Add(s.cfg.PendingTTL)}, nil
}

// storePending encrypts secret for user and stores it as a pending
// enrollment with parameters p, replacing an earlier pending one. It
// returns the ciphertext; store.ErrConflict when the user is active.
func (s *Service) storePending(ctx context.Context, user string, secret []byte, p totp.Params, now time.Time) (string, error) {
	ct, err := s.keys.Encrypt(ctx, store.BindingUser.BindTo(user), secret)
	if err != nil {
		return "", unavailable("encrypt secret", err)
	}
	_, version, err := keyring.ParseVersion(ct)
	if err != nil {
		return "", unavailable("encrypt secret", err)
	}
	err = s.store.StartEnrollment(ctx, store.User{
		ID: user, State: store.StatePending, Ciphertext: ct, KeyVersion: version, Binding: store.BindingUser,
		Params:           store.TOTPParams{Algorithm: p.Algorithm, Digits: p.Digits, Period: p.Period, Skew: p.Skew},
		PendingExpiresAt: now.Add(s.cfg.PendingTTL), UpdatedAt: now,
	})
	if errors.Is(err, store.ErrConflict) {
		return "", err
	}
	if err != nil {
		return "", unavailable("start enrollment", err)
	}
	return ct, nil
}

// ConfirmEnrollment turns a pending enrollment on with a current code and
// returns the recovery codes, once.
func (s *Service) ConfirmEnrollment(ctx context.Context, user, code string) ([]string, error) {
	u, err := s.Status(ctx, user)
	if err != nil {
		return nil, err
	}
	now := s.now()
	if u.State != store.StatePending || !now.Before(u.PendingExpiresAt) {
		return nil, ErrNotPending
	}
	step, ok, err := s.checkTOTP(ctx, u, code, now)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, &CodeError{}
	}
	codes, hashes, err := s.newRecoveryCodes(ctx, user)
	if err != nil {
		return nil, err
	}
	err = s.store.ConfirmEnrollment(ctx, user, u.Ciphertext, step, hashes, now)
	if errors.Is(err, store.ErrConflict) {
		return nil, ErrNotPending // replaced, expired or confirmed meanwhile
	}
	if err != nil {
		return nil, unavailable("confirm enrollment", err)
	}
	return codes, nil
}

// Verify checks a TOTP or recovery code of an active user. The code is
// compared in memory first, then the attempt is counted, checked and, when
// the code still holds, accepted in one store transaction
// (store.SettleAttempt): concurrent guesses cannot pass the limit, a locked
// user is refused even a correct code, a success clears the count, and a
// correct TOTP code is accepted once per time step, a recovery code once.
func (s *Service) Verify(ctx context.Context, user, code string) (Method, error) {
	return s.verify(ctx, user, code, true)
}

func (s *Service) verify(ctx context.Context, user, code string, allowRecovery bool) (Method, error) {
	if s.cfg.Foreground != nil {
		defer s.cfg.Foreground.Begin()()
	}
	u, err := s.Status(ctx, user)
	if err != nil {
		return "", err
	}
	if u.State != store.StateActive {
		return "", ErrNotEnrolled
	}
	now := s.now()
	// The secret is decrypted before the attempt is settled: when the
	// keyring is down the login is refused without charging the user an
	// attempt (an outage must not lock everybody out).
	var secret, pepper []byte
	if allowRecovery && totp.LooksLikeRecoveryCode(code) {
		if pepper, err = s.recoveryKey(ctx); err != nil {
			return "", unavailable("recovery key", err)
		}
	} else {
		if _, ok := totp.NormalizeCode(code); ok {
			secret, err = s.keys.Decrypt(ctx, u.BindTo(), u.Ciphertext)
			if err != nil {
				return "", unavailable("decrypt secret", err)
			}
			defer clear(secret)
		}
	}
	m, method, err := s.match(ctx, u, code, secret, pepper, now)
	if err != nil {
		return "", err
	}
	res, err := s.store.SettleAttempt(ctx, user, m, now, s.cfg.Limits)
	if err != nil {
		return "", unavailable("settle attempt", err)
	}
	switch {
	case !res.Allowed:
		return "", &CodeError{Locked: true, LockedUntil: res.LockedUntil}
	case res.Accepted:
		return method, nil
	case res.LockStarted:
		// Only the failure that reaches the limit sets the lock; the
		// attempts behind it are refused above and must not announce it
		// again.
		return "", &CodeError{Locked: true, LockedUntil: res.LockedUntil, Replay: res.Replay, LockStarted: true, DevicesRevoked: res.DevicesRevoked}
	default:
		return "", &CodeError{Remaining: res.Remaining, Replay: res.Replay}
	}
}

func (s *Service) checkTOTP(ctx context.Context, u store.User, code string, now time.Time) (int64, bool, error) {
	norm, ok := totp.NormalizeCode(code)
	if !ok {
		return 0, false, nil
	}
	secret, err := s.keys.Decrypt(ctx, u.BindTo(), u.Ciphertext)
	if err != nil {
		return 0, false, unavailable("decrypt secret", err)
	}
	defer clear(secret)
	step, ok := verifyTOTP(u, secret, norm, now)
	return step, ok, nil
}

// verifyTOTP checks code against the user's secret with the user's stored
// parameters.
func verifyTOTP(u store.User, secret []byte, code string, now time.Time) (int64, bool) {
	norm, ok := totp.NormalizeCode(code)
	if !ok {
		return 0, false
	}
	p := totp.Params{Algorithm: u.Params.Algorithm, Digits: u.Params.Digits, Period: u.Params.Period, Skew: u.Params.Skew}
	return totp.Verify(secret, norm, now, p)
}

// match compares code with the user's TOTP secret (secret, nil when code
// is not a TOTP code) or unused recovery codes (pepper, nil when code is
// not a recovery code) and returns what it matched, for SettleAttempt to
// spend, and the method it would be.
func (s *Service) match(ctx context.Context, u store.User, code string, secret, pepper []byte, now time.Time) (store.Match, Method, error) {
	if pepper != nil {
		id, err := s.matchRecoveryCode(ctx, u.ID, code, pepper)
		return store.Match{RecoveryCodeID: id}, MethodRecovery, err
	}
	var m store.Match
	if secret != nil {
		if step, ok := verifyTOTP(u, secret, code, now); ok {
			m.Step = step
		}
	}
	return m, MethodTOTP, nil
}

// matchRecoveryCode returns the id of the user's unused recovery code
// that code is (0: none). Every stored hash is compared, each in constant
// time; spending the code is left to SettleAttempt.
func (s *Service) matchRecoveryCode(ctx context.Context, user, code string, pepper []byte) (int64, error) {
	norm, ok := totp.NormalizeRecoveryCode(code)
	if !ok {
		return 0, nil
	}
	want := totp.HashRecoveryCode(pepper, user, norm)
	stored, err := s.store.RecoveryCodes(ctx, user)
	if err != nil {
		return 0, unavailable("recovery codes", err)
	}
	var match int64
	for _, c := range stored {
		if subtle.ConstantTimeCompare(c.Hash, want) == 1 {
			match = c.ID
		}
	}
	return match, nil
}

func (s *Service) newRecoveryCodes(ctx context.Context, user string) ([]string, [][]byte, error) {
	pepper, err := s.recoveryKey(ctx)
	if err != nil {
		return nil, nil, unavailable("recovery key", err)
	}
	codes, err := totp.NewRecoveryCodes(s.cfg.RecoveryCodes)
	if err != nil {
		return nil, nil, unavailable("recovery codes", err)
	}
	hashes := make([][]byte, len(codes))
	for i, c := range codes {
		norm, _ := totp.NormalizeRecoveryCode(c)
		hashes[i] = totp.HashRecoveryCode(pepper, user, norm)
	}
	return codes, hashes, nil
}

// Disable removes the user's MFA after a valid TOTP or recovery code, and
// with it every trusted device; it returns how many devices went.
func (s *Service) Disable(ctx context.Context, user, code string) (int, error) {
	if _, err := s.Verify(ctx, user, code); err != nil {
		return 0, err
	}
	n, err := s.store.DeleteUser(ctx, user)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return 0, unavailable("disable", err)
	}
	return n, nil
}

// RegenerateRecoveryCodes replaces every recovery code after a valid TOTP
// code (not a recovery code: losing the device must not let a leaked code
// mint new ones), and revokes every trusted device (whoever regenerates
// codes may fear they leaked, and the devices with them); it returns the
// codes and how many devices went.
func (s *Service) RegenerateRecoveryCodes(ctx context.Context, user, code string) ([]string, int, error) {
	if _, err := s.verify(ctx, user, code, false); err != nil {
		return nil, 0, err
	}
	codes, hashes, err := s.newRecoveryCodes(ctx, user)
	if err != nil {
		return nil, 0, err
	}
	n, err := s.store.ReplaceRecoveryCodes(ctx, user, hashes, s.now())
	if err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, 0, ErrNotEnrolled
		}
		return nil, 0, unavailable("replace recovery codes", err)
	}
	return codes, n, nil
}

// Reset removes a user's MFA and trusted devices without a code (admin);
// it returns how many devices went.
func (s *Service) Reset(ctx context.Context, user string) (int, error) {
	n, err := s.store.DeleteUser(ctx, user)
	if errors.Is(err, store.ErrNotFound) {
		return 0, ErrNotEnrolled
	}
	if err != nil {
		return 0, unavailable("reset", err)
	}
	return n, nil
}

// Unlock lifts a lockout (admin).
func (s *Service) Unlock(ctx context.Context, user string) error {
	err := s.store.Unlock(ctx, user)
	if errors.Is(err, store.ErrNotFound) {
		return ErrNotEnrolled
	}
	if err != nil {
		return unavailable("unlock", err)
	}
	return nil
}

// unavailable wraps a dependency failure. The cause is kept for the log;
// callers answer with ErrUnavailable's meaning only.
func unavailable(op string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)
}

// Enrolled reports whether user has MFA on.
func (s *Service) Enrolled(ctx context.Context, user string) (bool, error) {
	u, err := s.Status(ctx, user)
	if err != nil {
		return false, err
	}
	return u.State == store.StateActive, nil
}

// ImportOutcome is what Import did, or with dryRun would do.
type ImportOutcome string

// Import outcomes.
const (
	Imported        ImportOutcome = "imported"
	ImportUnchanged ImportOutcome = "unchanged" // the same secret and parameters are already active
)

// ErrImportConflict: the user already has a different second factor on.
var ErrImportConflict = errors.New("mfa: the user already has a different second factor")

// Import turns on the second factor of an existing authenticator secret
// without re-enrollment: encrypted with the keyring, active at once, with
// the user's own algorithm, digits and period. Importing the same secret
// again changes nothing. With recovery, fresh recovery codes are made and
// returned (once); without, the user has none until they regenerate them.
func (s *Service) Import(ctx context.Context, rec totp.Imported, recovery, dryRun bool) (ImportOutcome, []string, error) {
	u, err := s.Status(ctx, rec.UserID)
	if err != nil {
		return "", nil, err
	}
	p := rec.Params
	if u.State == store.StateActive {
		have, err := s.keys.Decrypt(ctx, u.BindTo(), u.Ciphertext)
		if err != nil {
			return "", nil, unavailable("decrypt secret", err)
		}
		defer clear(have)
		same := subtle.ConstantTimeCompare(have, rec.Secret) == 1 &&
			u.Params.Algorithm == p.Algorithm && u.Params.Digits == p.Digits && u.Params.Period == p.Period
		if !same {
			return "", nil, ErrImportConflict
		}
		return ImportUnchanged, nil, nil
	}
	if dryRun {
		return Imported, nil, nil
	}
	now := s.now()
	ct, err := s.storePending(ctx, rec.UserID, rec.Secret, p, now)
	if errors.Is(err, store.ErrConflict) {
		return "", nil, ErrImportConflict // turned on meanwhile
	}
	if err != nil {
		return "", nil, err
	}
	var codes []string
	var hashes [][]byte
	if recovery {
		if codes, hashes, err = s.newRecoveryCodes(ctx, rec.UserID); err != nil {
			return "", nil, err
		}
	}
	// Step 0: the imported secret's next code is accepted, whatever step
	// the app it came from saw last.
	if err := s.store.ConfirmEnrollment(ctx, rec.UserID, ct, 0, hashes, now); err != nil {
		return "", nil, unavailable("import", err)
	}
	return Imported, codes, nil
}

// ImportRefusedError lists the lines of an import that refuse it: users
// who already have a different second factor. Nothing was written for
// them; it matches ErrImportConflict.
type ImportRefusedError struct{ Lines []totp.ImportError }

func (e *ImportRefusedError) Error() string {
	return fmt.Sprintf("mfa: import refused: %d user(s) already have a different second factor", len(e.Lines))
}

func (e *ImportRefusedError) Unwrap() error { return ErrImportConflict }

// ImportResult is what ImportAll did (with dryRun: would do) with one
// record. RecoveryCodes are the new codes, shown this once.
type ImportResult struct {
	Line          int
	UserID        string
	Params        totp.Params
	Outcome       ImportOutcome
	RecoveryCodes []string
}

// ParseImport reads an import file (totp.ParseImport) with the service's
// TOTP parameters as the defaults; an empty issuer is the service's own.
func (s *Service) ParseImport(r io.Reader, issuer string) (recs []totp.Imported, refused, skipped []totp.ImportError) {
	if issuer == "" {
		issuer = s.cfg.Issuer
	}
	return totp.ParseImport(r, s.cfg.Params, issuer)
}

// ImportAll imports a parsed file, the one way the command line and the
// admin API do it. Every record is first compared with what is stored: a
// user who already has a different second factor refuses the whole batch
// (*ImportRefusedError) and nothing is written. Then each record is
// imported in order and its result handed to each at once, so recovery
// codes already made are not lost when a later record fails (the store or
// keyring going away; a rerun reports the users done so far unchanged).
func (s *Service) ImportAll(ctx context.Context, recs []totp.Imported, recovery, dryRun bool, each func(ImportResult) error) error {
	var conflicts []totp.ImportError
	for _, r := range recs {
		if _, _, err := s.Import(ctx, r, false, true); errors.Is(err, ErrImportConflict) {
			conflicts = append(conflicts, importConflict(r))
		} else if err != nil {
			return fmt.Errorf("line %d: %w", r.Line, err)
		}
	}
	if len(conflicts) > 0 {
		return &ImportRefusedError{Lines: conflicts}
	}
	for _, r := range recs {
		outcome, codes, err := s.Import(ctx, r, recovery, dryRun)
		if errors.Is(err, ErrImportConflict) { // enrolled since the first pass
			return &ImportRefusedError{Lines: []totp.ImportError{importConflict(r)}}
		}
		if err != nil {
			return fmt.Errorf("line %d: %w", r.Line, err)
		}
		if err := each(ImportResult{Line: r.Line, UserID: r.UserID, Params: r.Params, Outcome: outcome, RecoveryCodes: codes}); err != nil {
			return err
		}
	}
	return nil
}

func importConflict(r totp.Imported) totp.ImportError {
	return totp.ImportError{Line: r.Line, UserID: r.UserID, Code: totp.ImportConflict,
		Reason: fmt.Sprintf("user %q already has a different second factor (reset them first)", r.UserID)}
}

// ExportLines writes every active user's secret as one line of an import
// file in format (totp.ExportLine, with the service's issuer) and hands it
// to fn; it returns how many. A user id the format cannot hold stops it
// with totp.ErrNotRepresentable (CSV holds more than otpauth labels).
func (s *Service) ExportLines(ctx context.Context, format totp.ExportFormat, fn func(line string) error) (int, error) {
	n := 0
	err := s.Export(ctx, func(user string, secret []byte, p totp.Params) error {
		line, err := totp.ExportLine(format, s.cfg.Issuer, user, secret, p)
		if err != nil {
			return err
		}
		n++
		return fn(line)
	})
	return n, err
}

// Export hands every active user's TOTP secret and parameters to fn, for
// leaving totpgate (the inverse of Import). The secret is cleared after fn
// returns; fn must not keep it.
func (s *Service) Export(ctx context.Context, fn func(user string, secret []byte, p totp.Params) error) error {
	after := ""
	for {
		// A key version no secret reaches: every stored secret is "not at"
		// it. (A made-up backend name with a NUL byte, as here before,
		// is refused by PostgreSQL as a text parameter.)
		page, err := s.store.SecretsPage(ctx, after, store.KeyRef{Backend: keyring.BackendLocal, Version: math.MaxInt32}, 500)
		if err != nil {
			return unavailable("export", err)
		}
		if len(page) == 0 {
			return nil
		}
		for _, ref := range page {
			after = ref.UserID
			u, err := s.store.GetUser(ctx, ref.UserID)
			if err != nil {
				return unavailable("export", err)
			}
			if u.State != store.StateActive {
				continue
			}
			secret, err := s.keys.Decrypt(ctx, u.BindTo(), u.Ciphertext)
			if err != nil {
				return unavailable("decrypt secret", err)
			}
			p := totp.Params{Algorithm: u.Params.Algorithm, Digits: u.Params.Digits, Period: u.Params.Period, Skew: u.Params.Skew}
			err = fn(u.ID, secret, p)
			clear(secret)
			if err != nil {
				return err
			}
		}
	}
}
