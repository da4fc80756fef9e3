package proxy

import (
	"errors"

	"github.com/totpgate/totpgate/mfa"
)

// Reasons of a step-up verdict besides the login verdict's ReasonNoMFA,
// ReasonEnrollmentRequired and ReasonUnavailable; the refusals are audit
// outcomes of step_up_refused too, so keep them stable.
const (
	StepUpNotLoggedIn = "not_logged_in" // release: no session the app knows; the app refuses what needs one
	StepUpProofValid  = "proof"         // release: a proof of a recent enough second factor for this user and session
	StepUpNoProof     = "no_proof"      // hold: the user has MFA and no valid proof
	StepUpAmbiguous   = "bad_request"   // refuse: a session credential presented twice or unreadably, or sessions of two users
)

// StepUpFacts are what a step-up verdict rests on: the session the request
// presents and the questions about its user, asked lazily and in order
// (Whose only with a session, Enrolled only with a user, Proof only for
// an enrolled user).
type StepUpFacts struct {
	// Ambiguous: the request presents a session credential twice or in a
	// form the gate may read differently from the app.
	Ambiguous bool
	// Session is the hash of the session credentials presented, nil for none.
	Session []byte
	// Required: every user must have MFA.
	Required bool
	// Whose is the user of the session ("" when the app knows none;
	// ErrSessionsDisagree when the request presents sessions of two).
	Whose func() (string, error)
	// Enrolled reports whether user has MFA on.
	Enrolled func(user string) (bool, error)
	// Proof checks the request's proof for user: nil when valid,
	// mfa.ErrProofInvalid when not (absent included), anything else when
	// it could not be checked.
	Proof func(user string) error
}

// StepUpVerdict is the gate's decision on one request to a step-up route,
// computed by JudgeStepUp and only applied by the handler: Release lets
// the request go to the app, Hold keeps it behind a challenge, Refuse
// answers instead (the zero value: deny by default).
type StepUpVerdict struct {
	Action Action
	Reason string
	User   string
	Err    error
}

// JudgeStepUp decides what happens to a request to a step-up route. It
// never releases a request of an enrolled user without a valid proof, and
// anything it cannot find out refuses.
func JudgeStepUp(f StepUpFacts) StepUpVerdict {
	switch {
	case f.Ambiguous:
		return StepUpVerdict{Action: Refuse, Reason: StepUpAmbiguous}
	case f.Session == nil:
		return StepUpVerdict{Action: Release, Reason: StepUpNotLoggedIn}
	}
	user, err := f.Whose()
	switch {
	case errors.Is(err, ErrSessionsDisagree):
		return StepUpVerdict{Action: Refuse, Reason: StepUpAmbiguous, Err: err}
	case err != nil:
		return StepUpVerdict{Action: Refuse, Reason: ReasonUnavailable, Err: err}
	case user == "":
		return StepUpVerdict{Action: Release, Reason: StepUpNotLoggedIn}
	}
	enrolled, err := f.Enrolled(user)
	switch {
	case err != nil:
		return StepUpVerdict{Action: Refuse, Reason: ReasonUnavailable, User: user, Err: err}
	case !enrolled && f.Required:
		return StepUpVerdict{Action: Refuse, Reason: ReasonEnrollmentRequired, User: user}
	case !enrolled:
		return StepUpVerdict{Action: Release, Reason: ReasonNoMFA, User: user}
	}
	err = f.Proof(user)
	switch {
	case err == nil:
		return StepUpVerdict{Action: Release, Reason: StepUpProofValid, User: user}
	case errors.Is(err, mfa.ErrProofInvalid):
		return StepUpVerdict{Action: Hold, Reason: StepUpNoProof, User: user}
	}
	return StepUpVerdict{Action: Refuse, Reason: ReasonUnavailable, User: user, Err: err}
}
