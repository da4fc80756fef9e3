package proxy

import (
	"net/http"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/totpgate/totpgate/problem"
)

// RateLimit bounds requests per client IP with a token bucket, so one
// address cannot hammer enrollment or challenges. Brute force across
// addresses is stopped by the per-user lockout instead.
type RateLimit struct {
	peers  Peers
	limit  rate.Limit
	burst  int
	now    func() time.Time
	mu     sync.Mutex
	byAddr map[netip.Addr]*bucket
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

// maxTracked bounds memory; idle buckets are swept when it is reached.
const maxTracked = 100_000

// NewRateLimit allows perSecond requests per client IP, with bursts of burst.
func NewRateLimit(peers Peers, perSecond float64, burst int, now func() time.Time) *RateLimit {
	return &RateLimit{peers: peers, limit: rate.Limit(perSecond), burst: burst, now: now, byAddr: map[netip.Addr]*bucket{}}
}

// Wrap answers 429 rate_limited with Retry-After once a client's bucket is empty.
func (l *RateLimit) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if wait, ok := l.allow(l.peers.ClientIP(r)); !ok {
			w.Header().Set("Retry-After", problem.RetryAfter(wait))
			problem.Write(w, r, problem.New(http.StatusTooManyRequests, "rate_limited", "Too many requests from this address. Slow down."))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (l *RateLimit) allow(addr netip.Addr) (time.Duration, bool) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.byAddr[addr]
	if !ok {
		if len(l.byAddr) >= maxTracked {
			l.sweep(now)
		}
		b = &bucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.byAddr[addr] = b
	}
	b.seen = now
	res := b.lim.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return d, false
	}
	return 0, true
}

// sweep drops buckets idle long enough to have refilled: forgetting them
// changes nothing.
func (l *RateLimit) sweep(now time.Time) {
	full := time.Duration(float64(l.burst)/float64(l.limit)*float64(time.Second)) + time.Second
	for a, b := range l.byAddr {
		if now.Sub(b.seen) > full {
			delete(l.byAddr, a)
		}
	}
}
