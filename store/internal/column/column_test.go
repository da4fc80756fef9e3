package column

import (
	"testing"
	"time"
)

func TestTimesRoundTripAtMillisecondsAndZeroStaysZero(t *testing.T) {
	for _, tc := range []struct {
		in   time.Time
		want time.Time
	}{
		{time.Time{}, time.Time{}},
		{time.Date(2026, 12, 1, 15, 4, 5, 678_999_999, time.FixedZone("x", 3600)), time.Date(2026, 12, 1, 14, 4, 5, 678_000_000, time.UTC)},
		{time.UnixMilli(1), time.UnixMilli(1).UTC()},
	} {
		if got := Time(Millis(tc.in)); !got.Equal(tc.want) || got.Location() != tc.want.Location() {
			t.Errorf("Time(Millis(%v)) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if Bytes(nil) == nil || len(Bytes([]byte("x"))) != 1 {
		t.Error("Bytes: nil must become empty, others stay")
	}
	fixed := time.Unix(100, 0)
	if !NowOr(fixed).Equal(fixed) || NowOr(time.Time{}).IsZero() {
		t.Error("NowOr")
	}
}

func TestFlagsAndNullBytes(t *testing.T) {
	t.Parallel()
	for _, b := range []bool{false, true} {
		var got bool
		if err := BoolOf(&got).Scan(int64(Flag(b))); err != nil || got != b {
			t.Errorf("BoolOf(Flag(%v)) = %v, %v", b, got, err)
		}
	}
	if NullBytes(nil) != nil || NullBytes([]byte{}) != nil {
		t.Error("NullBytes: an empty slice must bind as NULL")
	}
	if b, ok := NullBytes([]byte("x")).([]byte); !ok || string(b) != "x" {
		t.Error("NullBytes: a non-empty slice must bind as itself")
	}
}
