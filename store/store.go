// Package store is totpgate's persistent state: per-user MFA state, recovery
// code hashes, failure counters, pending login challenges and trusted
// devices.
//
// Store is implemented twice (SQLite here in store/sqlite, PostgreSQL in
// store/postgres) and both pass the same conformance suite in
// store/storetest. Every check-and-update that security depends on
// (accept a time step once, spend a recovery code once, count an attempt,
// spend a challenge once) is a single atomic statement or transaction, so
// it holds across goroutines and across replicas sharing one database.
//
// The store never sees a plaintext secret, code, recovery code, challenge
// token or device token: it holds keyring ciphertexts, keyed hashes and
// token hashes.
package store

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors; check with errors.Is. Any other error means the store is
// unavailable or broken, and callers must fail closed.
var (
	// ErrNotFound: no such user, or no such live challenge.
	ErrNotFound = errors.New("store: not found")
	// ErrConflict: the row is not in the state the call requires
	// (e.g. confirming an enrollment that is not pending).
	ErrConflict = errors.New("store: conflict")
	// ErrDeviceReused: a trusted-device token that was rotated away was
	// presented again (a copy of it is in other hands); the device has
	// been deleted.
	ErrDeviceReused = errors.New("store: trusted-device token reused")
)

// State is a user's MFA state.
type State string

// The MFA states. A user with no row is StateNone.
const (
	StateNone    State = "none"
	StatePending State = "pending"
	StateActive  State = "active"
)

// TOTPParams are stored per user so a configuration change never breaks
// an enrolled user.
type TOTPParams struct {
	Algorithm string // SHA1, SHA256 or SHA512
	Digits    int    // 6 or 8
	Period    int    // seconds
	Skew      int    // steps accepted either side of now
}

// Binding is how the keyring binding (Vault's derivation context, the
// local keyring's associated data) of a stored secret is made from its
// user id. It is stored with the ciphertext, so rows written before
// namespaces keep decrypting until a rewrap moves them.
type Binding int

const (
	// BindingBare binds to the bare user id, as rows written before
	// namespaces do: an id could equal an internal binding
	// ("totpgate/recovery-pepper"), so a rewrap moves these rows to
	// BindingUser.
	BindingBare Binding = 0
	// BindingUser binds to UserBindingPrefix + id, a namespace no internal
	// binding may use. Every new secret is stored so.
	BindingUser Binding = 1
)

// UserBindingPrefix starts every user binding; internal bindings (the
// recovery-code key, revocation material) must not start with it.
const UserBindingPrefix = "user:"

// BindTo returns the keyring binding of userID's secret under b.
func (b Binding) BindTo(userID string) string {
	if b == BindingBare {
		return userID
	}
	return UserBindingPrefix + userID
}

// User is one user's MFA row.
type User struct {
	ID         string
	State      State
	Ciphertext string // keyring ciphertext of the TOTP secret, e.g. "vault:v2:..."
	KeyVersion int    // the keyring version of Ciphertext, kept for status counts
	// Binding says which keyring binding Ciphertext is sealed under.
	Binding Binding
	Params  TOTPParams
	// LastStep is the last accepted TOTP time step (RFC 6238 §5.2); 0 if none.
	LastStep int64
	// Failures counts failed attempts in the current window.
	Failures           int
	FailureWindowStart time.Time
	LockedUntil        time.Time // zero when not locked
	PendingExpiresAt   time.Time // zero unless pending
	ConfirmedAt        time.Time // zero unless active
	LastUsedAt         time.Time // last successful second factor
	UpdatedAt          time.Time
	// RecoveryRemaining is the number of unused recovery codes.
	RecoveryRemaining int
}

// BindTo returns the keyring binding of the user's secret.
func (u User) BindTo() string { return u.Binding.BindTo(u.ID) }

// Limits is the brute-force policy applied by SettleAttempt.
type Limits struct {
	MaxFailures int           // failures allowed in Window
	Window      time.Duration // failures older than this are forgotten
	LockFor     time.Duration // how long the user is locked once MaxFailures is reached
}

// Match is what the code of one attempt was found to match before the
// attempt is settled: the caller compares the code with the user's secret
// or recovery code hashes (in memory, in constant time) and the store then
// decides, atomically, whether that match still buys a success. Both zero:
// the code matched nothing.
type Match struct {
	// Step > 0: a TOTP code valid for this time step.
	Step int64
	// RecoveryCodeID > 0: the stored recovery code (its id) the code equals.
	RecoveryCodeID int64
}

// Settled is the answer of SettleAttempt.
type Settled struct {
	// Allowed is false when the attempt was refused without being counted
	// or checked: the user is locked, or MaxFailures failures are already
	// counted in the window. LockedUntil then says when to try again.
	Allowed bool
	// Accepted: the match was spent (the step recorded, the recovery code
	// marked used) and the failure count cleared.
	Accepted bool
	// Replay: Match.Step was not newer than the last accepted step (a
	// code used again, or a concurrent acceptance); counted as a failure.
	Replay bool
	// Remaining is the number of failures still allowed in the window
	// after a counted failure (0 once locked).
	Remaining int
	// LockedUntil: when refused, when to try again; after a failure, the
	// lock that failure set (zero when none).
	LockedUntil time.Time
	// LockStarted: this failure was the MaxFailures-th and set the lock.
	LockStarted bool
	// DevicesRevoked is how many trusted devices of the user the lock
	// deleted (in the same transaction); set only with LockStarted.
	DevicesRevoked int
}

// TrustedDevice is a device (a browser) a user chose to remember after a
// second factor: a later login of that user presenting its current token
// passes without a code. The token itself is never stored, only a keyed
// hash bound to the user; each use replaces it (rotation), and the hash
// rotated away is kept so that its reuse is seen.
type TrustedDevice struct {
	// ID is public (random, base64url): the user names a device by it.
	ID     string
	UserID string
	// TokenHash is the keyed hash of the current token (unique).
	TokenHash []byte
	// PrevHash is the hash of the token the last use rotated away; nil
	// before the first use.
	PrevHash   []byte
	Label      string
	CreatedAt  time.Time
	LastUsedAt time.Time
	ExpiresAt  time.Time
}

// RecoveryCode is a stored recovery code: its id and keyed hash only.
type RecoveryCode struct {
	ID   int64
	Hash []byte
}

// Challenge is a login held back until a second factor is given.
type Challenge struct {
	// IDHash is SHA-256 of the challenge token the client holds; the token
	// itself is never stored.
	IDHash []byte
	UserID string
	// Sealed is the held upstream answer, encrypted with a key derived from
	// the token, so the database alone cannot release a login.
	Sealed []byte
	// Revoke is what ending the held login's app session needs, encrypted
	// under the keyring (nil: nothing to revoke).
	Revoke []byte
	// Enroll marks a login under a required policy by a user who must enroll first.
	Enroll bool
	// Satisfied is set when the user enrolled and confirmed inside the login.
	Satisfied bool
	Attempts  int
	CreatedAt time.Time
	ExpiresAt time.Time
}

// SecretRef is one stored secret, for rewrap.
type SecretRef struct {
	UserID     string
	Ciphertext string
	KeyVersion int
	Binding    Binding
}

// BindTo returns the keyring binding of the secret.
func (r SecretRef) BindTo() string { return r.Binding.BindTo(r.UserID) }

// KeyRef names one key version of one keyring backend, as the prefix of a
// ciphertext does ("vault:v3:..." is {vault 3}).
type KeyRef struct {
	Backend string
	Version int
}

// Swap replaces one user's ciphertext Old by New (at key Version, sealed
// under Binding).
type Swap struct {
	UserID  string
	Old     string
	New     string
	Version int
	Binding Binding
}

// Job is a lease on work that one process does at a time (a rewrap),
// with the state its holder last saved.
type Job struct {
	Name       string
	Owner      string
	LeaseUntil time.Time
	State      []byte
}

// Store is the whole persistent state.
type Store interface {
	// GetUser returns the user's row, or ErrNotFound.
	GetUser(ctx context.Context, id string) (User, error)

	// StartEnrollment stores a pending secret, replacing an earlier pending
	// one together with its failure count and any lock (they were counted
	// against a secret that is gone). ErrConflict when the user is active.
	StartEnrollment(ctx context.Context, u User) error
	// ConfirmEnrollment makes a pending enrollment active, atomically and only
	// when the row still holds ciphertext (the secret the code was checked
	// against) and has not expired at now. It records step as the last
	// accepted step, clears failures, sets LastUsedAt and stores the recovery
	// code hashes. ErrConflict otherwise (also for an unknown user). A pending
	// row with a zero PendingExpiresAt counts as expired.
	ConfirmEnrollment(ctx context.Context, id, ciphertext string, step int64, recoveryHashes [][]byte, now time.Time) error
	// DeleteUser removes the user's MFA entirely (disable, admin reset),
	// their trusted devices with it in the same transaction, and returns
	// how many devices went. ErrNotFound when there was nothing to delete.
	DeleteUser(ctx context.Context, id string) (int, error)

	// SettleAttempt counts, checks and settles one second-factor attempt
	// whose code the caller already compared (m), in one atomic
	// transaction: one durable write per attempt, and none when refused.
	// It refuses without counting when the user is locked or MaxFailures
	// failures are counted in the window. Otherwise it accepts m when m
	// still holds (Step newer than the last accepted step, or
	// RecoveryCodeID an unused code of this user, of an active user),
	// clearing the failure count; anything else (no match, a replay, a code
	// spent meanwhile, a user not active) is counted as a failure, and the
	// MaxFailures-th failure in the window locks the user until
	// now+LockFor and deletes the user's trusted devices in the same
	// transaction (Settled.DevicesRevoked). Concurrent attempts are settled one after the other, so
	// together they never get past MaxFailures failures, and a step or code
	// is spent once. It returns only once its effect is durable.
	// ErrNotFound when the user has no row.
	SettleAttempt(ctx context.Context, id string, m Match, now time.Time, l Limits) (Settled, error)
	// Unlock clears failures and any lock. ErrNotFound when no row.
	Unlock(ctx context.Context, id string) error

	// RecoveryCodes lists the user's unused recovery codes.
	RecoveryCodes(ctx context.Context, id string) ([]RecoveryCode, error)
	// ReplaceRecoveryCodes drops every recovery code of an active user and
	// stores new hashes, and deletes the user's trusted devices, in one
	// transaction; it returns how many devices went. ErrConflict when not
	// active.
	ReplaceRecoveryCodes(ctx context.Context, id string, hashes [][]byte, now time.Time) (int, error)

	// CreateChallenge stores a new challenge; ErrConflict if the id exists.
	CreateChallenge(ctx context.Context, c Challenge) error
	// GetChallenge returns a live challenge, or ErrNotFound when it is
	// unknown or expired at now.
	GetChallenge(ctx context.Context, idHash []byte, now time.Time) (Challenge, error)
	// FailChallenge counts a wrong code; at maxAttempts the challenge is
	// deleted. It returns the attempts left (0: gone, also when it was
	// already unknown).
	FailChallenge(ctx context.Context, idHash []byte, maxAttempts int) (int, error)
	// SatisfyChallenge marks a live challenge satisfied. ErrNotFound if gone.
	SatisfyChallenge(ctx context.Context, idHash []byte, now time.Time) error
	// SpendChallenge deletes a live challenge and returns it, exactly once:
	// of concurrent callers one gets it and the others ErrNotFound.
	SpendChallenge(ctx context.Context, idHash []byte, now time.Time) (Challenge, error)
	// TakeRevocations hands over, once, the revocation material of the
	// challenges of user (any expiry) or, with user "", of those expired
	// at now: the material is cleared as it is returned. The challenges
	// themselves stay until spent or swept.
	TakeRevocations(ctx context.Context, user string, now time.Time) ([]Challenge, error)
	// DeleteExpiredChallenges removes challenges expired at now.
	DeleteExpiredChallenges(ctx context.Context, now time.Time) (int, error)

	// CreateDevice stores a new trusted device of d.UserID, only while that
	// user is active and not locked at d.CreatedAt, checked atomically with
	// the insert (so it cannot slip in beside a DeleteUser, a recovery-code
	// replacement or a lockout). ErrConflict when the user is not active
	// (or unknown) or locked, or the id or token hash exists.
	CreateDevice(ctx context.Context, d TrustedDevice) error
	// RotateDevice spends a device token once, atomically: the user's
	// device whose TokenHash is tokenHash and that is live at now gets
	// PrevHash = tokenHash, TokenHash = newHash, LastUsedAt = now and is
	// returned as stored afterwards. When instead tokenHash is the PrevHash
	// of a live device of the user (a rotated-away token presented again),
	// that device is deleted and ErrDeviceReused returned. Else
	// ErrNotFound (unknown, another user's, expired). Of concurrent callers
	// with one token exactly one rotates it; the others get ErrNotFound or
	// ErrDeviceReused.
	RotateDevice(ctx context.Context, user string, tokenHash, newHash []byte, now time.Time) (TrustedDevice, error)
	// Devices lists the user's devices live at now, oldest first.
	Devices(ctx context.Context, user string, now time.Time) ([]TrustedDevice, error)
	// DeleteDevice deletes the user's device id (whatever its expiry) and
	// returns it as it was. ErrNotFound when the user has no such device.
	DeleteDevice(ctx context.Context, user, id string) (TrustedDevice, error)
	// DeleteDevices deletes every device of user except the one with id
	// except ("": none spared) and returns how many of them were live at
	// now.
	DeleteDevices(ctx context.Context, user, except string, now time.Time) (int, error)
	// DeleteExpiredDevices removes devices expired at now (the sweeper).
	DeleteExpiredDevices(ctx context.Context, now time.Time) (int, error)

	// Setting returns a stored setting, or ErrNotFound.
	Setting(ctx context.Context, key string) ([]byte, error)
	// PutSettingIfAbsent stores value under key unless the key exists, and
	// returns what is stored afterwards: the first writer wins, across replicas.
	PutSettingIfAbsent(ctx context.Context, key string, value []byte) ([]byte, error)
	// SwapSetting replaces a setting only if it still holds old.
	SwapSetting(ctx context.Context, key string, old, replacement []byte) (bool, error)

	// AcquireJob takes the lease on the named job for owner until leaseUntil
	// when nobody holds it, the holder's lease ended before now, or owner
	// already holds it. It returns the job as stored afterwards (the state
	// a previous holder left is kept, so work can resume) and whether owner
	// holds it. One of concurrent callers wins, across replicas.
	AcquireJob(ctx context.Context, name, owner string, now, leaseUntil time.Time) (Job, bool, error)
	// UpdateJob stores state and moves the lease end, only while owner
	// holds the lease; ErrConflict when the lease was lost. A leaseUntil in
	// the past releases it.
	UpdateJob(ctx context.Context, name, owner string, state []byte, leaseUntil time.Time) error
	// GetJob returns the named job, or ErrNotFound.
	GetJob(ctx context.Context, name string) (Job, error)

	// SecretsPage lists stored secrets not yet at target (on another
	// backend, or on a version below target.Version, or still under
	// BindingBare), with user id > after,
	// in id order. Ids compare by their bytes, as Go compares strings
	// (PostgreSQL needs COLLATE "C"). limit must be positive.
	SecretsPage(ctx context.Context, after string, target KeyRef, limit int) ([]SecretRef, error)
	// SwapSecrets applies each swap only if the row still holds its Old
	// ciphertext, so a rewrap never overwrites a newer enrollment, all in
	// one transaction. It returns how many rows were swapped.
	SwapSecrets(ctx context.Context, swaps []Swap) (int, error)
	// CountByKey counts stored secrets per backend and key version.
	CountByKey(ctx context.Context) (map[KeyRef]int, error)
	// CountBareBindings counts, per backend and key version, the stored
	// secrets still under BindingBare.
	CountBareBindings(ctx context.Context) (map[KeyRef]int, error)
	// CountByState counts users per MFA state.
	CountByState(ctx context.Context) (map[State]int, error)

	// Ping reports whether the store answers.
	Ping(ctx context.Context) error
	// Close releases the store.
	Close() error
}
