package sqlite

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/totpgate/totpgate/store"
)

// BenchmarkSwapSecrets is the store's share of a rewrap: one page of 1000
// rewrapped secrets swapped in (compare-and-swap per row, one commit),
// out of 100 000 stored. The single writer is held for that long, so it
// is also how long a login's commit can wait behind the job.
func BenchmarkSwapSecrets(b *testing.B) {
	ctx := b.Context()
	s, err := Open(ctx, filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	const users, page = 100_000, 1000
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	for i := range users {
		if _, err := tx.ExecContext(ctx, `INSERT INTO users (id, state, ciphertext, key_version, binding, algorithm, digits, period, skew, confirmed_at, updated_at)
VALUES (?, 'active', ?, 1, 1, 'SHA1', 6, 30, 1, 1, 1)`, userOf(i), ciphertextOf(i, 1)); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	version := 1
	b.ResetTimer()
	for i := range b.N {
		first := (i * page) % users
		if first == 0 {
			version++
		}
		swaps := make([]store.Swap, page)
		for j := range swaps {
			swaps[j] = store.Swap{UserID: userOf(first + j), Old: ciphertextOf(first+j, version-1), New: ciphertextOf(first+j, version), Version: version, Binding: store.BindingUser}
		}
		n, err := s.SwapSecrets(ctx, swaps)
		if err != nil || n != page {
			b.Fatalf("SwapSecrets = %d, %v; want %d", n, err, page)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*page), "µs/secret")
}

func userOf(i int) string { return fmt.Sprintf("user-%07d", i) }

// ciphertextOf is about as long as a Vault transit ciphertext of a TOTP
// secret.
func ciphertextOf(i, version int) string {
	return fmt.Sprintf("vault:v%d:%072d", version, i)
}
