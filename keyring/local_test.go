package keyring_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/totpgate/totpgate/keyring"
)

// openTemp opens a fresh keyring in a temp dir.
func openTemp(t testing.TB, opts ...keyring.LocalOption) (*keyring.Local, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys.json")
	l, err := keyring.OpenLocal(path, opts...)
	if err != nil {
		t.Fatalf("OpenLocal: %v", err)
	}
	return l, path
}

func mustEncrypt(t testing.TB, k keyring.Keyring, bindTo string, pt []byte) string {
	t.Helper()
	ct, err := k.Encrypt(context.Background(), bindTo, pt)
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	return ct
}

func versionOf(t testing.TB, ct string) int {
	t.Helper()
	backend, v, err := keyring.ParseVersion(ct)
	if err != nil {
		t.Fatalf("ParseVersion(%q): %v", ct, err)
	}
	if backend != keyring.BackendLocal {
		t.Fatalf("backend = %q, want local", backend)
	}
	return v
}

// tamper flips one bit of the decoded payload at index i (negative: from the end).
func tamper(t testing.TB, ct string, i int) string {
	t.Helper()
	prefix := ct[:strings.LastIndexByte(ct, ':')+1]
	raw, err := base64.StdEncoding.DecodeString(ct[len(prefix):])
	if err != nil {
		t.Fatalf("decode payload: %v", err)
	}
	if i < 0 {
		i += len(raw)
	}
	raw[i] ^= 0x01
	return prefix + base64.StdEncoding.EncodeToString(raw)
}

func TestLocalRoundTrip(t *testing.T) {
	t.Parallel()
	l, _ := openTemp(t)
	tests := []struct {
		name   string
		bindTo string
		pt     []byte
	}{
		{"empty plaintext", "user-1", []byte{}},
		{"totp secret", "user-1", []byte("12345678901234567890")},
		{"binary", "42", []byte{0, 1, 2, 0xff, 0xfe, 0}},
		{"unicode bind", "Jürgen@例え.jp", []byte("secret")},
		{"bind with NUL", "a\x00b", []byte("secret")},
		{"4 KiB", "user-2", bytes.Repeat([]byte("x"), 4096)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ct := mustEncrypt(t, l, tt.bindTo, tt.pt)
			if !strings.HasPrefix(ct, "local:v1:") {
				t.Fatalf("ciphertext %q lacks local:v1: prefix", ct)
			}
			if bytes.Contains([]byte(ct), tt.pt) && len(tt.pt) > 4 {
				t.Fatal("plaintext visible in ciphertext")
			}
			got, err := l.Decrypt(t.Context(), tt.bindTo, ct)
			if err != nil {
				t.Fatalf("Decrypt: %v", err)
			}
			if !bytes.Equal(got, tt.pt) {
				t.Fatalf("round trip = %x, want %x", got, tt.pt)
			}
			// Random nonces: the same plaintext never encrypts the same way.
			if ct2 := mustEncrypt(t, l, tt.bindTo, tt.pt); ct2 == ct {
				t.Fatal("two encryptions gave the same ciphertext")
			}
		})
	}
}

func TestLocalDecryptFailures(t *testing.T) {
	t.Parallel()
	l, _ := openTemp(t)
	ct := mustEncrypt(t, l, "alice", []byte("JBSWY3DPEHPK3PXP"))
	tests := []struct {
		name   string
		bindTo string
		ct     string
		want   error
	}{
		{"other user's row", "bob", ct, keyring.ErrDecrypt},
		{"bind prefix", "alic", ct, keyring.ErrDecrypt},
		{"bind suffix", "alice\x00", ct, keyring.ErrDecrypt},
		{"flip nonce", "alice", tamper(t, ct, 0), keyring.ErrDecrypt},
		{"flip body", "alice", tamper(t, ct, 13), keyring.ErrDecrypt},
		{"flip tag", "alice", tamper(t, ct, -1), keyring.ErrDecrypt},
		{"unknown version", "alice", strings.Replace(ct, ":v1:", ":v7:", 1), keyring.ErrUnknownVersion},
		{"truncated by whole base64 quads", "alice", ct[:len(ct)-8], keyring.ErrDecrypt},
		{"truncated mid-quad", "alice", ct[:len(ct)-1], keyring.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pt, err := l.Decrypt(t.Context(), tt.bindTo, tt.ct)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decrypt err = %v, want %v", err, tt.want)
			}
			if pt != nil {
				t.Fatal("plaintext returned with an error")
			}
		})
	}
}

func TestLocalMalformed(t *testing.T) {
	t.Parallel()
	l, _ := openTemp(t)
	valid := mustEncrypt(t, l, "u", []byte("s"))
	payload := valid[len("local:v1:"):]
	tests := []struct {
		name string
		ct   string
	}{
		{"empty", ""},
		{"no colon", "local"},
		{"no payload separator", "local:v1"},
		{"empty payload", "local:v1:"},
		{"version without v", "local:1:" + payload},
		{"version zero", "local:v0:" + payload},
		{"leading zero", "local:v01:" + payload},
		{"negative version", "local:v-1:" + payload},
		{"huge version", "local:v99999999999:" + payload},
		{"not base64", "local:v1:!!!!"},
		{"url base64", "local:v1:" + strings.NewReplacer("+", "-", "/", "_").Replace(payload) + "-_"},
		{"too short", "local:v1:" + base64.StdEncoding.EncodeToString(make([]byte, 27))},
		{"vault ciphertext", "vault:v1:" + payload},
		{"unknown backend", "aws:v1:" + payload},
		{"upper-case backend", "LOCAL:v1:" + payload},
		{"whitespace", " " + valid},
		{"very long", "local:v1:" + strings.Repeat("A", 1<<20)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := l.Decrypt(t.Context(), "u", tt.ct); !errors.Is(err, keyring.ErrMalformed) {
				t.Fatalf("Decrypt(%.40q) err = %v, want ErrMalformed", tt.ct, err)
			}
		})
	}
}

func TestLocalRefusesEmptyBindTo(t *testing.T) {
	t.Parallel()
	l, _ := openTemp(t)
	if _, err := l.Encrypt(t.Context(), "", []byte("s")); err == nil {
		t.Fatal("Encrypt with empty bindTo succeeded")
	}
	ct := mustEncrypt(t, l, "u", []byte("s"))
	if _, err := l.Decrypt(t.Context(), "", ct); err == nil {
		t.Fatal("Decrypt with empty bindTo succeeded")
	}
}

func TestLocalCancelledContext(t *testing.T) {
	t.Parallel()
	l, _ := openTemp(t)
	ct := mustEncrypt(t, l, "u", []byte("s"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := l.Encrypt(ctx, "u", []byte("s")); !errors.Is(err, context.Canceled) {
		t.Errorf("Encrypt err = %v, want context.Canceled", err)
	}
	if _, err := l.Decrypt(ctx, "u", ct); !errors.Is(err, context.Canceled) {
		t.Errorf("Decrypt err = %v, want context.Canceled", err)
	}
	if _, err := l.Rewrap(ctx, []keyring.Item{{BindTo: "u", Ciphertext: ct}}); !errors.Is(err, context.Canceled) {
		t.Errorf("Rewrap err = %v, want context.Canceled", err)
	}
	if _, err := l.Rotate(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Rotate err = %v, want context.Canceled", err)
	}
}

func TestLocalFileCreation(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "sub", "dir")
	path := filepath.Join(dir, "keys.json")
	l, err := keyring.OpenLocal(path, keyring.WithKeyName("my-keys"))
	if err != nil {
		t.Fatalf("OpenLocal: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("file mode = %04o, want 0600", got)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Format               int    `json:"format"`
		Name                 string `json:"name"`
		MinDecryptionVersion int    `json:"min_decryption_version"`
		Keys                 []struct {
			Version   int       `json:"version"`
			Key       string    `json:"key"`
			CreatedAt time.Time `json:"created_at"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("file is not JSON: %v", err)
	}
	if f.Format != 1 || f.Name != "my-keys" || f.MinDecryptionVersion != 1 || len(f.Keys) != 1 {
		t.Fatalf("unexpected file header: format=%d name=%q min=%d keys=%d", f.Format, f.Name, f.MinDecryptionVersion, len(f.Keys))
	}
	if k, err := base64.StdEncoding.DecodeString(f.Keys[0].Key); err != nil || len(k) != 32 || f.Keys[0].Version != 1 {
		t.Fatalf("key entry: version=%d len=%d err=%v", f.Keys[0].Version, len(k), err)
	}
	if f.Keys[0].CreatedAt.IsZero() {
		t.Error("created_at not set")
	}
	st, err := l.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := keyring.Status{Backend: "local", KeyName: "my-keys", LatestVersion: 1, MinDecryptionVersion: 1}
	if st != want {
		t.Fatalf("Status = %+v, want %+v", st, want)
	}
	if err := l.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	// Reopening reads the same key instead of making a new one.
	ct := mustEncrypt(t, l, "u", []byte("s"))
	l2, err := keyring.OpenLocal(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l2.Decrypt(t.Context(), "u", ct); err != nil {
		t.Fatalf("reopened keyring cannot decrypt: %v", err)
	}
}

func TestLocalWithoutCreate(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "keys.json")
	if _, err := keyring.OpenLocal(path, keyring.WithCreate(false)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("OpenLocal without create err = %v, want fs.ErrNotExist", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("file created anyway")
	}
	if _, err := keyring.OpenLocal(path); err != nil {
		t.Fatal(err)
	}
	if _, err := keyring.OpenLocal(path, keyring.WithCreate(false)); err != nil {
		t.Fatalf("existing file: %v", err)
	}
}

func TestLocalRefusesLooseFileMode(t *testing.T) {
	t.Parallel()
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660, 0o666} {
		t.Run(fmt.Sprintf("%04o", mode), func(t *testing.T) {
			t.Parallel()
			l, path := openTemp(t, keyring.WithReloadInterval(0))
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			_, err := keyring.OpenLocal(path)
			if err == nil {
				t.Fatal("OpenLocal accepted a group/world accessible file")
			}
			if !strings.Contains(err.Error(), "chmod 600") {
				t.Errorf("error %q does not tell the user to chmod 600", err)
			}
			// A running keyring fails closed once the file is loosened and
			// replaced (here: touched so it looks new).
			later := time.Now().Add(time.Hour)
			if err := os.Chtimes(path, later, later); err != nil {
				t.Fatal(err)
			}
			if _, err := l.Encrypt(t.Context(), "u", []byte("s")); !errors.Is(err, keyring.ErrUnavailable) {
				t.Errorf("Encrypt after chmod err = %v, want ErrUnavailable", err)
			}
		})
	}
}

func TestLocalFailsClosedWhenFileGoesBad(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		breakFile func(t *testing.T, path string)
	}{
		{"deleted", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
		{"replaced with garbage", func(t *testing.T, path string) {
			tmp := path + ".new"
			if err := os.WriteFile(tmp, []byte("{"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l, path := openTemp(t, keyring.WithReloadInterval(0))
			ct := mustEncrypt(t, l, "u", []byte("s"))
			tt.breakFile(t, path)
			if _, err := l.Encrypt(t.Context(), "u", []byte("s")); !errors.Is(err, keyring.ErrUnavailable) {
				t.Errorf("Encrypt err = %v, want ErrUnavailable", err)
			}
			if _, err := l.Decrypt(t.Context(), "u", ct); !errors.Is(err, keyring.ErrUnavailable) {
				t.Errorf("Decrypt err = %v, want ErrUnavailable", err)
			}
			if err := l.Ping(t.Context()); !errors.Is(err, keyring.ErrUnavailable) {
				t.Errorf("Ping err = %v, want ErrUnavailable", err)
			}
			if _, err := l.Rotate(t.Context()); err == nil {
				t.Error("Rotate succeeded on a broken file")
			}
		})
	}
}

func TestLocalRejectsBadFiles(t *testing.T) {
	t.Parallel()
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	entry := func(v int, k string) string {
		return `{"version":` + strconv.Itoa(v) + `,"key":"` + k + `","created_at":"2025-01-01T00:00:00Z"}`
	}
	file := func(format int, name string, min int, keys ...string) string {
		return `{"format":` + strconv.Itoa(format) + `,"name":"` + name + `","min_decryption_version":` +
			strconv.Itoa(min) + `,"keys":[` + strings.Join(keys, ",") + `]}`
	}
	tests := []struct {
		name, content string
	}{
		{"empty file", ""},
		{"not JSON", "keys: yes"},
		{"format 2", file(2, "n", 1, entry(1, key))},
		{"no name", file(1, "", 1, entry(1, key))},
		{"no keys", file(1, "n", 1)},
		{"duplicate version", file(1, "n", 1, entry(1, key), entry(1, key))},
		{"version zero", file(1, "n", 1, entry(0, key))},
		{"short key", file(1, "n", 1, entry(1, key[:20]))},
		{"key not base64", file(1, "n", 1, entry(1, "%%%"+key[3:]))},
		{"min above latest", file(1, "n", 2, entry(1, key))},
		{"min zero", file(1, "n", 0, entry(1, key))},
		{"unknown field", strings.Replace(file(1, "n", 1, entry(1, key)), `"format"`, `"extra":1,"format"`, 1)},
		{"trailing data", file(1, "n", 1, entry(1, key)) + "{}"},
		{"wrong type", strings.Replace(file(1, "n", 1, entry(1, key)), `"format":1`, `"format":"1"`, 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "keys.json")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := keyring.OpenLocal(path)
			if err == nil {
				t.Fatal("OpenLocal accepted a bad file")
			}
			if strings.Contains(err.Error(), key[:16]) {
				t.Fatalf("error leaks key material: %v", err)
			}
			// The bad file must be left alone, never "repaired" with new keys.
			got, _ := os.ReadFile(path)
			if string(got) != tt.content {
				t.Fatal("OpenLocal modified a bad file")
			}
		})
	}
}

func TestLocalRotate(t *testing.T) {
	t.Parallel()
	l, path := openTemp(t)
	old := mustEncrypt(t, l, "u", []byte("old secret"))
	st, err := l.Rotate(t.Context())
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if st.LatestVersion != 2 || st.MinDecryptionVersion != 1 {
		t.Fatalf("Status after rotate = %+v", st)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode after rotate = %04o", fi.Mode().Perm())
	}
	ct := mustEncrypt(t, l, "u", []byte("new secret"))
	if v := versionOf(t, ct); v != 2 {
		t.Fatalf("new ciphertext version = %d, want 2", v)
	}
	for _, c := range []string{old, ct} {
		if _, err := l.Decrypt(t.Context(), "u", c); err != nil {
			t.Fatalf("Decrypt v%d: %v", versionOf(t, c), err)
		}
	}
	// A v1 ciphertext relabelled v2 is opened with the wrong key.
	if _, err := l.Decrypt(t.Context(), "u", strings.Replace(old, ":v1:", ":v2:", 1)); !errors.Is(err, keyring.ErrDecrypt) {
		t.Fatalf("relabelled ciphertext err = %v, want ErrDecrypt", err)
	}
	// No temp files are left behind.
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "keys.json" && e.Name() != "keys.json.lock" {
			t.Errorf("stray file %q", e.Name())
		}
	}
}

func TestLocalRewrap(t *testing.T) {
	t.Parallel()
	l, _ := openTemp(t)
	v1 := mustEncrypt(t, l, "alice", []byte("alice secret"))
	if _, err := l.Rotate(t.Context()); err != nil {
		t.Fatal(err)
	}
	v2 := mustEncrypt(t, l, "bob", []byte("bob secret"))
	items := []keyring.Item{
		{BindTo: "alice", Ciphertext: v1},
		{BindTo: "bob", Ciphertext: v2},
		{BindTo: "mallory", Ciphertext: v1},
		{BindTo: "alice", Ciphertext: "garbage"},
	}
	res, err := l.Rewrap(t.Context(), items)
	if err != nil {
		t.Fatalf("Rewrap: %v", err)
	}
	if len(res) != len(items) {
		t.Fatalf("got %d results for %d items", len(res), len(items))
	}
	if res[0].Err != nil || res[0].Version != 2 || versionOf(t, res[0].Ciphertext) != 2 {
		t.Errorf("v1 item: %+v", res[0])
	}
	if pt, err := l.Decrypt(t.Context(), "alice", res[0].Ciphertext); err != nil || string(pt) != "alice secret" {
		t.Errorf("rewrapped v1 item decrypts to %q, %v", pt, err)
	}
	if res[1].Err != nil || res[1].Version != 2 || res[1].Ciphertext != v2 {
		t.Errorf("latest item should come back unchanged: %+v", res[1])
	}
	if !errors.Is(res[2].Err, keyring.ErrDecrypt) || res[2].Ciphertext != "" {
		t.Errorf("wrong-user item: %+v", res[2])
	}
	if !errors.Is(res[3].Err, keyring.ErrMalformed) {
		t.Errorf("malformed item: %+v", res[3])
	}
	if res, err := l.Rewrap(t.Context(), nil); err != nil || len(res) != 0 {
		t.Errorf("empty Rewrap = %v, %v", res, err)
	}
}

func TestLocalMinDecryptionVersion(t *testing.T) {
	t.Parallel()
	l, _ := openTemp(t)
	v1 := mustEncrypt(t, l, "u", []byte("s"))
	if _, err := l.SetMinDecryptionVersion(t.Context(), 2); !errors.Is(err, keyring.ErrInvalidMinVersion) {
		t.Fatalf("min above latest: err = %v", err)
	}
	if _, err := l.Rotate(t.Context()); err != nil {
		t.Fatal(err)
	}
	v2 := mustEncrypt(t, l, "u", []byte("s"))
	st, err := l.SetMinDecryptionVersion(t.Context(), 2)
	if err != nil {
		t.Fatalf("SetMinDecryptionVersion(2): %v", err)
	}
	if st.MinDecryptionVersion != 2 || st.LatestVersion != 2 {
		t.Fatalf("Status = %+v", st)
	}
	if _, err := l.Decrypt(t.Context(), "u", v1); !errors.Is(err, keyring.ErrVersionRetired) {
		t.Fatalf("retired v1: err = %v, want ErrVersionRetired", err)
	}
	if _, err := l.Decrypt(t.Context(), "u", v2); err != nil {
		t.Fatalf("v2: %v", err)
	}
	res, err := l.Rewrap(t.Context(), []keyring.Item{{BindTo: "u", Ciphertext: v1}})
	if err != nil || !errors.Is(res[0].Err, keyring.ErrVersionRetired) {
		t.Fatalf("rewrap of retired: %+v, %v", res, err)
	}
	for _, v := range []int{3, 1, 0, -1} {
		if _, err := l.SetMinDecryptionVersion(t.Context(), v); !errors.Is(err, keyring.ErrInvalidMinVersion) {
			t.Errorf("SetMinDecryptionVersion(%d) err = %v, want ErrInvalidMinVersion", v, err)
		}
	}
	if st, err := l.SetMinDecryptionVersion(t.Context(), 2); err != nil || st.MinDecryptionVersion != 2 {
		t.Errorf("repeating the current minimum: %+v, %v", st, err)
	}
}

// rotatedElsewhere opens a keyring file as a (with opts) and as b, and
// rotates it through b: a has not seen the rotation yet.
func rotatedElsewhere(t *testing.T, opts ...keyring.LocalOption) (a, b *keyring.Local) {
	t.Helper()
	a, path := openTemp(t, opts...)
	b, err := keyring.OpenLocal(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Rotate(t.Context()); err != nil {
		t.Fatal(err)
	}
	return a, b
}

func TestLocalSeesRotationByAnotherInstance(t *testing.T) {
	t.Parallel()
	t.Run("stat on every call", func(t *testing.T) {
		t.Parallel()
		a, _ := rotatedElsewhere(t, keyring.WithReloadInterval(0))
		if v := versionOf(t, mustEncrypt(t, a, "u", []byte("s"))); v != 2 {
			t.Fatalf("after rotation by another instance, Encrypt used v%d", v)
		}
		if st, _ := a.Status(t.Context()); st.LatestVersion != 2 {
			t.Fatalf("Status = %+v", st)
		}
	})
	t.Run("explicit reload", func(t *testing.T) {
		t.Parallel()
		a, _ := rotatedElsewhere(t, keyring.WithReloadInterval(time.Hour))
		if v := versionOf(t, mustEncrypt(t, a, "u", []byte("s"))); v != 1 {
			t.Fatalf("without reload Encrypt used v%d; interval not honoured", v)
		}
		if err := a.Reload(t.Context()); err != nil {
			t.Fatal(err)
		}
		if v := versionOf(t, mustEncrypt(t, a, "u", []byte("s"))); v != 2 {
			t.Fatalf("after Reload Encrypt used v%d", v)
		}
	})
	t.Run("unknown version triggers reload", func(t *testing.T) {
		t.Parallel()
		a, b := rotatedElsewhere(t, keyring.WithReloadInterval(time.Hour))
		ct := mustEncrypt(t, b, "u", []byte("from b"))
		pt, err := a.Decrypt(t.Context(), "u", ct)
		if err != nil || string(pt) != "from b" {
			t.Fatalf("Decrypt of a version made elsewhere: %q, %v", pt, err)
		}
	})
	t.Run("default interval", func(t *testing.T) {
		t.Parallel()
		if testing.Short() {
			t.Skip("waits for the one-second reload interval")
		}
		a, _ := rotatedElsewhere(t)
		// Poll rather than sleep a fixed time: the bound is "about a
		// second", and a loaded machine must not make this flaky.
		deadline := time.Now().Add(10 * time.Second)
		for {
			if versionOf(t, mustEncrypt(t, a, "u", []byte("s"))) == 2 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("rotation by another instance not seen within 10s")
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

func TestLocalConcurrentRotateByTwoInstances(t *testing.T) {
	t.Parallel()
	a, path := openTemp(t)
	b, err := keyring.OpenLocal(path)
	if err != nil {
		t.Fatal(err)
	}
	const perInstance = 8
	var wg sync.WaitGroup
	for _, k := range []*keyring.Local{a, b} {
		for range perInstance {
			wg.Go(func() {
				if _, err := k.Rotate(t.Context()); err != nil {
					t.Errorf("Rotate: %v", err)
				}
			})
		}
	}
	wg.Wait()
	// Every rotation must have landed: no read-modify-write lost another's key.
	c, err := keyring.OpenLocal(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := 1 + 2*perInstance; st.LatestVersion != want {
		t.Fatalf("latest version = %d, want %d", st.LatestVersion, want)
	}
}

func TestLocalConcurrentOpenCreatesOneKey(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "keys.json")
	const n = 6
	ks := make([]*keyring.Local, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			l, err := keyring.OpenLocal(path)
			if err != nil {
				t.Errorf("OpenLocal: %v", err)
			}
			ks[i] = l
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	ct := mustEncrypt(t, ks[0], "u", []byte("s"))
	for i, l := range ks {
		if _, err := l.Decrypt(t.Context(), "u", ct); err != nil {
			t.Errorf("instance %d cannot decrypt: %v", i, err)
		}
	}
}

func TestLocalConcurrentUse(t *testing.T) {
	t.Parallel()
	l, _ := openTemp(t, keyring.WithReloadInterval(0))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			bind := "user-" + strconv.Itoa(g)
			for i := range 50 {
				pt := []byte(fmt.Sprintf("secret %d/%d", g, i))
				ct, err := l.Encrypt(t.Context(), bind, pt)
				if err != nil {
					t.Errorf("Encrypt: %v", err)
					return
				}
				got, err := l.Decrypt(t.Context(), bind, ct)
				if err != nil || !bytes.Equal(got, pt) {
					t.Errorf("Decrypt = %q, %v", got, err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 3 {
			if _, err := l.Rotate(t.Context()); err != nil {
				t.Errorf("Rotate: %v", err)
			}
			if _, err := l.Status(t.Context()); err != nil {
				t.Errorf("Status: %v", err)
			}
		}
	})
	wg.Wait()
}

func TestLocalNeverPrintsKeys(t *testing.T) {
	t.Parallel()
	l, path := openTemp(t)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Keys []struct{ Key string } `json:"keys"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	keyB64 := f.Keys[0].Key
	raw, _ := base64.StdEncoding.DecodeString(keyB64)

	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T"} {
		out = append(out, fmt.Sprintf(verb, l))
	}
	out = append(out, l.String(), l.GoString(), l.LogValue().String())
	for _, s := range out {
		if strings.Contains(s, keyB64) || strings.Contains(s, fmt.Sprintf("%x", raw)) ||
			strings.Contains(s, string(raw)) || strings.Contains(s, fmt.Sprint(raw)) {
			t.Fatalf("output leaks key material: %q", s)
		}
	}
	if !strings.Contains(fmt.Sprintf("%+v", l), "keys.json") {
		t.Errorf("%%+v should name the file: %q", fmt.Sprintf("%+v", l))
	}

	// Errors do not quote file content: corrupt the key and reopen.
	bad := strings.Replace(string(data), keyB64, keyB64[:len(keyB64)-4]+"!!!!", 1)
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = keyring.OpenLocal(path)
	if err == nil {
		t.Fatal("OpenLocal accepted a corrupt key")
	}
	if strings.Contains(err.Error(), keyB64[:8]) {
		t.Fatalf("error leaks key material: %v", err)
	}
}

func TestParseVersion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in          string
		wantBackend string
		wantVersion int
		wantErr     bool
	}{
		{"vault:v1:8SDd3WHDOjf7mq69CyCqYjBXAiQQAVZRkFM13ok481zoCmHnSeDX9vyf7w==", "vault", 1, false},
		{"vault:v12:abc", "vault", 12, false},
		{"local:v1:AAAA", "local", 1, false},
		{"local:v2147483647:AAAA", "local", 2147483647, false},
		{"local:v3:payload:with:colons", "local", 3, false},
		{"", "", 0, true},
		{"vault", "", 0, true},
		{"vault:v1", "", 0, true},
		{"vault:v1:", "", 0, true},
		{"vault:1:abc", "", 0, true},
		{"vault:v:abc", "", 0, true},
		{"vault:v0:abc", "", 0, true},
		{"vault:v01:abc", "", 0, true},
		{"vault:v+1:abc", "", 0, true},
		{"vault:v-1:abc", "", 0, true},
		{"vault:v1e3:abc", "", 0, true},
		{"vault:v2147483648:abc", "", 0, true},
		{"vault:v99999999999999999999:abc", "", 0, true},
		{"vault:V1:abc", "", 0, true},
		{"Vault:v1:abc", "", 0, true},
		{"gcpkms:v1:abc", "", 0, true},
		{":v1:abc", "", 0, true},
		{"local:v１:abc", "", 0, true}, // full-width digit
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			backend, v, err := keyring.ParseVersion(tt.in)
			if tt.wantErr {
				if !errors.Is(err, keyring.ErrMalformed) {
					t.Fatalf("ParseVersion(%q) = %q, %d, %v; want ErrMalformed", tt.in, backend, v, err)
				}
				return
			}
			if err != nil || backend != tt.wantBackend || v != tt.wantVersion {
				t.Fatalf("ParseVersion(%q) = %q, %d, %v; want %q, %d", tt.in, backend, v, err, tt.wantBackend, tt.wantVersion)
			}
		})
	}
}

func FuzzParseVersion(f *testing.F) {
	for _, s := range []string{
		"vault:v1:abc", "local:v1:AAAA", "local:v2147483647:x", "vault:v0:x", "vault:v01:x",
		"", ":", "::", "local::", "local:v:", "vault:v-1:x", "vault:v99999999999:x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		backend, v, err := keyring.ParseVersion(s)
		if err != nil {
			if !errors.Is(err, keyring.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if backend != keyring.BackendLocal && backend != keyring.BackendVault {
			t.Fatalf("unknown backend %q accepted", backend)
		}
		if v < 1 {
			t.Fatalf("version %d accepted", v)
		}
		// One spelling per version: the parsed prefix re-formats exactly.
		if prefix := backend + ":v" + strconv.Itoa(v) + ":"; !strings.HasPrefix(s, prefix) || len(s) == len(prefix) {
			t.Fatalf("%q parsed as %s v%d", s, backend, v)
		}
	})
}

func FuzzDecrypt(f *testing.F) {
	l, _ := openTemp(f, keyring.WithReloadInterval(time.Hour))
	valid := mustEncrypt(f, l, "u", []byte("12345678901234567890"))
	for _, s := range []string{
		valid, tamper(f, valid, 0), tamper(f, valid, -1), valid[:len(valid)-4],
		strings.Replace(valid, ":v1:", ":v2:", 1), "local:v1:", "local:v1:AAAA", "vault:v1:abc",
		"local:v1:" + base64.StdEncoding.EncodeToString(make([]byte, 28)), "local:v0:x", "",
	} {
		f.Add("u", s)
	}
	f.Add("", valid)
	f.Add("v", valid)
	f.Fuzz(func(t *testing.T, bindTo, ct string) {
		pt, err := l.Decrypt(context.Background(), bindTo, ct)
		if err == nil {
			// Only the one real ciphertext can authenticate.
			if bindTo != "u" || string(pt) != "12345678901234567890" {
				t.Fatalf("forged ciphertext accepted: %q for %q", ct, bindTo)
			}
			return
		}
		if pt != nil {
			t.Fatal("plaintext returned with an error")
		}
		if bindTo != "" && !errors.Is(err, keyring.ErrMalformed) && !errors.Is(err, keyring.ErrDecrypt) &&
			!errors.Is(err, keyring.ErrUnknownVersion) && !errors.Is(err, keyring.ErrVersionRetired) {
			t.Fatalf("unexpected error class: %v", err)
		}
	})
}
