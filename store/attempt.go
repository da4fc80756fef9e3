package store

import "time"

// Counter is a user's failure count as the row holds it. Its methods are
// the lockout rules, shared by every driver: a driver reads the counter
// inside the transaction that settles an attempt (with the row locked)
// and writes back what Fail returns.
type Counter struct {
	Failures    int
	WindowStart time.Time // first failure of the current window; zero when none
	LockedUntil time.Time // zero when not locked
}

// fresh reports whether an attempt at now starts a new failure window:
// nothing counted, the window over, or an earlier lock run out.
// Deadlines are exclusive: at WindowStart+Window the window is over, at
// LockedUntil the lock is.
func (c Counter) fresh(now time.Time, l Limits) bool {
	return c.Failures == 0 ||
		!c.WindowStart.Add(l.Window).After(now) ||
		(!c.LockedUntil.IsZero() && !c.LockedUntil.After(now))
}

// Admit reports whether an attempt at now may be checked at all: not
// while the user is locked, nor once MaxFailures failures are counted in
// a window that has not ended (possible only when the limit was lowered,
// or a replica of an older totpgate counted attempts still in flight).
// When refused it also returns when to try again.
func (c Counter) Admit(now time.Time, l Limits) (bool, time.Time) {
	switch {
	case l.MaxFailures < 1:
		return false, now.Add(l.Window)
	case c.LockedUntil.After(now):
		return false, c.LockedUntil
	case c.fresh(now, l) || c.Failures < l.MaxFailures:
		return true, time.Time{}
	default:
		return false, c.WindowStart.Add(l.Window)
	}
}

// Fail counts one failed attempt at now, which Admit let through. The
// MaxFailures-th failure of a window locks the user until now+LockFor
// (a later lock already set is kept). It returns the counter to store
// and the answer for the caller.
func (c Counter) Fail(now time.Time, l Limits, replay bool) (Counter, Settled) {
	if c.fresh(now, l) {
		c = Counter{Failures: 1, WindowStart: now}
	} else {
		c.Failures++
	}
	s := Settled{Allowed: true, Replay: replay, Remaining: max(l.MaxFailures-c.Failures, 0)}
	if c.Failures >= l.MaxFailures {
		if end := now.Add(l.LockFor); end.After(c.LockedUntil) {
			c.LockedUntil = end
		}
		s.LockedUntil, s.LockStarted = c.LockedUntil, true
	}
	return c, s
}
