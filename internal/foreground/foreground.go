// Package foreground lets background work in a process step aside while
// foreground work is in progress: the rewrap job yields to logins, so that
// a login's keyring call and its commit do not queue behind the job's
// batches on the same cores, the same keyring and SQLite's single writer
// (docs/benchmarks.md, "Key rewrap").
package foreground

import (
	"context"
	"sync"
	"time"
)

// Gate counts foreground work in progress. The zero value is not usable; a
// nil *Gate never makes anybody wait.
type Gate struct {
	maxWait time.Duration

	mu     sync.Mutex
	active int
	idle   chan struct{} // closed while active == 0
}

// New returns a gate whose Yield waits at most maxWait, so that a steady
// stream of foreground work slows background work down but never stops it.
func New(maxWait time.Duration) *Gate {
	idle := make(chan struct{})
	close(idle)
	return &Gate{maxWait: maxWait, idle: idle}
}

// Begin marks foreground work in progress until end is called (once).
func (g *Gate) Begin() (end func()) {
	if g == nil {
		return func() {}
	}
	g.mu.Lock()
	if g.active == 0 {
		g.idle = make(chan struct{})
	}
	g.active++
	g.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			g.active--
			if g.active == 0 {
				close(g.idle)
			}
			g.mu.Unlock()
		})
	}
}

// Yield waits until no foreground work is in progress, maxWait has passed
// or ctx is done, and returns how long it waited.
func (g *Gate) Yield(ctx context.Context) time.Duration {
	if g == nil {
		return 0
	}
	g.mu.Lock()
	idle := g.idle
	g.mu.Unlock()
	select {
	case <-idle:
		return 0
	default:
	}
	began := time.Now()
	t := time.NewTimer(g.maxWait)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
	case <-ctx.Done():
	}
	return time.Since(began)
}
