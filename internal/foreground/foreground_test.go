package foreground

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

func TestYield(t *testing.T) {
	t.Run("idle gate does not wait", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			g := New(time.Second)
			if d := g.Yield(t.Context()); d != 0 {
				t.Errorf("Yield on an idle gate waited %v", d)
			}
			g.Begin()()
			if d := g.Yield(t.Context()); d != 0 {
				t.Errorf("Yield after the work ended waited %v", d)
			}
		})
	})
	t.Run("waits until the last work ends", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			g := New(time.Second)
			endA, endB := g.Begin(), g.Begin()
			go func() {
				time.Sleep(10 * time.Millisecond)
				endA()
				endA() // a second call must not end B's work too
				time.Sleep(20 * time.Millisecond)
				endB()
			}()
			if d := g.Yield(t.Context()); d != 30*time.Millisecond {
				t.Errorf("Yield waited %v, want 30ms (until both ended)", d)
			}
		})
	})
	t.Run("at most maxWait", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			g := New(50 * time.Millisecond)
			end := g.Begin()
			defer end()
			if d := g.Yield(t.Context()); d != 50*time.Millisecond {
				t.Errorf("Yield behind endless work waited %v, want 50ms", d)
			}
		})
	})
	t.Run("ends with the context", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			g := New(time.Hour)
			end := g.Begin()
			defer end()
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Millisecond)
			defer cancel()
			if d := g.Yield(ctx); d != 5*time.Millisecond {
				t.Errorf("Yield waited %v after its context ended at 5ms", d)
			}
		})
	})
	t.Run("nil gate", func(t *testing.T) {
		var g *Gate
		g.Begin()()
		if d := g.Yield(t.Context()); d != 0 {
			t.Errorf("nil gate waited %v", d)
		}
	})
}
