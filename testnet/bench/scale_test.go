package main

import (
	"os"
	"strings"
	"testing"
)

func TestScaleSizes(t *testing.T) {
	got, err := parseSizes("3, 25,50,100")
	if err != nil || len(got) != 4 || got[0] != 3 || got[3] != 100 {
		t.Fatalf("parseSizes = %v, %v", got, err)
	}
	for _, bad := range []string{"", "0", "3,x", "-1", "100000"} {
		if _, err := parseSizes(bad); err == nil || !strings.Contains(err.Error(), "-scale-sizes") {
			t.Errorf("parseSizes(%q) = %v, want an error naming -scale-sizes", bad, err)
		}
	}
}

// TestScaleReadsProcessCounters: the per-node figures come from /proc;
// this process has used CPU, holds memory and has written (its test
// output at least).
func TestScaleReadsProcessCounters(t *testing.T) {
	x := 0
	for i := range 50_000_000 {
		x += i
	}
	os.Stdout.WriteString("")
	p, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if p.cpu <= 0 || p.rss < 1<<20 || p.written < 0 {
		t.Fatalf("readProc(self) = %+v (x %d): want CPU time, over 1 MiB of RSS", p, x)
	}
}

// TestScaleRunsOnlyWhenAsked: -scale is off in a plain run; given alone it
// runs alone.
func TestScaleRunsOnlyWhenAsked(t *testing.T) {
	c := config{cluster: true, peers: true, mirror: true, access: true, gc: true}
	c.selectSections(map[string]bool{})
	if c.scale {
		t.Error("a plain run includes the scale section")
	}
	c = config{cluster: true, peers: true, mirror: true, access: true, gc: true, scale: true}
	c.selectSections(map[string]bool{"scale": true})
	if !c.scale || c.sideBySide || c.cluster || c.peers || c.mirror || c.access || c.gc {
		t.Errorf("-scale alone: %+v, want only the scale section", c)
	}
}
