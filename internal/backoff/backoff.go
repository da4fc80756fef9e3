// Package backoff is the one retry wait of totpgate: exponential from Min,
// capped at Max, with jitter (half the wait fixed, half random) so replicas
// that failed together do not retry together. The Vault client, the rewrap
// job, the audit webhook and the revocation calls all wait with it.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy bounds the waits. A zero Max means Min is never grown.
type Policy struct {
	Min, Max time.Duration
}

// Wait is the wait before retry number retry (1 for the first retry):
// Min·2^(retry-1), at most Max, then jittered into [w/2, w].
func (p Policy) Wait(retry int) time.Duration {
	if p.Min <= 0 {
		return 0
	}
	w := p.Min << min(max(retry-1, 0), 30)
	if w <= 0 || (p.Max > 0 && w > p.Max) {
		w = max(p.Max, p.Min)
	}
	return w/2 + rand.N(w/2+1)
}

// Sleep waits d or until ctx ends, whichever is first; ctx's error when it
// ended.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
