// Package audit records security events as one JSON log line each, with a
// fixed, versioned schema. It never takes a secret, code or ciphertext: an
// Event has no field that could hold one.
package audit

import (
	"context"
	"log/slog"
)

// SchemaVersion is the version of the event fields below; bump it when a
// field changes meaning or goes away.
const SchemaVersion = 1

// Event names.
const (
	EnrollStarted       = "enroll_started"
	EnrollConfirmed     = "enroll_confirmed"
	EnrollFailed        = "enroll_failed"
	LoginPassed         = "login_passed"          // outcome: no_mfa, totp, recovery_code, trusted_device
	LoginMFARequired    = "login_mfa_required"    // answer held, challenge issued
	LoginFailed         = "login_failed"          // wrong code
	LoginReplayRefused  = "login_replay_refused"  // correct code, already used in its step
	LoginLocked         = "login_locked"          // refused: user locked
	LockoutStarted      = "lockout_started"       // this failure locked the user
	LoginRejectedByApp  = "login_rejected_by_app" // the app refused the password; user id from the request, if any
	LoginError          = "login_error"           // store/keys/app unavailable: refused
	LoginRefused        = "login_refused"         // the gate could not judge the answer or the request: refused (outcome: unreadable_answer, unattributed, ambiguous_user, oversized_answer, busy, bad_request)
	RecoveryCodeUsed    = "recovery_code_used"    // any flow
	SessionRevoked      = "session_revoked"       // a held app session ended at the app; route: out_of_attempts, locked, expired, reset; outcome: ok, refused, failed
	StepUpRequired      = "step_up_required"      // a request to a step-up route held, challenge issued; route: the configured step-up path
	StepUpPassed        = "step_up_passed"        // the held request released to the app after a code; outcome: totp, recovery_code
	StepUpFailed        = "step_up_failed"        // a step-up completion refused; outcome: invalid_code, replay_refused, locked, challenge_not_found, unavailable
	StepUpRefused       = "step_up_refused"       // a request to a step-up route refused, nothing held (outcome: enrollment_required, too_large, unavailable, busy, bad_request, rate_limited), or a released one the app did not get (upstream_unavailable)
	RecoveryRegenerated = "recovery_regenerated"
	Disabled            = "mfa_disabled"
	AdminReset          = "admin_reset"
	AdminUnlock         = "admin_unlock"
	AdminImport         = "admin_import" // a user's existing secret turned on (outcome ok); with no user, an import refused (outcome refused)
	AdminExport         = "admin_export" // every active user's secret handed out; outcome: format and count, e.g. "csv 12"
	KeyRotated          = "key_rotated"  // outcome: backend and new version, e.g. "vault v4"
	KeyMinVersionRaised = "key_min_version_raised"
	RewrapStarted       = "rewrap_started" // outcome: job id
	// Trusted devices. None carries the device's token; device_trusted
	// and device_revoked tell the app (through the webhook) to tell its
	// user.
	DeviceTrusted       = "device_trusted"        // a device of the user is remembered; outcome: login (one-call login), challenge, self_service (POST /mfa/devices); a refused self_service trust: invalid_code, replay_refused, locked, unavailable, refused
	DeviceUsed          = "device_used"           // a login passed on a trusted device (with login_passed outcome trusted_device); outcome: login
	DeviceRevoked       = "device_revoked"        // devices no longer trusted; outcome: user (one, by its user), others (sign out every other device), replaced (the browser trusted itself again), disabled, recovery_regenerated, reset, lockout
	DeviceReuseDetected = "device_reuse_detected" // a rotated-away device token came back (a copy exists); outcome: revoked (the device is)
)

// Event is one security event.
type Event struct {
	Name      string
	UserID    string
	ClientIP  string
	Route     string // normalized route or API operation
	Outcome   string
	RequestID string
}

// Recorder takes events; metrics (and a webhook) can implement it too.
type Recorder interface {
	Record(ctx context.Context, e Event)
}

// Log writes events to a slog logger as `"msg":"audit"` lines.
type Log struct{ log *slog.Logger }

// NewLog returns a Recorder writing to log.
func NewLog(log *slog.Logger) *Log { return &Log{log: log} }

// Record implements Recorder.
func (l *Log) Record(ctx context.Context, e Event) {
	l.log.LogAttrs(ctx, slog.LevelInfo, "audit",
		slog.Int("audit_v", SchemaVersion),
		slog.String("event", e.Name),
		slog.String("user_id", e.UserID),
		slog.String("client_ip", e.ClientIP),
		slog.String("route", e.Route),
		slog.String("outcome", e.Outcome),
		slog.String("request_id", e.RequestID))
}

var _ Recorder = (*Log)(nil)
