package outcome

import (
	"errors"
	"testing"

	"github.com/totpgate/totpgate/store"
)

func TestErrKeepsSentinelsAndWrapsTheRest(t *testing.T) {
	t.Parallel()
	const d Driver = "sqlite"
	for _, s := range []error{nil, store.ErrNotFound, store.ErrConflict, store.ErrDeviceReused} {
		if got := d.Err("op", s); got != s {
			t.Errorf("Err(%v) = %v, want it as it is", s, got)
		}
	}
	boom := errors.New("boom")
	if got := d.Err("get user", boom); !errors.Is(got, boom) || got.Error() != "sqlite: get user: boom" {
		t.Errorf("Err(boom) = %v", got)
	}
	if v, err := Of(d, "op", 7, boom); v != 0 || !errors.Is(err, boom) {
		t.Errorf("Of(7, boom) = %d, %v; want the zero value and the error", v, err)
	}
	if v, err := Of(d, "op", 7, store.ErrNotFound); v != 0 || err != store.ErrNotFound {
		t.Errorf("Of(7, ErrNotFound) = %d, %v", v, err)
	}
	if v, err := Of(d, "op", 7, nil); v != 7 || err != nil {
		t.Errorf("Of(7, nil) = %d, %v", v, err)
	}
}

func TestChanged(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	for _, tc := range []struct {
		n    int64
		err  error
		want error
	}{
		{1, nil, nil},
		{2, nil, nil},
		{0, nil, store.ErrConflict},
		{0, boom, boom},
		{1, boom, boom},
	} {
		if got := Changed(tc.n, tc.err, store.ErrConflict); got != tc.want {
			t.Errorf("Changed(%d, %v) = %v, want %v", tc.n, tc.err, got, tc.want)
		}
	}
	if err := Driver("postgres").LeaseLost("rewrap"); !errors.Is(err, store.ErrConflict) || err.Error() != `postgres: update job "rewrap": lease lost: store: conflict` {
		t.Errorf("LeaseLost = %v", err)
	}
}

func TestArgumentChecks(t *testing.T) {
	t.Parallel()
	if Enrollment(store.User{}) == nil || Enrollment(store.User{ID: "alice"}) != nil {
		t.Error("Enrollment: an empty id is refused, another is not")
	}
	for limit, ok := range map[int]bool{-1: false, 0: false, 1: true, 500: true} {
		if (PageLimit(limit) == nil) != ok {
			t.Errorf("PageLimit(%d) = %v", limit, PageLimit(limit))
		}
	}
}
