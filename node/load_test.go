package node

import (
	"testing"
	"time"
)

func TestUploadLoadHalvesEveryHalfLife(t *testing.T) {
	var l uploadLoad
	start := time.Unix(1000, 0)
	if v := l.value(start); v != 0 {
		t.Fatalf("new load = %v, want 0", v)
	}
	l.add(1000, start)
	if v := l.value(start.Add(loadHalfLife)); v < 499 || v > 501 {
		t.Fatalf("load after one half-life = %v, want 500", v)
	}
	l.add(500, start.Add(loadHalfLife))
	if v := l.value(start.Add(2 * loadHalfLife)); v < 499 || v > 501 {
		t.Fatalf("load = %v, want 500 (1000 decayed twice + 500 decayed once)", v)
	}
}
