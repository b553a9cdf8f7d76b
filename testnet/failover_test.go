package testnet_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/testnet"
)

// TestFailoverNoWrong404: 20 rounds of pushing a tag through the leader
// and SIGKILLing the leader within milliseconds of the acknowledgement.
// From right after the kill, every survivor is polled for the tag until it
// reads 200: every answer must be 200, or 503 with Retry-After while the
// survivors elect a new leader, never 404 (kubelet and containerd take a
// 404 as final). The killed node is restarted before the next round. Then
// a tag that never existed is still 404, with its latency reported.
func TestFailoverNoWrong404(t *testing.T) {
	testnet.RequireProcess(t)
	nodes := testnet.StartCluster(t, 3, testnet.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	const (
		repo   = "e2e/failover"
		rounds = 20
	)
	index := func(v string) []byte {
		b, _ := json.Marshal(ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{},
			Annotations: map[string]string{"v": v}, Versioned: specs.Versioned{SchemaVersion: 2}})
		return b
	}

	start := time.Now()
	var (
		answers  = map[int]int{} // status → count, over all rounds
		waits    []time.Duration // kill → the tag read 200 on every survivor
		killLags []time.Duration // acknowledgement → the leader gone
	)
	for round := range rounds {
		if ctx.Err() != nil {
			t.Fatalf("round %d: out of time after %v", round, time.Since(start))
		}
		leader, survivors := testnet.Leader(t, nodes, 15*time.Second)
		tag := fmt.Sprintf("r%d", round)
		body := index(tag)
		d, err := testnet.NewClient(leader.URL()).PutManifest(ctx, repo, tag, ocispec.MediaTypeImageIndex, body)
		acked := time.Now()
		if err != nil {
			t.Fatalf("round %d: push through the leader: %v", round, err)
		}
		leader.Kill()
		killed := time.Now()
		killLags = append(killLags, killed.Sub(acked))

		for _, n := range survivors {
			c := testnet.NewClient(n.URL())
			polls := 0
			for {
				polls++
				rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
				status, hdr, got, err := c.Get(rctx, "/v2/"+repo+"/manifests/"+tag, http.Header{"Accept": {testnet.ManifestAccept}})
				rcancel()
				if err != nil {
					t.Fatalf("round %d: GET %s on %s: %v", round, tag, n.Host(), err)
				}
				answers[status]++
				if status == http.StatusOK {
					if digest.FromBytes(got) != d {
						t.Errorf("round %d: %s served %s for %s, want %s", round, n.Host(), digest.FromBytes(got), tag, d)
					}
					break
				}
				if status != http.StatusServiceUnavailable {
					t.Fatalf("round %d: %s answered %d for the acknowledged tag %s %v after the kill (poll %d): %s",
						round, n.Host(), status, tag, time.Since(killed).Round(time.Millisecond), polls, got)
				}
				if hdr.Get("Retry-After") == "" {
					t.Errorf("round %d: 503 without Retry-After from %s: %s", round, n.Host(), got)
				}
				if time.Since(killed) > 20*time.Second {
					t.Fatalf("round %d: %s still answers 503 for %s 20s after the kill", round, n.Host(), tag)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		waits = append(waits, time.Since(killed))

		leader.Restart()
		testnet.WaitConverged(t, nodes, 3, 3, 30*time.Second)
	}
	slices.Sort(waits)
	slices.Sort(killLags)
	t.Logf("%d rounds in %v; answers by status %v; acknowledgement → SIGKILL done: median %v, max %v; kill → 200 on every survivor: median %v, max %v",
		rounds, time.Since(start).Round(time.Millisecond), answers, killLags[len(killLags)/2], killLags[len(killLags)-1],
		waits[len(waits)/2].Round(time.Millisecond), waits[len(waits)-1].Round(time.Millisecond))

	// A tag nobody pushed is still 404, on a follower and on the leader,
	// and what the catch-up adds to its latency is small (reported).
	leader, followers := testnet.Leader(t, nodes, 15*time.Second)
	for _, n := range []*testnet.Node{followers[0], leader} {
		c := testnet.NewClient(n.URL())
		var miss, hit []time.Duration
		for i := range 30 {
			t0 := time.Now()
			status, _, _, err := c.Get(ctx, fmt.Sprintf("/v2/%s/manifests/never-%d", repo, i), http.Header{"Accept": {testnet.ManifestAccept}})
			miss = append(miss, time.Since(t0))
			if err != nil || status != http.StatusNotFound {
				t.Fatalf("GET of a tag never pushed on %s: %d, %v; want 404", n.Host(), status, err)
			}
			t0 = time.Now()
			status, _, _, err = c.Get(ctx, "/v2/"+repo+"/manifests/r0", http.Header{"Accept": {testnet.ManifestAccept}})
			hit = append(hit, time.Since(t0))
			if err != nil || status != http.StatusOK {
				t.Fatalf("GET of r0 on %s: %d, %v; want 200", n.Host(), status, err)
			}
		}
		slices.Sort(miss)
		slices.Sort(hit)
		if miss[len(miss)/2] > time.Second {
			t.Errorf("a 404 on %s takes %v (median): the catch-up must be one round trip", n.Host(), miss[len(miss)/2])
		}
		role := "follower"
		if n == leader {
			role = "leader"
		}
		t.Logf("%s %s: 404 of a tag never pushed median %v max %v; 200 of a tag it holds median %v",
			role, n.Host(), miss[len(miss)/2].Round(time.Microsecond), miss[len(miss)-1].Round(time.Microsecond), hit[len(hit)/2].Round(time.Microsecond))
	}
}
