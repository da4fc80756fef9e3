package proxy

import (
	"net/netip"
	"testing"
	"time"
)

// The limiter holds at most its capacity, evicting the least recently used
// network, and a request costs the same with the table full.
func TestRateLimitMemoryIsBounded(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	l := NewRateLimit(NewPeers(nil), 1, 3, 64, func() time.Time { return now })
	l.capacity = 1000
	hot := netip.MustParsePrefix("198.51.100.1/32")
	for i := range 5000 {
		l.allow(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32))
		if i%10 == 0 {
			l.allow(hot) // kept recent: never evicted
		}
	}
	if n := l.tracked(); n != 1000 {
		t.Fatalf("tracked %d buckets, want the capacity 1000", n)
	}
	if _, ok := l.byNet[hot]; !ok {
		t.Fatal("a recently used bucket was evicted")
	}
}

// BenchmarkRateLimitFull is a request against a full table of 100k
// networks, each new: the old sweep cost 1.2 ms here under one lock.
func BenchmarkRateLimitFull(b *testing.B) {
	now := time.Unix(1_800_000_000, 0)
	l := NewRateLimit(NewPeers(nil), 1, 3, 64, func() time.Time { return now })
	for i := range maxTracked {
		l.allow(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32))
	}
	i := 0
	for b.Loop() {
		i++
		l.allow(netip.PrefixFrom(netip.AddrFrom4([4]byte{11, byte(i >> 16), byte(i >> 8), byte(i)}), 32))
	}
}

// tracked reports how many buckets are held.
func (l *RateLimit) tracked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lru.Len()
}
