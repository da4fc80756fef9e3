package mfa

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
)

// Purposes of the keys derived from the recovery-code key. Each feature
// that needs a MAC or keyed hash of its own derives one, so no two
// features can ever be made to accept each other's values.
const (
	purposeDeviceToken = "totpgate/trusted-device-token/v1"
	purposeStepUpProof = "totpgate/step-up-proof/v1"
)

// subkey derives the key for purpose from the recovery-code key, which
// is kept encrypted by the keyring (so every replica derives the same key
// and none is stored in the clear). It fails with ErrUnavailable when the
// keyring cannot open the recovery-code key.
func (s *Service) subkey(ctx context.Context, purpose string) ([]byte, error) {
	root, err := s.recoveryKey(ctx)
	if err != nil {
		return nil, unavailable("derive "+purpose, err)
	}
	m := hmac.New(sha256.New, root)
	m.Write([]byte(purpose))
	return m.Sum(nil), nil
}
