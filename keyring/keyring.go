// Package keyring encrypts the TOTP secrets totpgate stores.
//
// A secret is encrypted before it reaches the store and is bound to the
// user it belongs to, so a ciphertext copied into another user's row does
// not decrypt. Keys are versioned: rotation adds a version that new
// ciphertexts use at once, older versions keep decrypting until the
// minimum decryption version is raised, and Rewrap moves stored
// ciphertexts forward in between.
//
// Two implementations exist: Local (a key file, for development and small
// single-node installs) and Vault transit (package vaultkeys). Both write
// ciphertexts as "<backend>:v<version>:<payload>", so ParseVersion can tell
// which backend and key version a stored value needs without decrypting it.
package keyring

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Keyring encrypts small secrets bound to a context (the user id).
//
// Implementations are safe for concurrent use. Errors never contain key
// material or plaintext.
type Keyring interface {
	// Encrypt seals plaintext under the latest key version, bound to bindTo.
	Encrypt(ctx context.Context, bindTo string, plaintext []byte) (ciphertext string, err error)
	// Decrypt opens a ciphertext made by Encrypt with the same bindTo. The
	// caller owns the returned slice and should clear it after use.
	Decrypt(ctx context.Context, bindTo string, ciphertext string) ([]byte, error)
	// Rewrap re-encrypts ciphertexts under the latest key version; items
	// fail individually. Results are in the order of items. The error is
	// for failures of the whole batch (backend down, ctx cancelled).
	Rewrap(ctx context.Context, items []Item) ([]Result, error)
	// Rotate adds a key version and makes it the one Encrypt uses.
	Rotate(ctx context.Context) (Status, error)
	// Status reports the key versions.
	Status(ctx context.Context) (Status, error)
	// SetMinDecryptionVersion retires every version below v. It refuses to
	// go above the latest version or below the current minimum.
	SetMinDecryptionVersion(ctx context.Context, v int) (Status, error)
	// Ping reports whether the backend can serve requests (readiness).
	Ping(ctx context.Context) error
}

// Item is one ciphertext to rewrap, with the context it is bound to.
type Item struct {
	BindTo     string
	Ciphertext string
}

// Result is the outcome of rewrapping one Item. On success Ciphertext is
// the value to store (it may equal the input when the item was already on
// the latest version) and Version its key version; on failure Err is set and
// the stored value should be left alone.
type Result struct {
	Ciphertext string
	Version    int
	Err        error
}

// Status describes the key versions of a keyring.
type Status struct {
	Backend string // "local" or "vault"
	KeyName string
	// LatestVersion is the version Encrypt and Rewrap use.
	LatestVersion int
	// MinDecryptionVersion is the oldest version Decrypt still accepts.
	MinDecryptionVersion int
	// MinEncryptionVersion follows Vault: 0 means "the latest version".
	// The local keyring always encrypts with the latest version and
	// reports 0.
	MinEncryptionVersion int
}

// Backend names, as they appear in ciphertext prefixes and Status.Backend.
const (
	BackendLocal = "local"
	BackendVault = "vault"
)

// Sentinel errors. Implementations wrap them with context; test with
// errors.Is.
var (
	// ErrMalformed: not a ciphertext this keyring understands (bad prefix,
	// bad encoding, wrong backend, too short).
	ErrMalformed = errors.New("keyring: malformed ciphertext")
	// ErrDecrypt: authentication failed. The ciphertext was tampered with
	// or is bound to another context (e.g. copied to another user's row).
	ErrDecrypt = errors.New("keyring: decryption failed")
	// ErrVersionRetired: the key version is below the minimum decryption
	// version.
	ErrVersionRetired = errors.New("keyring: key version retired")
	// ErrUnknownVersion: the key version does not exist (yet) in this
	// keyring.
	ErrUnknownVersion = errors.New("keyring: unknown key version")
	// ErrUnavailable: the backend cannot serve requests right now; callers
	// answer 503 and fail closed.
	ErrUnavailable = errors.New("keyring: backend unavailable")
)

// maxVersion bounds the version number ParseVersion accepts, so a
// ciphertext cannot name a version that overflows arithmetic elsewhere.
const maxVersion = 1<<31 - 1

// ParseVersion reads the backend and key version from a ciphertext of the
// form "local:vN:payload" or "vault:vN:payload". It does not look inside the
// payload beyond checking it is present. Errors wrap ErrMalformed.
func ParseVersion(ciphertext string) (backend string, version int, err error) {
	backend, version, _, err = splitCiphertext(ciphertext)
	return backend, version, err
}

// splitCiphertext is ParseVersion that also returns the payload.
func splitCiphertext(ciphertext string) (backend string, version int, payload string, err error) {
	backend, rest, ok := strings.Cut(ciphertext, ":")
	if !ok {
		return "", 0, "", fmt.Errorf("%w: no backend prefix", ErrMalformed)
	}
	switch backend {
	case BackendLocal, BackendVault:
	default:
		// The backend name is attacker-influenced only in theory (it comes
		// from the store), but quoting a bounded prefix keeps logs sane.
		return "", 0, "", fmt.Errorf("%w: unknown backend %.16q", ErrMalformed, backend)
	}
	v, payload, ok := strings.Cut(rest, ":")
	if !ok {
		return "", 0, "", fmt.Errorf("%w: no version", ErrMalformed)
	}
	version, err = parseVersionField(v)
	if err != nil {
		return "", 0, "", err
	}
	if payload == "" {
		return "", 0, "", fmt.Errorf("%w: empty payload", ErrMalformed)
	}
	return backend, version, payload, nil
}

// parseVersionField parses "vN" strictly: decimal digits, no sign, no
// leading zeros, N >= 1. Strictness keeps one version one spelling, so two
// stored strings never name the same version differently.
func parseVersionField(v string) (int, error) {
	digits, ok := strings.CutPrefix(v, "v")
	if !ok || digits == "" || len(digits) > 10 || digits[0] == '0' {
		return 0, fmt.Errorf("%w: bad version field", ErrMalformed)
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, fmt.Errorf("%w: bad version field", ErrMalformed)
		}
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n > maxVersion {
		return 0, fmt.Errorf("%w: version out of range", ErrMalformed)
	}
	return int(n), nil
}
