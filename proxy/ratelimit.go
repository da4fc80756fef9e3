package proxy

import (
	"container/list"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/totpgate/totpgate/gen"

	"golang.org/x/time/rate"

	"github.com/totpgate/totpgate/problem"
)

// RateLimit bounds requests per client network with a token bucket, so one
// client cannot hammer enrollment or challenges. Brute force across
// networks is stopped by the per-user lockout instead.
//
// IPv4 clients are keyed by address, IPv6 clients by their /64 (one
// subscriber's allocation: an attacker holds the whole /64, so per address
// it would get 2^64 bursts). Memory is fixed: at most maxTracked buckets,
// the least recently used evicted first, each request O(1).
type RateLimit struct {
	peers    Peers
	limit    rate.Limit
	burst    int
	v6Prefix int
	capacity int
	now      func() time.Time
	mu       sync.Mutex
	byNet    map[netip.Prefix]*list.Element
	lru      *list.List // of *bucket, most recent first
}

type bucket struct {
	key netip.Prefix
	lim *rate.Limiter
}

// maxTracked bounds memory: about 200 bytes a bucket, 20 MB at most.
const maxTracked = 100_000

// NewRateLimit allows perSecond requests per client, with bursts of burst;
// IPv6 clients are grouped by their first v6Prefix bits (64 by default).
func NewRateLimit(peers Peers, perSecond float64, burst, v6Prefix int, now func() time.Time) *RateLimit {
	if v6Prefix <= 0 || v6Prefix > 128 {
		v6Prefix = 64
	}
	return &RateLimit{peers: peers, limit: rate.Limit(perSecond), burst: burst, v6Prefix: v6Prefix, capacity: maxTracked,
		now: now, byNet: map[netip.Prefix]*list.Element{}, lru: list.New()}
}

// Wrap answers 429 rate_limited with Retry-After once a client's bucket is empty.
func (l *RateLimit) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if l.refused(w, r, l.peers.ClientIP(r)) {
			return
		}
		next.ServeHTTP(w, r)
	})
}

// refused takes a token from client's bucket, or answers 429 rate_limited
// with Retry-After when it is empty and reports that it did.
func (l *RateLimit) refused(w http.ResponseWriter, r *http.Request, client netip.Addr) bool {
	wait, ok := l.allow(l.key(client))
	if !ok {
		w.Header().Set("Retry-After", problem.RetryAfter(wait))
		problem.Write(w, r, problem.New(http.StatusTooManyRequests, gen.ProblemCodeRateLimited, "Too many requests from this address. Slow down."))
	}
	return !ok
}

// key is the client's network: its IPv4 address, or its IPv6 /64.
func (l *RateLimit) key(addr netip.Addr) netip.Prefix {
	addr = addr.Unmap()
	bits := 32
	if addr.Is6() {
		bits = l.v6Prefix
	}
	p, err := addr.Prefix(bits)
	if err != nil {
		return netip.Prefix{}
	}
	return p
}

func (l *RateLimit) allow(key netip.Prefix) (time.Duration, bool) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	var b *bucket
	if e, ok := l.byNet[key]; ok {
		l.lru.MoveToFront(e)
		b = e.Value.(*bucket)
	} else {
		if l.lru.Len() >= l.capacity {
			oldest := l.lru.Back()
			l.lru.Remove(oldest)
			delete(l.byNet, oldest.Value.(*bucket).key)
		}
		b = &bucket{key: key, lim: rate.NewLimiter(l.limit, l.burst)}
		l.byNet[key] = l.lru.PushFront(b)
	}
	res := b.lim.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return d, false
	}
	return 0, true
}
