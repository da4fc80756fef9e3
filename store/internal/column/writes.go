package column

import (
	"time"

	"github.com/totpgate/totpgate/store"
)

// Statements and arguments whose SQL is the same in both dialects. Their
// parameters are @name (pgx's named arguments; SQLite binds @name by name
// as well) or the values come in the order of a column list.

// ChallengeValues are c's values in the order of ChallengeColumns, to
// insert it.
func ChallengeValues(c store.Challenge) []any {
	return []any{
		Bytes(c.IDHash), c.UserID, Bytes(c.Sealed), Flag(c.Enroll), Flag(c.Satisfied), int64(c.Attempts),
		Millis(c.CreatedAt), Millis(c.ExpiresAt), NullBytes(c.Revoke),
	}
}

// DeviceArgs are the named arguments of inserting d: @id, @user, @hash
// (the token's), @label, @now (created), @used and @exp.
func DeviceArgs(d store.TrustedDevice) map[string]any {
	return map[string]any{
		"id": d.ID, "user": d.UserID, "hash": Bytes(d.TokenHash), "label": d.Label,
		"now": Millis(d.CreatedAt), "used": Millis(d.LastUsedAt), "exp": Millis(d.ExpiresAt),
	}
}

// pendingUpsert stores a pending enrollment. An earlier pending row is replaced whole; an
// active one is left alone (no row changed).
const pendingUpsert = `
INSERT INTO users (id, state, ciphertext, key_version, binding, algorithm, digits, period, skew,
	last_step, failures, failure_window_start, locked_until, pending_expires_at,
	confirmed_at, last_used_at, updated_at)
VALUES (@id, 'pending', @ct, @kv, @binding, @alg, @digits, @period, @skew, 0, 0, 0, 0, @exp, 0, 0, @updated)
ON CONFLICT (id) DO UPDATE SET
	state = 'pending',
	ciphertext = excluded.ciphertext,
	key_version = excluded.key_version,
	binding = excluded.binding,
	algorithm = excluded.algorithm,
	digits = excluded.digits,
	period = excluded.period,
	skew = excluded.skew,
	last_step = 0,
	failures = 0,
	failure_window_start = 0,
	locked_until = 0,
	pending_expires_at = excluded.pending_expires_at,
	confirmed_at = 0,
	last_used_at = 0,
	updated_at = excluded.updated_at
WHERE users.state = 'pending'`

// PendingUpsert is StartEnrollment's statement and its named arguments
// for u (u.ID, Ciphertext, KeyVersion, Binding, Params, PendingExpiresAt
// and UpdatedAt, or now when that is zero; the rest starts empty). It
// changes no row when the user is active.
func PendingUpsert(u store.User) (string, map[string]any) {
	return pendingUpsert, map[string]any{
		"id": u.ID, "ct": u.Ciphertext, "kv": u.KeyVersion, "binding": int16(u.Binding),
		"alg": u.Params.Algorithm, "digits": u.Params.Digits, "period": u.Params.Period, "skew": u.Params.Skew,
		"exp": Millis(u.PendingExpiresAt), "updated": Millis(NowOr(u.UpdatedAt)),
	}
}

// activatePending activates a pending enrollment that still holds @ct and
// has not expired at @now.
const activatePending = `
UPDATE users SET
	state = 'active',
	last_step = @step,
	failures = 0,
	failure_window_start = 0,
	pending_expires_at = 0,
	confirmed_at = @now,
	last_used_at = @now,
	updated_at = @now
WHERE id = @id AND state = 'pending' AND ciphertext = @ct AND pending_expires_at > @now`

// ActivatePending is ConfirmEnrollment's statement and its named
// arguments: user id's pending enrollment holding ciphertext and live at
// now becomes active, with step as its last accepted one and its failure
// count cleared (the confirming code was a successful second factor). It
// changes no row when there is no such enrollment.
func ActivatePending(id, ciphertext string, step int64, now time.Time) (string, map[string]any) {
	return activatePending, map[string]any{"step": step, "now": Millis(now), "id": id, "ct": ciphertext}
}
