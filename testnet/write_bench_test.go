package testnet_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/testnet"
)

// BenchmarkClusterTagWrite measures a tag write (the PUT of a small index
// manifest) on a 3-node cluster of processes on loopback, one at a time,
// through the leader and through a follower (forwarded, answered once the
// follower applied it), with the median and 99th percentile latency:
//
//	make build && MESHREG_E2E_BIN=$PWD/bin/meshreg go test -run '^$' -bench ClusterTagWrite -benchtime 300x ./testnet/
func BenchmarkClusterTagWrite(b *testing.B) {
	testnet.RequireProcess(b)
	nodes := testnet.StartCluster(b, 3, testnet.Options{})
	leader, followers := testnet.Leader(b, nodes, 15*time.Second)
	for _, bc := range []struct {
		name string
		node *testnet.Node
	}{{"leader", leader}, {"follower", followers[0]}} {
		b.Run(bc.name, func(b *testing.B) {
			c := testnet.NewClient(bc.node.URL())
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				tag := fmt.Sprintf("%s-%d-%d", bc.name, b.N, i)
				body, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
					Manifests: []ocispec.Descriptor{}, Annotations: map[string]string{"v": tag}})
				start := time.Now()
				if _, err := c.PutManifest(b.Context(), "bench/writes", tag, ocispec.MediaTypeImageIndex, body); err != nil {
					b.Fatalf("write %d through the %s: %v", i, bc.name, err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
