package main

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want byteSize
		str  string
	}{
		{"512MiB", 512 << 20, "512MiB"},
		{"8MiB", 8 << 20, "8MiB"},
		{"1GiB", 1 << 30, "1GiB"},
		{"64KiB", 64 << 10, "64KiB"},
		{"1000", 1000, "1000B"},
		{"2MB", 2e6, "2000000B"},
	}
	for _, tt := range tests {
		var b byteSize
		if err := b.Set(tt.in); err != nil || b != tt.want || b.String() != tt.str {
			t.Errorf("Set(%q) = %d (%s), %v; want %d (%s)", tt.in, b, b, err, tt.want, tt.str)
		}
	}
	for _, bad := range []string{"", "MiB", "-1MiB", "12XB"} {
		var b byteSize
		if err := b.Set(bad); err == nil {
			t.Errorf("Set(%q) = %d, want an error", bad, b)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, tt := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestPercentile(t *testing.T) {
	hundred := make([]float64, 100)
	for i := range hundred {
		hundred[i] = float64(100 - i) // 100..1, unsorted
	}
	for _, tt := range []struct {
		in   []float64
		p    float64
		want float64
	}{
		{nil, 50, 0},
		{[]float64{7}, 99, 7},
		{[]float64{3, 1, 2}, 50, 2},
		{[]float64{4, 1, 3, 2}, 50, 2},
		{hundred, 50, 50},
		{hundred, 99, 99},
		{hundred, 100, 100},
		{hundred, 0.1, 1},
	} {
		if got := percentile(tt.in, tt.p); got != tt.want {
			t.Errorf("percentile(%d samples, %v) = %v, want %v", len(tt.in), tt.p, got, tt.want)
		}
	}
}

// TestSelectSections: every section by default; -peers, -mirror or
// -access given runs only the sections given; -access=false leaves the
// others.
func TestSelectSections(t *testing.T) {
	type sections struct{ sideBySide, cluster, peers, mirror, access bool }
	for _, tt := range []struct {
		name string
		set  map[string]bool // flags given, with their values
		want sections
	}{
		{"defaults", nil, sections{true, true, true, true, true}},
		{"-access", map[string]bool{"access": true}, sections{false, false, false, false, true}},
		{"-peers", map[string]bool{"peers": true}, sections{false, false, true, false, false}},
		{"-mirror -access", map[string]bool{"mirror": true, "access": true}, sections{false, false, false, true, true}},
		{"-access -cluster", map[string]bool{"access": true, "cluster": true}, sections{false, true, false, false, true}},
		{"-access=false", map[string]bool{"access": false}, sections{true, true, true, true, false}},
	} {
		c := config{cluster: true, peers: true, mirror: true, access: true}
		given := map[string]bool{}
		for name, v := range tt.set {
			given[name] = true
			switch name {
			case "access":
				c.access = v
			case "peers":
				c.peers = v
			case "mirror":
				c.mirror = v
			case "cluster":
				c.cluster = v
			}
		}
		c.selectSections(given)
		if got := (sections{c.sideBySide, c.cluster, c.peers, c.mirror, c.access}); got != tt.want {
			t.Errorf("%s: sections %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

// TestAccessTableGoal: the access table says whether meshreg with TLS and
// auth meets each goal, from the medians.
func TestAccessTableGoal(t *testing.T) {
	mesh, meshAcc := &server{name: "meshreg", version: "v"}, &server{name: "meshreg " + accessLabel}
	dist, distAcc := &server{name: "Distribution"}, &server{name: "Distribution " + accessLabel}
	r := newResults([]*server{mesh, meshAcc, dist, distAcc})
	for _, v := range []struct {
		s         *server
		blob, get float64
	}{{mesh, 1000, 10000}, {meshAcc, 500, 9000}, {dist, 800, 3000}, {distAcc, 300, 10}} {
		r.add("blob pull", v.s, v.blob, "")
		r.add("manifest GET by tag", v.s, v.get, "")
	}
	got := r.accessTable(config{runs: 1, conns: 32, accessBlobSize: 64 << 20}, mesh, meshAcc, dist, distAcc)
	for _, want := range []string{
		"| pull one 64MiB blob, MB/s | 1000 | 500 | 0.50× (≥ 0.90×) | 800 | 300 | 0.38× |",
		"blob pull 0.50× of plain (goal ≥ 0.90×: NOT met)",
		"manifest GET by tag 0.90× of plain (goal ≥ 0.80×: met)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
}

// TestAccessOrder: each registry's plain and TLS+auth servers are
// measured back to back, which first alternating.
func TestAccessOrder(t *testing.T) {
	m, ma, d, da := &server{name: "m"}, &server{name: "ma"}, &server{name: "d"}, &server{name: "da"}
	all := []*server{m, ma, d, da}
	for run, want := range [][]*server{{m, ma, d, da}, {ma, m, da, d}, {d, da, m, ma}, {da, d, ma, m}, {m, ma, d, da}} {
		if got := accessOrder(all, run); !slices.Equal(got, want) {
			t.Errorf("run %d: order %v, want %v", run, names(got), names(want))
		}
	}
}

// TestCPUTicks: this process's CPU time grows while it works.
func TestCPUTicks(t *testing.T) {
	before, err := cpuTicks(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(100 * time.Millisecond); time.Now().Before(end); {
	}
	after, err := cpuTicks(os.Getpid())
	if err != nil || after <= before {
		t.Errorf("CPU ticks %d then %d after 100 ms of work (%v), want them to grow", before, after, err)
	}
}
