package column

import "github.com/totpgate/totpgate/store"

// The scan destinations of each row type: F(&v) is where a row of the
// matching column list is scanned into v, decoded (times, flags,
// bindings). A column list is here when its SQL is the same in both
// dialects; where it is not (a RETURNING of a CTE's columns, say), the
// driver names the columns in the same order.

// UserColumns selects a store.User from the users table, in the order
// User scans them: the same in both drivers.
const UserColumns = `id, state, ciphertext, key_version, binding, algorithm, digits, period, skew,
	last_step, failures, failure_window_start, locked_until, pending_expires_at,
	confirmed_at, last_used_at, updated_at,
	(SELECT COUNT(*) FROM recovery_codes r WHERE r.user_id = users.id AND r.used_at IS NULL)`

// User is where a row of UserColumns is scanned into u.
func User(u *store.User) []any {
	return []any{
		&u.ID, (*string)(&u.State), &u.Ciphertext, &u.KeyVersion, integer[store.Binding]{&u.Binding},
		&u.Params.Algorithm, &u.Params.Digits, &u.Params.Period, &u.Params.Skew,
		&u.LastStep, &u.Failures, TimeOf(&u.FailureWindowStart), TimeOf(&u.LockedUntil), TimeOf(&u.PendingExpiresAt),
		TimeOf(&u.ConfirmedAt), TimeOf(&u.LastUsedAt), TimeOf(&u.UpdatedAt), &u.RecoveryRemaining,
	}
}

// CounterColumns selects what settling an attempt reads of a users row,
// in the order Counter scans them.
const CounterColumns = `state, last_step, failures, failure_window_start, locked_until`

// CounterRow is a users row as settling an attempt sees it: the state,
// the last accepted time step and the failure counter.
type CounterRow struct {
	State    store.State
	LastStep int64
	Counter  store.Counter
}

// Counter is where a row of CounterColumns is scanned into r.
func Counter(r *CounterRow) []any {
	return []any{(*string)(&r.State), &r.LastStep, &r.Counter.Failures, TimeOf(&r.Counter.WindowStart), TimeOf(&r.Counter.LockedUntil)}
}

// ChallengeColumns selects a store.Challenge from the challenges table,
// in the order Challenge scans them.
const ChallengeColumns = `id_hash, user_id, sealed, enroll, satisfied, attempts, created_at, expires_at, revoke`

// Challenge is where a row of ChallengeColumns is scanned into c.
func Challenge(c *store.Challenge) []any {
	return []any{
		&c.IDHash, &c.UserID, &c.Sealed, BoolOf(&c.Enroll), BoolOf(&c.Satisfied), &c.Attempts,
		TimeOf(&c.CreatedAt), TimeOf(&c.ExpiresAt), &c.Revoke,
	}
}

// Revocation is where a challenge's user_id and revoke columns (in this
// order) are scanned into c: what TakeRevocations returns of a challenge.
func Revocation(c *store.Challenge) []any { return []any{&c.UserID, &c.Revoke} }

// DeviceColumns selects a store.TrustedDevice from the trusted_devices
// table, in the order Device scans them.
const DeviceColumns = `id, user_id, token_hash, prev_hash, label, created_at, last_used_at, expires_at`

// Device is where a row of DeviceColumns is scanned into d.
func Device(d *store.TrustedDevice) []any {
	return []any{&d.ID, &d.UserID, &d.TokenHash, &d.PrevHash, &d.Label, TimeOf(&d.CreatedAt), TimeOf(&d.LastUsedAt), TimeOf(&d.ExpiresAt)}
}

// RecoveryCodeColumns selects a store.RecoveryCode from the
// recovery_codes table, in the order RecoveryCode scans them.
const RecoveryCodeColumns = `id, hash`

// RecoveryCode is where a row of RecoveryCodeColumns is scanned into c.
func RecoveryCode(c *store.RecoveryCode) []any { return []any{&c.ID, &c.Hash} }

// SecretRefColumns selects a store.SecretRef from the users table, in
// the order SecretRef scans them.
const SecretRefColumns = `id, ciphertext, key_version, binding`

// SecretRef is where a row of SecretRefColumns is scanned into r.
func SecretRef(r *store.SecretRef) []any {
	return []any{&r.UserID, &r.Ciphertext, &r.KeyVersion, integer[store.Binding]{&r.Binding}}
}

// KeyRef is where a backend and a key version column (in this order) are
// scanned into k, the key of a count by key.
func KeyRef(k *store.KeyRef) []any { return []any{&k.Backend, &k.Version} }

// State is where a state column is scanned into s, the key of a count by
// state.
func State(s *store.State) []any { return []any{(*string)(s)} }

// JobColumns selects a store.Job from the jobs table, in the order Job
// scans them.
const JobColumns = `name, owner, lease_until, state`

// Job is where a row of JobColumns is scanned into j.
func Job(j *store.Job) []any { return []any{&j.Name, &j.Owner, TimeOf(&j.LeaseUntil), &j.State} }

// Value is where a settings row's value column is scanned into v.
func Value(v *[]byte) []any { return []any{v} }
