package mfa

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/totpgate/totpgate/store"
)

// ErrChallengeNotFound: unknown, expired, used up or already spent; the
// cases are not told apart on purpose.
var ErrChallengeNotFound = errors.New("mfa: challenge not found")

// ErrCodeRequired: a challenge not yet satisfied by an in-login enrollment
// needs a code.
var ErrCodeRequired = errors.New("mfa: code required")

// ErrNotEnrollChallenge: the challenge is not one that lets the user enroll.
var ErrNotEnrollChallenge = errors.New("mfa: challenge does not allow enrollment")

// HeldAnswer is the app's login answer, held until a second factor is given.
type HeldAnswer struct {
	Status int         `json:"status"`
	Header http.Header `json:"header"`
	Body   []byte      `json:"body"`
}

// Challenge is what the client gets to finish a held login.
type Challenge struct {
	Token     string // 43 characters of base64url; shown to the client only
	ExpiresAt time.Time
	Attempts  int // attempts left
}

// ChallengeConfig bounds challenges.
type ChallengeConfig struct {
	TTL         time.Duration
	MaxAttempts int
	// Revoker, when set, ends at the app the session of a held answer that
	// will never be released.
	Revoker Revoker
}

// Revoker ends app sessions that a held login created and that will never
// be released.
type Revoker interface {
	// Material is what revoking a needs (its session credentials), nil
	// when there is nothing to revoke. It is kept encrypted under the
	// keyring with the challenge, so the sweeper can revoke a challenge
	// that expired unused.
	Material(a HeldAnswer) []byte
	// Revoke ends the session described by material; why is a fixed word
	// for the audit log: out_of_attempts, locked, expired, reset. It must
	// not block the caller for long (retries belong in the background).
	Revoke(ctx context.Context, user string, material []byte, why string)
}

// RevokeAnswer ends the app session of an answer held for user that will
// never be released (a challenge out of attempts, the login gate's lockout
// refusal).
func (cc ChallengeConfig) RevokeAnswer(ctx context.Context, user string, a HeldAnswer, why string) {
	if cc.Revoker == nil {
		return
	}
	if m := cc.Revoker.Material(a); m != nil {
		cc.Revoker.Revoke(ctx, user, m, why)
	}
}

// HoldLogin stores the app's answer for user, sealed under a key derived
// from a fresh token that only the client receives: the database alone can
// never release a login.
// With enroll set, the user has no MFA yet and must enroll inside the login
// (required policy) before the answer is released.
func (s *Service) HoldLogin(ctx context.Context, user string, answer HeldAnswer, cc ChallengeConfig, enroll bool) (Challenge, error) {
	plain, err := json.Marshal(answer)
	if err != nil {
		return Challenge{}, fmt.Errorf("mfa: hold login: %w", err)
	}
	var revoke []byte
	if cc.Revoker != nil {
		if m := cc.Revoker.Material(answer); m != nil {
			ct, err := s.keys.Encrypt(ctx, revokeBinding(user), m)
			clear(m)
			if err != nil {
				return Challenge{}, unavailable("seal revocation", err)
			}
			revoke = []byte(ct)
		}
	}
	return s.hold(ctx, user, plain, kindLogin, cc, enroll, revoke)
}

// hold stores plain for user as a challenge of kind, sealed under a key
// derived from a fresh token, and returns the token.
func (s *Service) hold(ctx context.Context, user string, plain []byte, k kind, cc ChallengeConfig, enroll bool, revoke []byte) (Challenge, error) {
	token, err := randomToken(32)
	if err != nil {
		return Challenge{}, unavailable("challenge token", err)
	}
	sealed, err := sealWithToken(token, plain, k)
	if err != nil {
		return Challenge{}, err
	}
	now := s.now()
	c := store.Challenge{IDHash: tokenHash(token), UserID: user, Sealed: sealed, Enroll: enroll, Revoke: revoke, CreatedAt: now, ExpiresAt: now.Add(cc.TTL)}
	if err := s.store.CreateChallenge(ctx, c); err != nil {
		return Challenge{}, unavailable("create challenge", err)
	}
	return Challenge{Token: token, ExpiresAt: c.ExpiresAt, Attempts: cc.MaxAttempts}, nil
}

// CompleteChallenge checks code for the challenge's user and, on success,
// releases the held answer exactly once. A wrong code counts against both
// the user (lockout) and the challenge (it dies after MaxAttempts).
// It also returns the challenge's user ("" when the challenge is unknown),
// for the audit log.
func (s *Service) CompleteChallenge(ctx context.Context, token, code string, cc ChallengeConfig) (_ HeldAnswer, _ Method, user string, err error) {
	answer, method, err := s.completeChallenge(ctx, token, code, cc, &user)
	return answer, method, user, err
}

func (s *Service) completeChallenge(ctx context.Context, token, code string, cc ChallengeConfig, user *string) (HeldAnswer, Method, error) {
	if len(token) != 43 {
		return HeldAnswer{}, "", ErrChallengeNotFound
	}
	h := tokenHash(token)
	ch, err := s.store.GetChallenge(ctx, h, s.now())
	if errors.Is(err, store.ErrNotFound) {
		return HeldAnswer{}, "", ErrChallengeNotFound
	}
	if err != nil {
		return HeldAnswer{}, "", unavailable("get challenge", err)
	}
	if _, err := openWithToken(token, ch.Sealed, kindLogin); err != nil {
		return HeldAnswer{}, "", ErrChallengeNotFound // a step-up challenge: not one of ours
	}
	*user = ch.UserID
	if code == "" && !ch.Satisfied {
		return HeldAnswer{}, "", ErrCodeRequired
	}
	claimed, plain, err := s.claim(ctx, token, kindLogin)
	if err != nil {
		return HeldAnswer{}, "", err
	}
	answer, err := decodeHeld(plain)
	if err != nil {
		return HeldAnswer{}, "", err
	}
	if code == "" { // satisfied by an in-login enrollment: released without a code
		return answer, MethodTOTP, nil
	}
	method, err := s.settle(ctx, claimed, code, cc, func() { cc.RevokeAnswer(ctx, claimed.UserID, answer, "out_of_attempts") })
	if err != nil {
		return HeldAnswer{}, "", err
	}
	return answer, method, nil
}

// claim takes the challenge of token out of the store before any code is
// checked, so only the caller who took it spends a code on it (a spent
// code always buys the release, and a concurrent caller gets not-found
// with its code unspent), and opens its sealed payload as kind k. A
// challenge of the other kind is put back as it was and is not found: a
// login challenge never completes a step-up nor the reverse, and no code
// is spent on it.
func (s *Service) claim(ctx context.Context, token string, k kind) (store.Challenge, []byte, error) {
	claimed, err := s.store.SpendChallenge(ctx, tokenHash(token), s.now())
	if errors.Is(err, store.ErrNotFound) {
		return store.Challenge{}, nil, ErrChallengeNotFound
	}
	if err != nil {
		return store.Challenge{}, nil, unavailable("claim challenge", err)
	}
	plain, err := openWithToken(token, claimed.Sealed, k)
	if err != nil {
		return store.Challenge{}, nil, s.putBack(ctx, claimed, ErrChallengeNotFound)
	}
	return claimed, plain, nil
}

// putBack restores a claimed challenge as it was and returns why, or the
// store's failure to restore it.
func (s *Service) putBack(ctx context.Context, c store.Challenge, why error) error {
	if err := s.store.CreateChallenge(ctx, c); err != nil {
		return unavailable("restore challenge", err)
	}
	return why
}

// settle checks code for the user of a claimed challenge. A user no
// longer enrolled finds the challenge gone (ErrChallengeNotFound). A code that
// could not be checked (store, keyring) puts the challenge back as it
// was. A wrong code counts against both the user (lockout) and the
// challenge: it is put back with one attempt fewer, or, at its last one,
// left dead and dead is called.
func (s *Service) settle(ctx context.Context, claimed store.Challenge, code string, cc ChallengeConfig, dead func()) (Method, error) {
	method, err := s.Verify(ctx, claimed.UserID, code)
	if err == nil {
		return method, nil
	}
	if errors.Is(err, ErrNotEnrolled) {
		// Disabled or reset meanwhile: the challenge can never pass, so it
		// stays spent (a reset has handed its revocation to the app).
		return "", ErrChallengeNotFound
	}
	var ce *CodeError
	if !errors.As(err, &ce) {
		return "", s.putBack(ctx, claimed, err)
	}
	// A wrong code burns an attempt; a refusal because the user is
	// already locked does not (the code was never compared).
	if !ce.Locked || ce.LockStarted {
		claimed.Attempts++
	}
	left := cc.MaxAttempts - claimed.Attempts
	ce.Remaining = min(ce.Remaining, max(left, 0))
	if left <= 0 {
		if dead != nil {
			dead()
		}
		return "", err
	}
	return "", s.putBack(ctx, claimed, err)
}

func decodeHeld(plain []byte) (HeldAnswer, error) {
	var answer HeldAnswer
	if err := json.Unmarshal(plain, &answer); err != nil {
		return HeldAnswer{}, fmt.Errorf("mfa: decode held answer: %w", err)
	}
	return answer, nil
}

// revokeBinding is the keyring binding of a challenge's revocation
// material: the user, under a label of its own, so it never opens as a
// TOTP secret of that user nor the other way round.
func revokeBinding(user string) string { return "revoke\x00" + user }

// RevokeHeld ends at the app the sessions held for user (admin reset:
// none of them may be released any more) or, with user "", those of
// challenges expired at now (the sweeper). It returns how many were handed
// to the revoker.
func (s *Service) RevokeHeld(ctx context.Context, user string, cc ChallengeConfig) (int, error) {
	if cc.Revoker == nil {
		return 0, nil
	}
	taken, err := s.store.TakeRevocations(ctx, user, s.now())
	if err != nil {
		return 0, unavailable("take revocations", err)
	}
	why := "expired"
	if user != "" {
		why = "reset"
	}
	n := 0
	for _, c := range taken {
		m, err := s.keys.Decrypt(ctx, revokeBinding(c.UserID), string(c.Revoke))
		if err != nil {
			continue // logged by the keyring metrics; nothing else can open it
		}
		cc.Revoker.Revoke(ctx, c.UserID, m, why)
		n++
	}
	return n, nil
}

func tokenHash(token string) []byte {
	h := sha256.Sum256([]byte("totpgate/challenge-id\x00" + token))
	return h[:]
}

// tokenKey derives the sealing key; a different label than tokenHash, so
// the stored hash never is the key.
func tokenKey(token string) []byte {
	k := sha256.Sum256([]byte("totpgate/challenge-key\x00" + token))
	return k[:]
}

// kind tells the payloads of challenges apart cryptographically: it is the
// AES-GCM additional data of the seal, so a payload opens only as the kind
// it was sealed as. Login answers have none, so the rows written before
// step-up existed keep opening.
type kind []byte

var (
	kindLogin  kind = nil
	kindStepUp      = kind("totpgate/step-up")
)

func sealWithToken(token string, plain []byte, k kind) ([]byte, error) {
	aead, err := tokenAEAD(token)
	if err != nil {
		return nil, fmt.Errorf("mfa: seal: %w", err)
	}
	return aead.Seal(nil, nil, plain, k), nil
}

func openWithToken(token string, sealed []byte, k kind) ([]byte, error) {
	aead, err := tokenAEAD(token)
	if err != nil {
		return nil, err
	}
	return aead.Open(nil, nil, sealed, k)
}

func tokenAEAD(token string) (cipher.AEAD, error) {
	block, err := aes.NewCipher(tokenKey(token))
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithRandomNonce(block)
}

// liveEnrollChallenge returns the user of a live challenge that allows
// enrollment.
func (s *Service) liveEnrollChallenge(ctx context.Context, token string) (store.Challenge, error) {
	if len(token) != 43 {
		return store.Challenge{}, ErrChallengeNotFound
	}
	ch, err := s.store.GetChallenge(ctx, tokenHash(token), s.now())
	if errors.Is(err, store.ErrNotFound) {
		return store.Challenge{}, ErrChallengeNotFound
	}
	if err != nil {
		return store.Challenge{}, unavailable("get challenge", err)
	}
	if !ch.Enroll {
		return store.Challenge{}, ErrNotEnrollChallenge
	}
	return ch, nil
}

// StartChallengeEnrollment starts enrollment for the user of a login held
// under the required policy.
// It also returns the user, for the audit log.
func (s *Service) StartChallengeEnrollment(ctx context.Context, token string) (Enrollment, string, error) {
	ch, err := s.liveEnrollChallenge(ctx, token)
	if err != nil {
		return Enrollment{}, "", err
	}
	en, err := s.StartEnrollment(ctx, ch.UserID, ch.UserID)
	return en, ch.UserID, err
}

// ConfirmChallengeEnrollment confirms that enrollment with a code, returns
// the recovery codes and marks the challenge satisfied, so the held login
// can then be released without another code. A wrong code counts against
// the challenge.
func (s *Service) ConfirmChallengeEnrollment(ctx context.Context, token, code string, cc ChallengeConfig) ([]string, string, error) {
	ch, err := s.liveEnrollChallenge(ctx, token)
	if err != nil {
		return nil, "", err
	}
	codes, err := s.ConfirmEnrollment(ctx, ch.UserID, code)
	if err != nil {
		if errors.Is(err, ErrInvalidCode) {
			if _, ferr := s.store.FailChallenge(ctx, ch.IDHash, cc.MaxAttempts); ferr != nil {
				return nil, ch.UserID, unavailable("fail challenge", ferr)
			}
		}
		return nil, ch.UserID, err
	}
	if err := s.store.SatisfyChallenge(ctx, ch.IDHash, s.now()); err != nil {
		// MFA is on either way, so the codes must reach the user; the login
		// itself then has to be repeated (the release answers not found).
		return codes, ch.UserID, nil
	}
	return codes, ch.UserID, nil
}
