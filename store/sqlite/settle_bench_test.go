package sqlite

import (
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/totpgate/totpgate/store"
)

// BenchmarkSettleAttempt is the store's share of a login: one accepted
// TOTP step (one commit, fsynced under synchronous=FULL), from 1, 8 and 32
// goroutines at once, each for users of its own. It reports attempts/s,
// p50/p99 and how many attempts shared a commit on average.
func BenchmarkSettleAttempt(b *testing.B) {
	ctx := b.Context()
	s, err := Open(ctx, filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	now := time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC)
	const users = 256
	for i := range users {
		id := fmt.Sprintf("user-%03d", i)
		u := store.User{ID: id, Ciphertext: "vault:v1:" + id, KeyVersion: 1,
			Params:           store.TOTPParams{Algorithm: "SHA1", Digits: 6, Period: 30, Skew: 1},
			PendingExpiresAt: now.Add(time.Hour), UpdatedAt: now}
		if err := s.StartEnrollment(ctx, u); err != nil {
			b.Fatal(err)
		}
		if err := s.ConfirmEnrollment(ctx, id, u.Ciphertext, 1, nil, now); err != nil {
			b.Fatal(err)
		}
	}
	limits := store.Limits{MaxFailures: 5, Window: time.Minute, LockFor: time.Minute}
	var step atomic.Int64
	step.Store(1)
	for _, clients := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("clients-%d", clients), func(b *testing.B) {
			var (
				issued atomic.Int64
				mu     sync.Mutex
				lat    []time.Duration
				wg     sync.WaitGroup
			)
			commits0 := s.settle.commits.Load()
			start := time.Now()
			for g := range clients {
				wg.Go(func() {
					var mine []time.Duration
					for issued.Add(1) <= int64(b.N) {
						// A user per goroutine slot, a step newer than any before.
						id := fmt.Sprintf("user-%03d", g%users)
						t := time.Now()
						r, err := s.SettleAttempt(ctx, id, store.Match{Step: step.Add(1)}, now, limits)
						mine = append(mine, time.Since(t))
						if err != nil || !r.Accepted {
							b.Errorf("SettleAttempt = %+v, %v", r, err)
							return
						}
					}
					mu.Lock()
					lat = append(lat, mine...)
					mu.Unlock()
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			if b.Failed() {
				return
			}
			slices.Sort(lat)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "attempts/s")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(b.N)/float64(s.settle.commits.Load()-commits0), "attempts/commit")
		})
	}
}
