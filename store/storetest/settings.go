package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/totpgate/totpgate/store"
)

func testSettingNotFound(t *testing.T, h Harness) {
	s := h.Open(t)
	if _, err := s.Setting(ctxOf(t), "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Setting(unknown): err = %v, want ErrNotFound", err)
	}
}

func testSettingFirstWriterWins(t *testing.T, h Harness) {
	s := h.Open(t)
	first := []byte("first\x00value")
	got, err := s.PutSettingIfAbsent(ctxOf(t), "k", first)
	if err != nil || !bytes.Equal(got, first) {
		t.Fatalf("PutSettingIfAbsent(new) = %q, %v; want %q", got, err, first)
	}
	got, err = s.PutSettingIfAbsent(ctxOf(t), "k", []byte("second"))
	if err != nil || !bytes.Equal(got, first) {
		t.Fatalf("PutSettingIfAbsent(existing) = %q, %v; want the first value %q", got, err, first)
	}
	got, err = s.Setting(ctxOf(t), "k")
	if err != nil || !bytes.Equal(got, first) {
		t.Errorf("Setting = %q, %v; want %q", got, err, first)
	}
	if _, err := s.Setting(ctxOf(t), "K"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Setting(other key): err = %v, want ErrNotFound", err)
	}
}

func testSettingConcurrent(t *testing.T, h Harness) {
	s := h.Open(t)
	got := make([][]byte, Concurrency)
	race(Concurrency, func(i int) {
		v, err := s.PutSettingIfAbsent(ctxOf(t), "salt", fmt.Appendf(nil, "value-%02d", i))
		if err != nil {
			t.Errorf("PutSettingIfAbsent #%d: %v", i, err)
		}
		got[i] = v
	})
	stored, err := s.Setting(ctxOf(t), "salt")
	if err != nil {
		t.Fatalf("Setting: %v", err)
	}
	for i, v := range got {
		if !bytes.Equal(v, stored) {
			t.Errorf("PutSettingIfAbsent #%d returned %q, but %q is stored", i, v, stored)
		}
	}
}
