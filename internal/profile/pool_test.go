package profile

import (
	"strings"
	"testing"
)

func TestPoolKeyRules(t *testing.T) {
	cases := []struct{ pool, want string }{
		{"pool:\n  min_ready: 2\n  max: 4\n", ""},
		{"pool:\n  min_ready: 0\n  max: 0\n", ""},
		{"pool:\n  min_ready: 3\n  max: 2\n", "pool.min_ready: 3 is more than max 2: raise max or lower min_ready"},
		{"pool:\n  min_ready: 1\n", "pool.min_ready: 1 is more than max 0"},
		{"pool:\n  min_ready: -1\n  max: 2\n", "pool.min_ready: must be 0 or more, got -1"},
		{"pool:\n  max: 101\n", "pool.max: must be between 0 and 100, got 101"},
		{"pool:\n  ready: 2\n", "pool.ready: unknown key (known keys: min_ready, max)"},
	}
	for _, tc := range cases {
		_, err := Parse("p.yaml", []byte("name: a\ntemplate_vmid: 9000\n"+tc.pool), "vmbr1")
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.pool, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q:\n got %v\nwant %q", tc.pool, err, tc.want)
		}
	}
}

// The version a pool member is built from changes with what shapes the VM,
// not with the pool's sizes or the description.
func TestHashFollowsTheVM(t *testing.T) {
	parse := func(extra string) string {
		t.Helper()
		ps, err := Parse("p.yaml", []byte("name: a\ntemplate_vmid: 9000\n"+extra), "vmbr1")
		if err != nil {
			t.Fatal(err)
		}
		return ps[0].Hash()
	}
	base := parse("")
	for _, same := range []string{"description: other\n", "pool:\n  min_ready: 1\n  max: 3\n"} {
		if h := parse(same); h != base {
			t.Errorf("%q changed the hash", same)
		}
	}
	for _, other := range []string{"resources:\n  memory_mb: 4096\n", "network:\n  mode: off\n", "behavior:\n  ttl_default: 1h\n", "storage:\n  clone: full\n"} {
		if h := parse(other); h == base {
			t.Errorf("%q left the hash as it was", other)
		}
	}
	if h := parse(""); h != base {
		t.Error("the hash is not stable")
	}
}
