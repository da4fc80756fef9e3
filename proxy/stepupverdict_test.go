package proxy_test

import (
	"errors"
	"testing"

	"github.com/totpgate/totpgate/mfa"
	"github.com/totpgate/totpgate/proxy"
)

func TestJudgeStepUp(t *testing.T) {
	t.Parallel()
	down := errors.New("store down")
	session := make([]byte, 32)
	type facts struct {
		ambiguous, noSession, required bool
		user                           string
		whoseErr                       error
		enrolled                       bool
		enrolledErr                    error
		proofErr                       error
	}
	for _, tc := range []struct {
		name   string
		f      facts
		action proxy.Action
		reason string
		asked  string // which lookups may run, in order: w(hose) e(nrolled) p(roof)
	}{
		{"a credential presented twice", facts{ambiguous: true, user: "alice", enrolled: true}, proxy.Refuse, proxy.StepUpAmbiguous, ""},
		{"no session", facts{noSession: true}, proxy.Release, proxy.StepUpNotLoggedIn, ""},
		{"a session the app does not know", facts{user: ""}, proxy.Release, proxy.StepUpNotLoggedIn, "w"},
		{"the app cannot say whose", facts{whoseErr: down}, proxy.Refuse, proxy.ReasonUnavailable, "w"},
		{"sessions of two users", facts{whoseErr: proxy.ErrSessionsDisagree}, proxy.Refuse, proxy.StepUpAmbiguous, "w"},
		{"the store cannot say whether enrolled", facts{user: "alice", enrolledErr: down}, proxy.Refuse, proxy.ReasonUnavailable, "we"},
		{"no MFA, optional", facts{user: "bob"}, proxy.Release, proxy.ReasonNoMFA, "we"},
		{"no MFA, required", facts{user: "bob", required: true}, proxy.Refuse, proxy.ReasonEnrollmentRequired, "we"},
		{"enrolled with a valid proof", facts{user: "alice", enrolled: true}, proxy.Release, proxy.StepUpProofValid, "wep"},
		{"enrolled without a valid proof", facts{user: "alice", enrolled: true, proofErr: mfa.ErrProofInvalid}, proxy.Hold, proxy.StepUpNoProof, "wep"},
		{"enrolled, required, without a proof", facts{user: "alice", enrolled: true, required: true, proofErr: mfa.ErrProofInvalid}, proxy.Hold, proxy.StepUpNoProof, "wep"},
		{"the proof cannot be checked", facts{user: "alice", enrolled: true, proofErr: mfa.ErrUnavailable}, proxy.Refuse, proxy.ReasonUnavailable, "wep"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			asked := ""
			f := proxy.StepUpFacts{
				Ambiguous: tc.f.ambiguous, Session: session, Required: tc.f.required,
				Whose: func() (string, error) { asked += "w"; return tc.f.user, tc.f.whoseErr },
				Enrolled: func(user string) (bool, error) {
					asked += "e"
					if user != tc.f.user {
						t.Errorf("Enrolled(%q), want %q", user, tc.f.user)
					}
					return tc.f.enrolled, tc.f.enrolledErr
				},
				Proof: func(user string) error { asked += "p"; return tc.f.proofErr },
			}
			if tc.f.noSession {
				f.Session = nil
			}
			v := proxy.JudgeStepUp(f)
			if v.Action != tc.action || v.Reason != tc.reason || asked != tc.asked {
				t.Fatalf("verdict %v %q after asking %q, want %v %q after %q", v.Action, v.Reason, asked, tc.action, tc.reason, tc.asked)
			}
			if v.Action == proxy.Refuse && v.Reason != proxy.StepUpAmbiguous && v.Reason != proxy.ReasonEnrollmentRequired && v.Err == nil {
				t.Error("an unavailable verdict without its cause")
			}
		})
	}
	// The zero verdict refuses.
	if (proxy.StepUpVerdict{}).Action != proxy.Refuse {
		t.Fatal("the zero verdict does not refuse")
	}
}
