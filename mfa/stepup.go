package mfa

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/totpgate/totpgate/store"
)

// HeldRequest is a request to a step-up route, held until its user gives
// a fresh second factor, then sent to the app once. Nothing of it reached
// the app before.
type HeldRequest struct {
	Method string `json:"method"`
	// URI is the request target as the client sent it (path and query).
	URI  string `json:"uri"`
	Host string `json:"host"`
	// RemoteAddr is the peer the request came from, so the forwarded
	// request carries the X-Forwarded-* the gate would have given it.
	RemoteAddr string      `json:"remote_addr"`
	Header     http.Header `json:"header"`
	Body       []byte      `json:"body"`
	// Route is the configured step-up path it matched (for the audit log
	// and the metrics); MaxAge that route's max_age, the proof cookie's
	// lifetime.
	Route  string        `json:"route"`
	MaxAge time.Duration `json:"max_age"`
	// Session is SHA-256 of the app session credentials the request
	// presented: only a completion call presenting the same ones may
	// release it, and the proof is bound to it.
	Session []byte `json:"session"`
}

// StepUp is what a completed step-up gives: the held request, to be sent
// to the app once, and the proof that this user gave a second factor for
// this session now.
type StepUp struct {
	Request HeldRequest
	Method  Method
	User    string
	// Proof is the value of the proof cookie; never logged.
	Proof string
}

// ErrProofInvalid: a step-up proof that is malformed, not made by the
// gate, for another user or app session, older than the route allows or
// from the future.
var ErrProofInvalid = errors.New("mfa: step-up proof not valid")

// proofVersion starts every proof payload; proofSkew is how far in the
// future a proof's time may lie (replicas' clocks differ a little).
const (
	proofVersion = 1
	proofSkew    = 30 * time.Second
	// proofFixed is the version, the time and the session hash.
	proofFixed = 1 + 8 + sha256.Size
)

// HoldStepUp stores a request to a step-up route for user, sealed under a
// key derived from a fresh token that only the client receives, as a
// challenge of its own kind: it never opens as a held login, nor a held
// login as a step-up.
func (s *Service) HoldStepUp(ctx context.Context, user string, req HeldRequest, cc ChallengeConfig) (Challenge, error) {
	if len(req.Session) != sha256.Size {
		return Challenge{}, errors.New("mfa: hold step-up: the request's session hash is missing")
	}
	plain, err := json.Marshal(req)
	if err != nil {
		return Challenge{}, fmt.Errorf("mfa: hold step-up: %w", err)
	}
	return s.hold(ctx, user, plain, kindStepUp, cc, false, nil)
}

// CompleteStepUp checks code for the user of the step-up challenge token
// and, on success, gives the held request exactly once, with a proof for
// this user and session. session is the hash of the app session
// credentials the completion call presents: a call from another session
// does not find the challenge (and spends nothing). A wrong code counts
// against the user (lockout) and the challenge, as at login. On an error
// the result still names the user and the route where they are known, for
// the audit log.
func (s *Service) CompleteStepUp(ctx context.Context, token, code string, session []byte, cc ChallengeConfig) (StepUp, error) {
	if len(token) != 43 {
		return StepUp{}, ErrChallengeNotFound
	}
	// The key first: with the keyring down nothing is claimed.
	key, err := s.subkey(ctx, purposeStepUpProof)
	if err != nil {
		return StepUp{}, err
	}
	claimed, plain, err := s.claim(ctx, token, kindStepUp)
	if err != nil {
		return StepUp{}, err
	}
	var held HeldRequest
	if err := json.Unmarshal(plain, &held); err != nil {
		return StepUp{}, s.putBack(ctx, claimed, fmt.Errorf("mfa: decode held request: %w", err))
	}
	out := StepUp{User: claimed.UserID, Request: HeldRequest{Route: held.Route}}
	if len(session) != sha256.Size || !hmac.Equal(held.Session, session) {
		// Another session (or none): as if there were no such challenge.
		return out, s.putBack(ctx, claimed, ErrChallengeNotFound)
	}
	method, err := s.settle(ctx, claimed, code, cc, nil)
	if err != nil {
		return out, err
	}
	out.Request, out.Method = held, method
	out.Proof = mintProof(key, claimed.UserID, session, s.now())
	return out, nil
}

// CheckStepUpProof reports whether proof says user gave a second factor
// for the app session whose hash is session at most maxAge ago: nil when
// it does, ErrProofInvalid when it does not, ErrUnavailable when the key
// cannot be had (the keyring is down).
func (s *Service) CheckStepUpProof(ctx context.Context, proof, user string, session []byte, maxAge time.Duration) error {
	payload, mac, ok := splitProof(proof)
	if !ok {
		return ErrProofInvalid
	}
	key, err := s.subkey(ctx, purposeStepUpProof)
	if err != nil {
		return err
	}
	m := hmac.New(sha256.New, key)
	m.Write(payload)
	if !hmac.Equal(m.Sum(nil), mac) {
		return ErrProofInvalid
	}
	at := time.Unix(int64(binary.BigEndian.Uint64(payload[1:9])), 0)
	now := s.now()
	switch {
	case !hmac.Equal(payload[9:proofFixed], session):
		return ErrProofInvalid
	case string(payload[proofFixed:]) != user:
		return ErrProofInvalid
	case at.After(now.Add(proofSkew)), now.Sub(at) > maxAge:
		return ErrProofInvalid
	}
	// A proof made before the user's current enrollment (a reset, then a
	// new one) vouches for a second factor that is gone.
	u, err := s.Status(ctx, user)
	if err != nil {
		return err
	}
	if u.State != store.StateActive || at.Before(u.ConfirmedAt.Truncate(time.Second)) {
		return ErrProofInvalid
	}
	return nil
}

// mintProof is base64url(payload) "." base64url(HMAC-SHA256(key, payload)),
// the payload being the version, the time of the second factor (Unix
// seconds, big-endian), the session hash and the user id.
func mintProof(key []byte, user string, session []byte, at time.Time) string {
	payload := make([]byte, 0, proofFixed+len(user))
	payload = append(payload, proofVersion)
	payload = binary.BigEndian.AppendUint64(payload, uint64(at.Unix()))
	payload = append(payload, session...)
	payload = append(payload, user...)
	m := hmac.New(sha256.New, key)
	m.Write(payload)
	return base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// maxProof bounds what is decoded of a proof cookie.
const maxProof = 4096

// splitProof decodes a proof into its payload and MAC, checking only its
// shape.
func splitProof(proof string) (payload, mac []byte, ok bool) {
	if len(proof) > maxProof {
		return nil, nil, false
	}
	p, m, found := strings.Cut(proof, ".")
	if !found {
		return nil, nil, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil || len(payload) <= proofFixed || payload[0] != proofVersion {
		return nil, nil, false
	}
	mac, err = base64.RawURLEncoding.DecodeString(m)
	if err != nil || len(mac) != sha256.Size {
		return nil, nil, false
	}
	return payload, mac, true
}

// PageMark is what the cookie set on the way to the self-service page
// holds for the step-up challenge token: the page's completion of that
// challenge must present it. It is derived from the token under a label of
// its own, so it is neither the token nor its stored hash.
func PageMark(token string) string {
	m := sha256.Sum256([]byte("totpgate/step-up-page\x00" + token))
	return base64.RawURLEncoding.EncodeToString(m[:])
}
