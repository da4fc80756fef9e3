package migration

import (
	"testing"
	"testing/fstest"
)

func TestLoad(t *testing.T) {
	t.Parallel()
	for name, files := range map[string]fstest.MapFS{
		"gap":       {"0001_a.sql": {}, "0003_c.sql": {}},
		"duplicate": {"0001_a.sql": {}, "0001_b.sql": {}},
		"bad name":  {"0001_a.sql": {}, "2_b.sql": {}},
		"no start":  {"0002_b.sql": {}},
		"empty":     {},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Load(files); err == nil {
				t.Errorf("Load accepted %v", files)
			}
		})
	}
	t.Run("valid, out of order, other files ignored", func(t *testing.T) {
		ms, err := Load(fstest.MapFS{"0002_b.sql": {Data: []byte("B")}, "0001_a.sql": {Data: []byte("A")}, "README.md": {}})
		if err != nil || len(ms) != 2 || ms[0] != (Migration{1, "0001_a.sql", "A"}) || ms[1].Version != 2 {
			t.Errorf("Load = %v, %v", ms, err)
		}
	})
}
