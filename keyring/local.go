package keyring

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

const (
	localFormat    = 1
	defaultKeyName = "totpgate"
	keySize        = 32 // AES-256
	nonceSize      = 12 // GCM standard nonce
	tagSize        = 16
	// aadPrefix domain-separates the associated data so the same key could
	// never be confused with another use; bindTo follows the NUL.
	aadPrefix = "totpgate/v1\x00"

	// The keyring protects small secrets; the limits keep a hostile or
	// corrupt value from causing large allocations.
	maxPlaintext  = 64 << 10
	maxFileSize   = 1 << 20
	maxKeyNameLen = 128

	defaultReloadInterval = time.Second
	lockPollInterval      = 20 * time.Millisecond
	createLockTimeout     = 30 * time.Second
)

// maxCiphertextLen is the longest string Encrypt can produce (padded
// base64 of the largest payload, plus slack for the prefix); Decrypt
// refuses anything longer before decoding it.
const maxCiphertextLen = 4*((maxPlaintext+nonceSize+tagSize+2)/3) + 32

// b64 is the payload encoding. Strict: exactly one spelling per payload.
var b64 = base64.StdEncoding.Strict()

// errEmptyBindTo: an unbound ciphertext would defeat the cross-user check,
// and Vault's derived keys refuse an empty context too.
var errEmptyBindTo = errors.New("keyring: bindTo must not be empty")

// ErrInvalidMinVersion is returned by SetMinDecryptionVersion for a version
// above the latest or below the current minimum (callers answer 400/409).
var ErrInvalidMinVersion = errors.New("keyring: invalid minimum decryption version")

// LocalOption configures OpenLocal.
type LocalOption func(*localConfig)

type localConfig struct {
	reloadInterval time.Duration
	keyName        string
	create         bool
}

// WithReloadInterval sets how often Local stats its file to notice a
// rotation by another process (default one second). Zero or less checks on
// every call.
func WithReloadInterval(d time.Duration) LocalOption {
	return func(c *localConfig) { c.reloadInterval = d }
}

// WithCreate(false) makes OpenLocal fail when the file does not exist
// instead of creating it: for tools such as "totpgate keys rotate", where a
// mistyped path must not silently start a new, empty keyring.
func WithCreate(create bool) LocalOption {
	return func(c *localConfig) { c.create = create }
}

// WithKeyName sets the key name written when OpenLocal creates the file
// (default "totpgate"). An existing file keeps its own name.
func WithKeyName(name string) LocalOption {
	return func(c *localConfig) { c.keyName = name }
}

// Local is a Keyring backed by a JSON file of versioned AES-256-GCM keys.
//
// Several processes may share the file: writers (Rotate,
// SetMinDecryptionVersion, creation) serialize on an flock'd "<path>.lock"
// and replace the file atomically; readers notice a new file within the
// reload interval, or at once when a ciphertext names a version they do not
// have yet. Local is safe for concurrent use.
//
// Local never prints key material: String, GoString, Format and LogValue
// show only the path, and errors never include keys or plaintext.
type Local struct {
	path           string
	lockPath       string
	reloadInterval time.Duration

	// writeMu serializes this process's writers so they queue here rather
	// than all polling the flock.
	writeMu sync.Mutex

	mu      sync.RWMutex
	keys    *keyset // immutable once installed; replaced whole on reload
	id      fileID
	checked time.Time
}

// keyset is the parsed, in-memory form of the file. It holds only AEADs
// (no raw key bytes), and is never mutated after construction.
type keyset struct {
	name   string
	min    int
	latest int
	aeads  map[int]cipher.AEAD
}

// fileID identifies one version of the file. Writers always rename a new
// file into place, so the inode changes on every write; size and mtime
// also catch an in-place edit.
type fileID struct {
	dev, ino uint64
	size     int64
	mtime    int64
}

// keyFile is the on-disk format.
type keyFile struct {
	Format               int        `json:"format"`
	Name                 string     `json:"name"`
	MinDecryptionVersion int        `json:"min_decryption_version"`
	Keys                 []keyEntry `json:"keys"`
}

type keyEntry struct {
	Version   int       `json:"version"`
	Key       secretB64 `json:"key"`
	CreatedAt time.Time `json:"created_at"`
}

// secretB64 is a base64 key as stored in the file. Its Format keeps it out
// of any accidental fmt output of a keyFile.
type secretB64 string

func (secretB64) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, "[redacted]") }

// OpenLocal opens the keyring file at path, creating it (mode 0600, one key
// version) if it does not exist. It refuses a file that is readable or
// writable by group or others.
func OpenLocal(path string, opts ...LocalOption) (*Local, error) {
	cfg := localConfig{reloadInterval: defaultReloadInterval, keyName: defaultKeyName, create: true}
	for _, o := range opts {
		o(&cfg)
	}
	if path == "" {
		return nil, errors.New("open local keyring: empty path")
	}
	if err := validKeyName(cfg.keyName); err != nil {
		return nil, fmt.Errorf("open local keyring: %w", err)
	}
	l := &Local{
		path:           path,
		lockPath:       path + ".lock",
		reloadInterval: cfg.reloadInterval,
	}
	kf, id, err := readKeyFile(path)
	if errors.Is(err, fs.ErrNotExist) && cfg.create {
		if err := l.create(cfg.keyName); err != nil {
			return nil, fmt.Errorf("create local keyring %s: %w", path, err)
		}
		kf, id, err = readKeyFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("open local keyring %s: %w", path, err)
	}
	ks, err := newKeyset(kf)
	if err != nil {
		return nil, fmt.Errorf("open local keyring %s: %w", path, err)
	}
	l.keys, l.id, l.checked = ks, id, time.Now()
	return l, nil
}

// create writes a new keyring file with one key, unless another process
// created it first (checked again under the lock, so two processes starting
// together agree on one key).
func (l *Local) create(name string) error {
	if err := os.MkdirAll(filepath.Dir(l.path), 0o700); err != nil {
		return fmt.Errorf("create directory: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), createLockTimeout)
	defer cancel()
	unlock, err := lockFile(ctx, l.lockPath)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := os.Lstat(l.path); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	e, err := newKeyEntry(1)
	if err != nil {
		return err
	}
	kf := &keyFile{Format: localFormat, Name: name, MinDecryptionVersion: 1, Keys: []keyEntry{e}}
	return writeKeyFile(l.path, kf)
}

// Encrypt seals plaintext with the latest key version.
func (l *Local) Encrypt(ctx context.Context, bindTo string, plaintext []byte) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("encrypt: %w", err)
	}
	if bindTo == "" {
		return "", errEmptyBindTo
	}
	if len(plaintext) > maxPlaintext {
		return "", fmt.Errorf("encrypt: plaintext longer than %d bytes", maxPlaintext)
	}
	ks, err := l.current(false)
	if err != nil {
		return "", fmt.Errorf("encrypt: %w", err)
	}
	return ks.seal(ks.latest, bindTo, plaintext), nil
}

// Decrypt opens a ciphertext made by Encrypt (or Rewrap) with the same bindTo.
func (l *Local) Decrypt(ctx context.Context, bindTo string, ciphertext string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	pt, _, err := l.decrypt(bindTo, ciphertext)
	if err != nil {
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	return pt, nil
}

// decrypt returns the plaintext and the key version that opened it.
func (l *Local) decrypt(bindTo, ciphertext string) ([]byte, int, error) {
	if bindTo == "" {
		return nil, 0, errEmptyBindTo
	}
	if len(ciphertext) > maxCiphertextLen {
		return nil, 0, fmt.Errorf("%w: too long", ErrMalformed)
	}
	backend, version, payload, err := splitCiphertext(ciphertext)
	if err != nil {
		return nil, 0, err
	}
	if backend != BackendLocal {
		return nil, 0, fmt.Errorf("%w: a %s ciphertext, not a local one", ErrMalformed, backend)
	}
	sealed, err := b64.DecodeString(payload)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: bad base64 payload", ErrMalformed)
	}
	if len(sealed) < nonceSize+tagSize {
		return nil, 0, fmt.Errorf("%w: payload too short", ErrMalformed)
	}
	ks, err := l.current(false)
	if err != nil {
		return nil, 0, err
	}
	aead, err := ks.lookup(version)
	if errors.Is(err, ErrUnknownVersion) {
		// Another process may have rotated since our last look.
		if ks, err = l.current(true); err != nil {
			return nil, 0, err
		}
		aead, err = ks.lookup(version)
	}
	if err != nil {
		return nil, 0, err
	}
	pt, err := aead.Open(nil, nil, sealed, aad(bindTo))
	if err != nil {
		return nil, 0, fmt.Errorf("%w: key version %d", ErrDecrypt, version)
	}
	return pt, version, nil
}

// Rewrap decrypts each item and re-encrypts it under the latest version.
// Items already on the latest version are checked (they must decrypt with
// their BindTo) and returned unchanged.
func (l *Local) Rewrap(ctx context.Context, items []Item) ([]Result, error) {
	if _, err := l.current(false); err != nil {
		return nil, fmt.Errorf("rewrap: %w", err)
	}
	results := make([]Result, len(items))
	for i, it := range items {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("rewrap: %w", err)
		}
		pt, v, err := l.decrypt(it.BindTo, it.Ciphertext)
		if err != nil {
			results[i] = Result{Err: fmt.Errorf("rewrap item %d: %w", i, err)}
			continue
		}
		ks, err := l.current(false)
		if err != nil {
			clear(pt)
			return nil, fmt.Errorf("rewrap: %w", err)
		}
		if v >= ks.latest {
			results[i] = Result{Ciphertext: it.Ciphertext, Version: v}
		} else {
			results[i] = Result{Ciphertext: ks.seal(ks.latest, it.BindTo, pt), Version: ks.latest}
		}
		clear(pt)
	}
	return results, nil
}

// Rotate adds a new key version, which Encrypt uses from now on.
func (l *Local) Rotate(ctx context.Context) (Status, error) {
	st, err := l.modify(ctx, func(kf *keyFile) (bool, error) {
		e, err := newKeyEntry(latestVersion(kf) + 1)
		if err != nil {
			return false, err
		}
		kf.Keys = append(kf.Keys, e)
		return true, nil
	})
	if err != nil {
		return Status{}, fmt.Errorf("rotate local keyring %s: %w", l.path, err)
	}
	return st, nil
}

// SetMinDecryptionVersion retires every key version below v. Raising it is
// one-way: lowering would resurrect keys an operator meant to retire.
func (l *Local) SetMinDecryptionVersion(ctx context.Context, v int) (Status, error) {
	st, err := l.modify(ctx, func(kf *keyFile) (bool, error) {
		latest := latestVersion(kf)
		switch {
		case v > latest:
			return false, fmt.Errorf("%w: %d is above the latest version %d", ErrInvalidMinVersion, v, latest)
		case v < kf.MinDecryptionVersion:
			return false, fmt.Errorf("%w: %d is below the current minimum %d (it can only be raised)",
				ErrInvalidMinVersion, v, kf.MinDecryptionVersion)
		case v == kf.MinDecryptionVersion:
			return false, nil
		}
		kf.MinDecryptionVersion = v
		return true, nil
	})
	if err != nil {
		return Status{}, fmt.Errorf("set min decryption version of local keyring %s: %w", l.path, err)
	}
	return st, nil
}

// Status reports the key versions.
func (l *Local) Status(ctx context.Context) (Status, error) {
	if err := ctx.Err(); err != nil {
		return Status{}, fmt.Errorf("status: %w", err)
	}
	ks, err := l.current(false)
	if err != nil {
		return Status{}, fmt.Errorf("status: %w", err)
	}
	return ks.status(), nil
}

// Ping checks that the file is still there and valid.
func (l *Local) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	if _, err := l.current(true); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	return nil
}

// Reload re-reads the file now if it changed, instead of waiting for the
// reload interval (for SIGHUP handlers and tests).
func (l *Local) Reload(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	if _, err := l.current(true); err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	return nil
}

// current returns the keyset, first reloading the file if it changed and
// the reload interval has passed (or force is set). A file that became
// unreadable or invalid fails closed with ErrUnavailable rather than
// serving on with keys an operator may have meant to withdraw.
func (l *Local) current(force bool) (*keyset, error) {
	l.mu.RLock()
	ks, checked := l.keys, l.checked
	l.mu.RUnlock()
	if !force && time.Since(checked) < l.reloadInterval {
		return ks, nil
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if !force && time.Since(l.checked) < l.reloadInterval {
		return l.keys, nil // another goroutine just checked
	}
	fi, err := os.Stat(l.path)
	if err != nil {
		return nil, fmt.Errorf("%w: local keyring %s: %w", ErrUnavailable, l.path, err)
	}
	if idOf(fi) == l.id {
		l.checked = time.Now()
		return l.keys, nil
	}
	kf, id, err := readKeyFile(l.path)
	if err != nil {
		return nil, fmt.Errorf("%w: reload local keyring %s: %w", ErrUnavailable, l.path, err)
	}
	nks, err := newKeyset(kf)
	if err != nil {
		return nil, fmt.Errorf("%w: reload local keyring %s: %w", ErrUnavailable, l.path, err)
	}
	l.keys, l.id, l.checked = nks, id, time.Now()
	return nks, nil
}

// modify runs a read-modify-write of the file under the cross-process lock
// and installs the result. fn reports whether it changed anything.
func (l *Local) modify(ctx context.Context, fn func(*keyFile) (bool, error)) (Status, error) {
	if err := ctx.Err(); err != nil {
		return Status{}, err
	}
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	unlock, err := lockFile(ctx, l.lockPath)
	if err != nil {
		return Status{}, err
	}
	defer unlock()

	// Read the file afresh: another process may have written it since we
	// last looked, and its changes must not be lost.
	kf, _, err := readKeyFile(l.path)
	if err != nil {
		return Status{}, err
	}
	changed, err := fn(kf)
	if err != nil {
		return Status{}, err
	}
	if changed {
		if err := validateKeyFile(kf); err != nil {
			return Status{}, err
		}
		if err := writeKeyFile(l.path, kf); err != nil {
			return Status{}, err
		}
	}
	// Read back what is on disk now, so memory matches the file exactly.
	kf, id, err := readKeyFile(l.path)
	if err != nil {
		return Status{}, err
	}
	ks, err := newKeyset(kf)
	if err != nil {
		return Status{}, err
	}
	l.mu.Lock()
	l.keys, l.id, l.checked = ks, id, time.Now()
	l.mu.Unlock()
	return ks.status(), nil
}

// String shows the file path only.
func (l *Local) String() string {
	if l == nil {
		return "keyring.Local(nil)"
	}
	return "keyring.Local(" + strconv.Quote(l.path) + ")"
}

// GoString shows the file path only.
func (l *Local) GoString() string { return l.String() }

// Format makes every fmt verb (%v, %+v, %#v, %x, %d, ...) print String, so
// no verb can walk into the struct.
func (l *Local) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, l.String()) }

// LogValue keeps slog handlers from reflecting over the struct.
func (l *Local) LogValue() slog.Value { return slog.StringValue(l.String()) }

func (ks *keyset) status() Status {
	return Status{
		Backend:              BackendLocal,
		KeyName:              ks.name,
		LatestVersion:        ks.latest,
		MinDecryptionVersion: ks.min,
		MinEncryptionVersion: 0,
	}
}

func (ks *keyset) lookup(version int) (cipher.AEAD, error) {
	if version < ks.min {
		return nil, fmt.Errorf("%w: key version %d is below the minimum %d", ErrVersionRetired, version, ks.min)
	}
	aead, ok := ks.aeads[version]
	if !ok {
		return nil, fmt.Errorf("%w: key version %d (latest is %d)", ErrUnknownVersion, version, ks.latest)
	}
	return aead, nil
}

// seal encrypts under version, which must exist in ks.
func (ks *keyset) seal(version int, bindTo string, plaintext []byte) string {
	// The AEAD draws a fresh 12-byte nonce from crypto/rand and prepends
	// it: sealed = nonce || ciphertext || tag.
	sealed := ks.aeads[version].Seal(nil, nil, plaintext, aad(bindTo))
	return BackendLocal + ":v" + strconv.Itoa(version) + ":" + b64.EncodeToString(sealed)
}

func aad(bindTo string) []byte {
	b := make([]byte, 0, len(aadPrefix)+len(bindTo))
	b = append(b, aadPrefix...)
	return append(b, bindTo...)
}

func newKeyset(kf *keyFile) (*keyset, error) {
	if err := validateKeyFile(kf); err != nil {
		return nil, err
	}
	ks := &keyset{
		name:   kf.Name,
		min:    kf.MinDecryptionVersion,
		latest: latestVersion(kf),
		aeads:  make(map[int]cipher.AEAD, len(kf.Keys)),
	}
	for _, e := range kf.Keys {
		raw, err := b64.DecodeString(string(e.Key))
		if err != nil {
			return nil, fmt.Errorf("key version %d: bad base64", e.Version)
		}
		block, err := aes.NewCipher(raw)
		clear(raw) // the cipher keeps its own expanded copy
		if err != nil {
			return nil, fmt.Errorf("key version %d: bad key", e.Version)
		}
		aead, err := cipher.NewGCMWithRandomNonce(block)
		if err != nil {
			return nil, fmt.Errorf("key version %d: %w", e.Version, err)
		}
		ks.aeads[e.Version] = aead
	}
	return ks, nil
}

func validateKeyFile(kf *keyFile) error {
	if kf.Format != localFormat {
		return fmt.Errorf("unsupported keyring format %d (want %d)", kf.Format, localFormat)
	}
	if err := validKeyName(kf.Name); err != nil {
		return err
	}
	if len(kf.Keys) == 0 {
		return errors.New("keyring file has no keys")
	}
	seen := make(map[int]bool, len(kf.Keys))
	for i, e := range kf.Keys {
		if e.Version < 1 || e.Version > maxVersion {
			return fmt.Errorf("key %d: version %d out of range", i, e.Version)
		}
		if seen[e.Version] {
			return fmt.Errorf("key version %d appears twice", e.Version)
		}
		seen[e.Version] = true
		// Decode only to check the length; never report the content.
		raw, err := b64.DecodeString(string(e.Key))
		n := len(raw)
		clear(raw)
		if err != nil || n != keySize {
			return fmt.Errorf("key version %d: not %d bytes of base64", e.Version, keySize)
		}
	}
	if latest := latestVersion(kf); kf.MinDecryptionVersion < 1 || kf.MinDecryptionVersion > latest {
		return fmt.Errorf("min_decryption_version %d outside 1..%d", kf.MinDecryptionVersion, latest)
	}
	return nil
}

func validKeyName(name string) error {
	if name == "" || len(name) > maxKeyNameLen {
		return fmt.Errorf("key name must be 1..%d bytes", maxKeyNameLen)
	}
	for _, r := range name {
		if r < 0x21 || r > 0x7e {
			return errors.New("key name must be printable ASCII without spaces")
		}
	}
	return nil
}

func latestVersion(kf *keyFile) int {
	latest := 0
	for _, e := range kf.Keys {
		latest = max(latest, e.Version)
	}
	return latest
}

func newKeyEntry(version int) (keyEntry, error) {
	raw := make([]byte, keySize)
	defer clear(raw)
	if _, err := rand.Read(raw); err != nil {
		return keyEntry{}, fmt.Errorf("generate key: %w", err)
	}
	return keyEntry{
		Version:   version,
		Key:       secretB64(b64.EncodeToString(raw)),
		CreatedAt: time.Now().UTC().Truncate(time.Second),
	}, nil
}

// readKeyFile reads and validates the file. The permission check uses the
// opened file's own stat, so it describes exactly what was read.
func readKeyFile(path string) (*keyFile, fileID, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fileID{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fileID{}, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fileID{}, fmt.Errorf("%s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fileID{}, fmt.Errorf(
			"keyring file %s has mode %04o, which lets group or others access the keys; run: chmod 600 %s",
			path, perm, path)
	}
	if fi.Size() > maxFileSize {
		return nil, fileID{}, fmt.Errorf("keyring file %s is larger than %d bytes", path, maxFileSize)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	defer clear(data)
	if err != nil {
		return nil, fileID{}, err
	}
	kf, err := decodeKeyFile(data)
	if err != nil {
		return nil, fileID{}, err
	}
	if err := validateKeyFile(kf); err != nil {
		return nil, fileID{}, err
	}
	return kf, idOf(fi), nil
}

// decodeKeyFile parses the JSON strictly. Unknown fields are refused so a
// rewrite can never silently drop data written by a newer version. Decoder
// errors are reduced to a position: their text can quote file content.
func decodeKeyFile(data []byte) (*keyFile, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var kf keyFile
	if err := dec.Decode(&kf); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("keyring file: invalid JSON at byte %d", se.Offset)
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("keyring file: field %q has the wrong type", te.Field)
		}
		return nil, errors.New("keyring file: invalid JSON (unknown field or bad structure)")
	}
	if dec.More() {
		return nil, errors.New("keyring file: trailing data after the JSON object")
	}
	return &kf, nil
}

// writeKeyFile replaces path atomically: a reader sees the old file or the
// new one, never a mix, and a crash leaves one of the two on disk.
func writeKeyFile(path string, kf *keyFile) (err error) {
	data, err := json.MarshalIndent(kf, "", "  ")
	if err != nil {
		return fmt.Errorf("encode keyring file: %w", err)
	}
	defer clear(data)
	data = append(data, '\n')

	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("write keyring file: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("write keyring file: %w", err)
	}
	if _, err = tmp.Write(data); err != nil {
		return fmt.Errorf("write keyring file: %w", err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("write keyring file: %w", err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("write keyring file: %w", err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write keyring file: %w", err)
	}
	// The rename is durable only once the directory entry is.
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync keyring directory: %w", err)
	}
	defer d.Close()
	if err = d.Sync(); err != nil {
		return fmt.Errorf("sync keyring directory: %w", err)
	}
	return nil
}

// lockFile takes an exclusive flock on path, polling so ctx can cancel the
// wait. The lock file is never removed: removing it would let two
// processes lock two different inodes.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	fd := int(f.Fd())
	for {
		err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(fd, syscall.LOCK_UN)
				_ = f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		t := time.NewTimer(lockPollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, ctx.Err())
		case <-t.C:
		}
	}
}

func idOf(fi fs.FileInfo) fileID {
	id := fileID{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino = uint64(st.Dev), st.Ino //nolint:unconvert // Dev is not uint64 on every platform
	}
	return id
}

// Interface guards.
var (
	_ Keyring        = (*Local)(nil)
	_ fmt.Formatter  = (*Local)(nil)
	_ slog.LogValuer = (*Local)(nil)
)
