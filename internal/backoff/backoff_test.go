package backoff_test

import (
	"context"
	"testing"
	"time"

	"github.com/totpgate/totpgate/internal/backoff"
)

func TestWaitGrowsWithinBoundsAndJitters(t *testing.T) {
	p := backoff.Policy{Min: 100 * time.Millisecond, Max: time.Second}
	for _, tc := range []struct {
		retry    int
		lo, high time.Duration
	}{
		{1, 50 * time.Millisecond, 100 * time.Millisecond},
		{2, 100 * time.Millisecond, 200 * time.Millisecond},
		{4, 400 * time.Millisecond, 800 * time.Millisecond},
		{5, 500 * time.Millisecond, time.Second},  // capped
		{80, 500 * time.Millisecond, time.Second}, // no overflow
		{0, 50 * time.Millisecond, 100 * time.Millisecond},
	} {
		seen := map[time.Duration]bool{}
		for range 200 {
			w := p.Wait(tc.retry)
			if w < tc.lo || w > tc.high {
				t.Fatalf("Wait(%d) = %v, want within [%v, %v]", tc.retry, w, tc.lo, tc.high)
			}
			seen[w] = true
		}
		if len(seen) < 10 {
			t.Errorf("Wait(%d) took only %d values in 200 draws: no jitter", tc.retry, len(seen))
		}
	}
	if w := (backoff.Policy{}).Wait(3); w != 0 {
		t.Errorf("zero policy waits %v", w)
	}
}

func TestSleepEndsWithTheContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := backoff.Sleep(ctx, time.Hour); err != context.Canceled {
		t.Fatalf("Sleep on a cancelled context = %v", err)
	}
	if err := backoff.Sleep(context.Background(), time.Millisecond); err != nil {
		t.Fatalf("Sleep = %v", err)
	}
}
