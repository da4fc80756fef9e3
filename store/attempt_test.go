package store

import (
	"testing"
	"time"
)

func TestCounterAdmit(t *testing.T) {
	t.Parallel()
	l := Limits{MaxFailures: 3, Window: time.Minute, LockFor: 10 * time.Minute}
	now := time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		c     Counter
		l     Limits
		ok    bool
		until time.Time
	}{
		{"nothing counted", Counter{}, l, true, time.Time{}},
		{"below the limit", Counter{Failures: 2, WindowStart: now.Add(-time.Second)}, l, true, time.Time{}},
		{"locked", Counter{Failures: 3, WindowStart: now.Add(-time.Second), LockedUntil: now.Add(time.Second)}, l, false, now.Add(time.Second)},
		{"lock ends now", Counter{Failures: 3, WindowStart: now.Add(-time.Hour), LockedUntil: now}, l, true, time.Time{}},
		{"limit reached, no lock, window on", Counter{Failures: 3, WindowStart: now.Add(-time.Second)}, l, false, now.Add(time.Minute - time.Second)},
		{"limit reached, window over", Counter{Failures: 3, WindowStart: now.Add(-time.Minute)}, l, true, time.Time{}},
		{"limit reached, no window start (a window that never began is over)", Counter{Failures: 3}, l, true, time.Time{}},
		{"no attempts allowed", Counter{}, Limits{Window: time.Minute}, false, now.Add(time.Minute)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ok, until := tc.c.Admit(now, tc.l)
			if ok != tc.ok || !until.Equal(tc.until) {
				t.Errorf("Admit = %v, %v; want %v, %v", ok, until, tc.ok, tc.until)
			}
		})
	}
}

func TestCounterFail(t *testing.T) {
	t.Parallel()
	l := Limits{MaxFailures: 3, Window: time.Minute, LockFor: 10 * time.Minute}
	now := time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC)
	earlier := now.Add(-10 * time.Second)
	for _, tc := range []struct {
		name   string
		c      Counter
		replay bool
		want   Counter
		res    Settled
	}{
		{"first", Counter{}, false, Counter{Failures: 1, WindowStart: now}, Settled{Allowed: true, Remaining: 2}},
		{"second", Counter{Failures: 1, WindowStart: earlier}, true, Counter{Failures: 2, WindowStart: earlier}, Settled{Allowed: true, Remaining: 1, Replay: true}},
		{"last locks", Counter{Failures: 2, WindowStart: earlier}, false,
			Counter{Failures: 3, WindowStart: earlier, LockedUntil: now.Add(l.LockFor)},
			Settled{Allowed: true, LockedUntil: now.Add(l.LockFor), LockStarted: true}},
		{"window over starts afresh", Counter{Failures: 2, WindowStart: now.Add(-time.Minute)}, false, Counter{Failures: 1, WindowStart: now}, Settled{Allowed: true, Remaining: 2}},
		{"lock over starts afresh", Counter{Failures: 3, WindowStart: now.Add(-time.Hour), LockedUntil: now}, false, Counter{Failures: 1, WindowStart: now}, Settled{Allowed: true, Remaining: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, res := tc.c.Fail(now, l, tc.replay)
			if c != tc.want || res != tc.res {
				t.Errorf("Fail = %+v, %+v; want %+v, %+v", c, res, tc.want, tc.res)
			}
		})
	}
}
