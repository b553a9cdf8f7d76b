package node

import (
	"slices"
	"testing"
)

func TestRouteTargets(t *testing.T) {
	t.Parallel()
	got := routeTargets([]string{
		"http://meshreg.meshreg.svc.cluster.local:5000",
		"https://10.0.0.7:5000/",
		"http://[fd00::7]:5000",
		"/ip4/10.0.0.8/tcp/4001/p2p/12D3KooWCxN29wQqEYJ6QZBxLchRD3qgTACnDrWwZt5QQQBmMRPr",
		"/dns4/node-b.example/tcp/4001/p2p/12D3KooWCxN29wQqEYJ6QZBxLchRD3qgTACnDrWwZt5QQQBmMRPr",
		"not a target",
	})
	want := []string{"meshreg.meshreg.svc.cluster.local", "10.0.0.7", "fd00::7", "10.0.0.8", "node-b.example"}
	if !slices.Equal(got, want) {
		t.Errorf("routeTargets = %q, want %q", got, want)
	}
}
