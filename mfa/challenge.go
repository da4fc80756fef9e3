package mfa

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
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
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return Challenge{}, unavailable("challenge token", err)
	}
	token := base64.RawURLEncoding.EncodeToString(raw[:])
	plain, err := json.Marshal(answer)
	if err != nil {
		return Challenge{}, fmt.Errorf("mfa: hold login: %w", err)
	}
	sealed, err := sealWithToken(token, plain)
	if err != nil {
		return Challenge{}, err
	}
	now := s.now()
	c := store.Challenge{IDHash: tokenHash(token), UserID: user, Sealed: sealed, Enroll: enroll, CreatedAt: now, ExpiresAt: now.Add(cc.TTL)}
	if cc.Revoker != nil {
		if m := cc.Revoker.Material(answer); m != nil {
			ct, err := s.keys.Encrypt(ctx, revokeBinding(user), m)
			clear(m)
			if err != nil {
				return Challenge{}, unavailable("seal revocation", err)
			}
			c.Revoke = []byte(ct)
		}
	}
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
	*user = ch.UserID
	if code == "" {
		if !ch.Satisfied {
			return HeldAnswer{}, "", ErrCodeRequired
		}
		return s.spend(ctx, token, h, MethodTOTP)
	}
	// Claim the challenge before the code is checked: only the caller who
	// took it out spends a code on it, so a spent code always buys the
	// release, and a concurrent caller gets not-found with its code unspent.
	claimed, err := s.store.SpendChallenge(ctx, h, s.now())
	if errors.Is(err, store.ErrNotFound) {
		return HeldAnswer{}, "", ErrChallengeNotFound
	}
	if err != nil {
		return HeldAnswer{}, "", unavailable("claim challenge", err)
	}
	method, err := s.Verify(ctx, claimed.UserID, code)
	if err == nil {
		answer, err := openHeld(token, claimed.Sealed)
		if err != nil {
			return HeldAnswer{}, "", err
		}
		return answer, method, nil
	}
	var ce *CodeError
	if !errors.As(err, &ce) {
		// The code could not be checked (store, keyring): put the
		// challenge back as it was.
		if rerr := s.store.CreateChallenge(ctx, claimed); rerr != nil {
			return HeldAnswer{}, "", unavailable("restore challenge", rerr)
		}
		return HeldAnswer{}, "", err
	}
	// A wrong code burns an attempt; a refusal because the user is
	// already locked does not (the code was never compared).
	if !ce.Locked || ce.LockStarted {
		claimed.Attempts++
	}
	left := cc.MaxAttempts - claimed.Attempts
	ce.Remaining = min(ce.Remaining, max(left, 0))
	if left <= 0 {
		if answer, oerr := openHeld(token, claimed.Sealed); oerr == nil {
			cc.RevokeAnswer(ctx, claimed.UserID, answer, "out_of_attempts")
		}
		return HeldAnswer{}, "", err
	}
	if rerr := s.store.CreateChallenge(ctx, claimed); rerr != nil {
		return HeldAnswer{}, "", unavailable("restore challenge", rerr)
	}
	return HeldAnswer{}, "", err
}

// spend deletes the challenge and opens its held answer, exactly once.
func (s *Service) spend(ctx context.Context, token string, h []byte, method Method) (HeldAnswer, Method, error) {
	spent, err := s.store.SpendChallenge(ctx, h, s.now())
	if errors.Is(err, store.ErrNotFound) {
		return HeldAnswer{}, "", ErrChallengeNotFound
	}
	if err != nil {
		return HeldAnswer{}, "", unavailable("spend challenge", err)
	}
	answer, err := openHeld(token, spent.Sealed)
	if err != nil {
		return HeldAnswer{}, "", err
	}
	return answer, method, nil
}

func openHeld(token string, sealed []byte) (HeldAnswer, error) {
	plain, err := openWithToken(token, sealed)
	if err != nil {
		return HeldAnswer{}, fmt.Errorf("mfa: open held answer: %w", err)
	}
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

func sealWithToken(token string, plain []byte) ([]byte, error) {
	block, err := aes.NewCipher(tokenKey(token))
	if err != nil {
		return nil, fmt.Errorf("mfa: seal: %w", err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("mfa: seal: %w", err)
	}
	return aead.Seal(nil, nil, plain, nil), nil
}

func openWithToken(token string, sealed []byte) ([]byte, error) {
	block, err := aes.NewCipher(tokenKey(token))
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, err
	}
	return aead.Open(nil, nil, sealed, nil)
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
