package proxy

import (
	"sync"
	"time"
)

// identityCache remembers briefly whose session a credential is, keyed by
// a SHA-256 of the credential (never the credential itself), so a burst of
// requests to step-up routes does not ask the app each time. Only positive
// answers are kept: "not logged in" and an app that could not be asked
// are asked again next time. It holds at most max entries; a new one past
// that forgets another.
type identityCache struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu      sync.Mutex
	entries map[[32]byte]cachedIdentity
}

type cachedIdentity struct {
	user    string
	expires time.Time
}

// newIdentityCache returns nil (no cache) when ttl is 0.
func newIdentityCache(ttl time.Duration, max int, now func() time.Time) *identityCache {
	if ttl <= 0 || max <= 0 {
		return nil
	}
	return &identityCache{ttl: ttl, max: max, now: now, entries: make(map[[32]byte]cachedIdentity)}
}

// get returns the user remembered for key, if still fresh.
func (c *identityCache) get(key [32]byte) (string, bool) {
	if c == nil {
		return "", false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok {
		return "", false
	}
	if !c.now().Before(e.expires) {
		delete(c.entries, key)
		return "", false
	}
	return e.user, true
}

// put remembers user for key.
func (c *identityCache) put(key [32]byte, user string) {
	if c == nil || user == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[key]; !ok && len(c.entries) >= c.max {
		for k := range c.entries { // map order: an arbitrary entry
			delete(c.entries, k)
			break
		}
	}
	c.entries[key] = cachedIdentity{user: user, expires: c.now().Add(c.ttl)}
}

// len is how many entries are kept (for the tests).
func (c *identityCache) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
