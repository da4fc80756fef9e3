package mfa_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/totpgate/totpgate/keyring"
	"github.com/totpgate/totpgate/mfa"
)

var stepUpCC = mfa.ChallengeConfig{TTL: 5 * time.Minute, MaxAttempts: 3}

func sessionHash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func heldRequest(session string) mfa.HeldRequest {
	return mfa.HeldRequest{Method: "POST", URI: "/settings/password", Host: "app", RemoteAddr: "127.0.0.1:1234",
		Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(`{"password":"new"}`),
		Route: "/settings/password", MaxAge: 5 * time.Minute, Session: sessionHash(session)}
}

func TestStepUpReleasesTheHeldRequestOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	secret, codes := e.enroll(t, "alice")
	ch, err := e.svc.HoldStepUp(ctx, "alice", heldRequest("S1"), stepUpCC)
	if err != nil {
		t.Fatal(err)
	}

	// Another session of the same user does not find it, and spends nothing.
	if _, err := e.svc.CompleteStepUp(ctx, ch.Token, e.code(secret, 0), sessionHash("S2"), stepUpCC); !errors.Is(err, mfa.ErrChallengeNotFound) {
		t.Fatalf("completion from another session = %v, want not found", err)
	}
	if _, err := e.svc.CompleteStepUp(ctx, ch.Token, e.code(secret, 0), nil, stepUpCC); !errors.Is(err, mfa.ErrChallengeNotFound) {
		t.Fatalf("completion without a session = %v, want not found", err)
	}
	// A wrong code counts against the challenge and the user.
	var ce *mfa.CodeError
	if res, err := e.svc.CompleteStepUp(ctx, ch.Token, "000000", sessionHash("S1"), stepUpCC); !errors.As(err, &ce) || ce.Remaining != 2 || res.User != "alice" || res.Request.Route != "/settings/password" {
		t.Fatalf("wrong code = %+v %v, want an invalid code with 2 attempts left, attributed", res, err)
	}
	got, err := e.svc.CompleteStepUp(ctx, ch.Token, e.code(secret, 0), sessionHash("S1"), stepUpCC)
	if err != nil {
		t.Fatal(err)
	}
	want := heldRequest("S1")
	if got.User != "alice" || got.Method != mfa.MethodTOTP || got.Request.Method != want.Method || got.Request.URI != want.URI ||
		string(got.Request.Body) != string(want.Body) || got.Request.Header.Get("Content-Type") != "application/json" || got.Request.MaxAge != want.MaxAge {
		t.Fatalf("released %+v", got)
	}
	if err := e.svc.CheckStepUpProof(ctx, got.Proof, "alice", sessionHash("S1"), time.Minute); err != nil {
		t.Fatalf("the proof of the completion: %v", err)
	}
	// Released once: a replay finds nothing, even with a recovery code.
	if _, err := e.svc.CompleteStepUp(ctx, ch.Token, codes[0], sessionHash("S1"), stepUpCC); !errors.Is(err, mfa.ErrChallengeNotFound) {
		t.Fatalf("replayed completion = %v, want not found", err)
	}
	if u, _ := e.svc.Status(ctx, "alice"); u.RecoveryRemaining != len(codes) {
		t.Fatalf("the replay spent a recovery code: %d left", u.RecoveryRemaining)
	}
}

func TestStepUpOutOfAttempts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	secret, _ := e.enroll(t, "bob")
	ch, err := e.svc.HoldStepUp(ctx, "bob", heldRequest("S"), stepUpCC)
	if err != nil {
		t.Fatal(err)
	}
	for range stepUpCC.MaxAttempts {
		if _, err := e.svc.CompleteStepUp(ctx, ch.Token, "000000", sessionHash("S"), stepUpCC); !errors.Is(err, mfa.ErrInvalidCode) {
			t.Fatalf("wrong code: %v", err)
		}
	}
	if _, err := e.svc.CompleteStepUp(ctx, ch.Token, e.code(secret, 0), sessionHash("S"), stepUpCC); !errors.Is(err, mfa.ErrChallengeNotFound) {
		t.Fatalf("after its last attempt the challenge = %v, want not found", err)
	}
}

// A login challenge never completes a step-up, nor the reverse, and the
// code sent to the wrong one is not spent: the challenge is put back and
// the same code then completes it where it belongs.
func TestChallengeKindsAreSeparate(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	secret, codes := e.enroll(t, "carol")
	cc := mfa.ChallengeConfig{TTL: 5 * time.Minute, MaxAttempts: 3}

	login, err := e.svc.HoldLogin(ctx, "carol", mfa.HeldAnswer{Status: 200, Body: []byte("SESSION")}, cc, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, code := range []string{e.code(secret, 0), codes[0]} {
		if _, err := e.svc.CompleteStepUp(ctx, login.Token, code, sessionHash("S"), cc); !errors.Is(err, mfa.ErrChallengeNotFound) {
			t.Fatalf("a login challenge at the step-up completion = %v, want not found", err)
		}
	}
	answer, method, _, err := e.svc.CompleteChallenge(ctx, login.Token, e.code(secret, 0), cc)
	if err != nil || string(answer.Body) != "SESSION" || method != mfa.MethodTOTP {
		t.Fatalf("the login challenge after the step-up attempts: %q %q %v (its code must not have been spent)", answer.Body, method, err)
	}
	e.clock.Add(30 * time.Second)

	up, err := e.svc.HoldStepUp(ctx, "carol", heldRequest("S"), cc)
	if err != nil {
		t.Fatal(err)
	}
	for _, code := range []string{e.code(secret, 0), codes[1], ""} {
		if _, _, _, err := e.svc.CompleteChallenge(ctx, up.Token, code, cc); !errors.Is(err, mfa.ErrChallengeNotFound) {
			t.Fatalf("a step-up challenge at the login completion (with a code: %v) = %v, want not found", code != "", err)
		}
	}
	if _, _, err := e.svc.ConfirmChallengeEnrollment(ctx, up.Token, e.code(secret, 0), cc); !errors.Is(err, mfa.ErrNotEnrollChallenge) {
		t.Fatalf("a step-up challenge at the enrollment confirmation = %v", err)
	}
	got, err := e.svc.CompleteStepUp(ctx, up.Token, e.code(secret, 0), sessionHash("S"), cc)
	if err != nil || got.Request.URI != "/settings/password" {
		t.Fatalf("the step-up challenge after the login attempts: %+v %v (its code must not have been spent)", got, err)
	}
	if u, _ := e.svc.Status(ctx, "carol"); u.RecoveryRemaining != len(codes) {
		t.Fatalf("a wrong-kind attempt spent a recovery code: %d left", u.RecoveryRemaining)
	}
}

// proofFor completes a step-up for user and session at the clock's now
// and returns the proof.
func proofFor(t *testing.T, e *env, user string, secret []byte, session string) string {
	t.Helper()
	ctx := context.Background()
	ch, err := e.svc.HoldStepUp(ctx, user, heldRequest(session), stepUpCC)
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.svc.CompleteStepUp(ctx, ch.Token, e.code(secret, 0), sessionHash(session), stepUpCC)
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Add(30 * time.Second) // the code's step is spent
	return got.Proof
}

func TestStepUpProofValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	secret, _ := e.enroll(t, "dave")
	secretB, _ := e.enroll(t, "erin")
	proof := proofFor(t, e, "dave", secret, "S1") // made 30 s before now
	erinProof := proofFor(t, e, "erin", secretB, "S1")
	e.clock.Add(-30 * time.Second) // dave's proof is 30 s old, erin's new

	payload, mac, _ := strings.Cut(proof, ".")
	raw, _ := base64.RawURLEncoding.DecodeString(payload)
	flipped := []byte(mac)
	flipped[3] ^= 'A' ^ 'B'
	if flipped[3] == mac[3] {
		flipped[3] = 'C'
	}
	// dave's payload with erin's name: the MAC no longer fits.
	renamed := base64.RawURLEncoding.EncodeToString(append(raw[:len(raw)-len("dave")], "erin"...)) + "." + mac
	// A proof of the future: made with the clock an hour ahead.
	e.clock.Add(time.Hour)
	future := proofFor(t, e, "dave", secret, "S1")
	e.clock.Add(-time.Hour - 30*time.Second)

	for _, tc := range []struct {
		name, proof, user, session string
		maxAge                     time.Duration
		valid                      bool
	}{
		{"valid", proof, "dave", "S1", time.Minute, true},
		{"valid at exactly max_age", proof, "dave", "S1", 30 * time.Second, true},
		{"expired", proof, "dave", "S1", 29 * time.Second, false},
		{"other session", proof, "dave", "S2", time.Minute, false},
		{"other user", proof, "erin", "S1", time.Minute, false},
		{"another user's proof", erinProof, "dave", "S1", time.Minute, false},
		{"renamed payload", renamed, "erin", "S1", time.Minute, false},
		{"wrong MAC", payload + "." + string(flipped), "dave", "S1", time.Minute, false},
		{"MAC of another proof", payload + "." + strings.SplitN(erinProof, ".", 2)[1], "dave", "S1", time.Minute, false},
		{"from the future", future, "dave", "S1", 2 * time.Hour, false},
		{"empty", "", "dave", "S1", time.Minute, false},
		{"no MAC", payload, "dave", "S1", time.Minute, false},
		{"not base64", "!!." + mac, "dave", "S1", time.Minute, false},
		{"short payload", base64.RawURLEncoding.EncodeToString(raw[:20]) + "." + mac, "dave", "S1", time.Minute, false},
		{"other version", base64.RawURLEncoding.EncodeToString(append([]byte{2}, raw[1:]...)) + "." + mac, "dave", "S1", time.Minute, false},
		{"short MAC", payload + "." + mac[:10], "dave", "S1", time.Minute, false},
		{"huge", strings.Repeat("A", 5000) + "." + mac, "dave", "S1", time.Minute, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := e.svc.CheckStepUpProof(ctx, tc.proof, tc.user, sessionHash(tc.session), tc.maxAge)
			if tc.valid && err != nil {
				t.Fatalf("valid proof refused: %v", err)
			}
			if !tc.valid && !errors.Is(err, mfa.ErrProofInvalid) {
				t.Fatalf("CheckStepUpProof = %v, want ErrProofInvalid", err)
			}
		})
	}
}

// A proof outlives neither the enrollment it was made under nor the
// user's MFA: after an admin reset and a new enrollment it is refused,
// while a proof made under the new enrollment passes.
func TestStepUpProofEndsWithTheEnrollment(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	secret, _ := e.enroll(t, "dave")
	old := proofFor(t, e, "dave", secret, "S1")
	if err := e.svc.CheckStepUpProof(ctx, old, "dave", sessionHash("S1"), time.Hour); err != nil {
		t.Fatalf("the proof before the reset: %v", err)
	}
	if _, err := e.svc.Reset(ctx, "dave"); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.CheckStepUpProof(ctx, old, "dave", sessionHash("S1"), time.Hour); !errors.Is(err, mfa.ErrProofInvalid) {
		t.Fatalf("the proof of a reset user = %v, want ErrProofInvalid", err)
	}
	e.clock.Add(time.Minute)
	secret, _ = e.enroll(t, "dave")
	if err := e.svc.CheckStepUpProof(ctx, old, "dave", sessionHash("S1"), time.Hour); !errors.Is(err, mfa.ErrProofInvalid) {
		t.Fatalf("a proof from before the new enrollment = %v, want ErrProofInvalid", err)
	}
	fresh := proofFor(t, e, "dave", secret, "S1")
	if err := e.svc.CheckStepUpProof(ctx, fresh, "dave", sessionHash("S1"), time.Hour); err != nil {
		t.Fatalf("a proof under the new enrollment: %v", err)
	}
}

// With the keyring unable to give the proof key, a step-up neither claims
// its challenge nor accepts a proof: it fails closed, and the challenge
// still completes once the keyring is back.
func TestStepUpKeyringDownFailsClosed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	secret, _ := e.enroll(t, "frank")
	ch, err := e.svc.HoldStepUp(ctx, "frank", heldRequest("S"), stepUpCC)
	if err != nil {
		t.Fatal(err)
	}
	// A fresh service on the same store whose keyring cannot open the
	// recovery-code key (the proof key derives from it).
	down, err := mfa.New(ctx, e.st, brokenKeys{}, mfa.DefaultConfig(), e.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := down.CompleteStepUp(ctx, ch.Token, e.code(secret, 0), sessionHash("S"), stepUpCC); !errors.Is(err, mfa.ErrUnavailable) {
		t.Fatalf("completion with the keyring down = %v, want ErrUnavailable", err)
	}
	if err := down.CheckStepUpProof(ctx, "AQ."+strings.Repeat("A", 43), "frank", sessionHash("S"), time.Minute); !errors.Is(err, mfa.ErrProofInvalid) {
		t.Fatalf("a malformed proof is refused without the keyring: %v", err)
	}
	if _, err := e.svc.CompleteStepUp(ctx, ch.Token, e.code(secret, 0), sessionHash("S"), stepUpCC); err != nil {
		t.Fatalf("after the outage the challenge = %v, want it still there", err)
	}
}

type brokenKeys struct{}

var errKeyringDown = fmt.Errorf("vault sealed: %w", keyring.ErrUnavailable)

func (brokenKeys) Encrypt(context.Context, string, []byte) (string, error) { return "", errKeyringDown }
func (brokenKeys) Decrypt(context.Context, string, string) ([]byte, error) {
	return nil, errKeyringDown
}

// A challenge whose user was reset after it was issued is gone, in both
// completions, whatever code comes (a 404, not an internal error).
func TestChallengeOfAResetUserIsGone(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	secret, _ := e.enroll(t, "dave")
	cc := mfa.ChallengeConfig{TTL: 5 * time.Minute, MaxAttempts: 3}
	login, err := e.svc.HoldLogin(ctx, "dave", mfa.HeldAnswer{Status: 200, Body: []byte("SESSION")}, cc, false)
	if err != nil {
		t.Fatal(err)
	}
	up, err := e.svc.HoldStepUp(ctx, "dave", heldRequest("S"), cc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Reset(ctx, "dave"); err != nil {
		t.Fatal(err)
	}
	code := e.code(secret, 0)
	for range 2 {
		if _, _, _, err := e.svc.CompleteChallenge(ctx, login.Token, code, cc); !errors.Is(err, mfa.ErrChallengeNotFound) {
			t.Fatalf("login challenge of a reset user = %v, want not found", err)
		}
		if _, err := e.svc.CompleteStepUp(ctx, up.Token, code, sessionHash("S"), cc); !errors.Is(err, mfa.ErrChallengeNotFound) {
			t.Fatalf("step-up challenge of a reset user = %v, want not found", err)
		}
	}
}
