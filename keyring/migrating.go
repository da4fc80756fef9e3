package keyring

import (
	"context"
	"errors"
	"fmt"
)

// Migrating moves secrets from one keyring to another (local to Vault, or
// back). It encrypts with the new keyring, decrypts each ciphertext with
// the keyring its prefix names, and Rewrap re-encrypts the old keyring's
// ciphertexts under the new one, so the ordinary rewrap job performs the
// migration while logins go on. Key operations (Rotate, Status, minimum
// version) act on the new keyring.
//
// Unlike a rewrap inside Vault, migrating an item decrypts it in this
// process: there is no other way across keyrings.
type Migrating struct {
	to, from               Keyring
	toBackend, fromBackend string
}

var _ Keyring = (*Migrating)(nil)

// NewMigrating returns a keyring that writes with to (backend toBackend) and
// still reads from (backend fromBackend).
func NewMigrating(to Keyring, toBackend string, from Keyring, fromBackend string) (*Migrating, error) {
	if to == nil || from == nil || toBackend == fromBackend {
		return nil, errors.New("keyring: migrating needs two keyrings of different backends")
	}
	return &Migrating{to: to, from: from, toBackend: toBackend, fromBackend: fromBackend}, nil
}

// Encrypt implements Keyring with the new keyring.
func (m *Migrating) Encrypt(ctx context.Context, bindTo string, plaintext []byte) (string, error) {
	return m.to.Encrypt(ctx, bindTo, plaintext)
}

// Decrypt implements Keyring with the keyring the ciphertext names.
func (m *Migrating) Decrypt(ctx context.Context, bindTo string, ciphertext string) ([]byte, error) {
	k, err := m.owner(ciphertext)
	if err != nil {
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	return k.Decrypt(ctx, bindTo, ciphertext)
}

func (m *Migrating) owner(ciphertext string) (Keyring, error) {
	backend, _, err := ParseVersion(ciphertext)
	switch {
	case err != nil:
		return nil, err
	case backend == m.toBackend:
		return m.to, nil
	case backend == m.fromBackend:
		return m.from, nil
	default:
		return nil, fmt.Errorf("%w: %s ciphertext, keyrings are %s and %s", ErrMalformed, backend, m.toBackend, m.fromBackend)
	}
}

// Rewrap rewraps the new keyring's items in one batch and moves the old
// keyring's items across one by one.
func (m *Migrating) Rewrap(ctx context.Context, items []Item) ([]Result, error) {
	results := make([]Result, len(items))
	var same []Item
	var sameIdx []int
	for i, it := range items {
		backend, _, err := ParseVersion(it.Ciphertext)
		if err != nil {
			results[i] = Result{Err: fmt.Errorf("rewrap item %d: %w", i, err)}
			continue
		}
		if backend == m.toBackend {
			same = append(same, it)
			sameIdx = append(sameIdx, i)
			continue
		}
		ct, err := m.move(ctx, it)
		if errors.Is(err, ErrUnavailable) || ctx.Err() != nil {
			return nil, fmt.Errorf("rewrap: %w", err)
		}
		if err != nil {
			results[i] = Result{Err: fmt.Errorf("rewrap item %d: %w", i, err)}
			continue
		}
		_, v, err := ParseVersion(ct)
		results[i] = Result{Ciphertext: ct, Version: v, Err: err}
	}
	if len(same) > 0 {
		res, err := m.to.Rewrap(ctx, same)
		if err != nil {
			return nil, err
		}
		for j, r := range res {
			results[sameIdx[j]] = r
		}
	}
	return results, nil
}

func (m *Migrating) move(ctx context.Context, it Item) (string, error) {
	k, err := m.owner(it.Ciphertext)
	if err != nil {
		return "", err
	}
	pt, err := k.Decrypt(ctx, it.BindTo, it.Ciphertext)
	if err != nil {
		return "", err
	}
	defer clear(pt)
	return m.to.Encrypt(ctx, it.BindTo, pt)
}

// Rotate implements Keyring on the new keyring.
func (m *Migrating) Rotate(ctx context.Context) (Status, error) { return m.to.Rotate(ctx) }

// Status implements Keyring on the new keyring.
func (m *Migrating) Status(ctx context.Context) (Status, error) { return m.to.Status(ctx) }

// SetMinDecryptionVersion implements Keyring on the new keyring.
func (m *Migrating) SetMinDecryptionVersion(ctx context.Context, v int) (Status, error) {
	return m.to.SetMinDecryptionVersion(ctx, v)
}

// Ping reports whether both keyrings can serve: logins still need the old
// one until the migration is done.
func (m *Migrating) Ping(ctx context.Context) error {
	return errors.Join(m.to.Ping(ctx), m.from.Ping(ctx))
}
