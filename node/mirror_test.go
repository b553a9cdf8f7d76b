package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/node/mirror"
)

// upstreamFake is an upstream registry (test only) holding one image
// (config and one layer) under team/app:v1; it counts what it is asked.
type upstreamFake struct {
	manifest, config, layer []byte
	heads, gets, blobs      atomic.Int32
	gate                    chan struct{} // when set, Resolve waits for it
}

func newUpstreamFake() *upstreamFake {
	u := &upstreamFake{config: []byte(`{"architecture":"amd64","os":"linux"}`), layer: bytes.Repeat([]byte("layer"), 50_000)}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(u.config), Size: int64(len(u.config))},
		Layers: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(u.layer), Size: int64(len(u.layer))}}}
	m.SchemaVersion = 2
	u.manifest, _ = json.Marshal(m)
	return u
}

func (u *upstreamFake) Name() string { return "up.test" }

func (u *upstreamFake) desc() ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(u.manifest), Size: int64(len(u.manifest))}
}

func (u *upstreamFake) Resolve(ctx context.Context, repo, ref string) (ocispec.Descriptor, error) {
	u.heads.Add(1)
	if u.gate != nil {
		<-u.gate
	}
	if repo != "team/app" || ref != "v1" {
		return ocispec.Descriptor{}, fmt.Errorf("%s:%s: %w", repo, ref, mirror.ErrNotFound)
	}
	return u.desc(), nil
}

func (u *upstreamFake) Manifest(ctx context.Context, repo, ref string, max int64) (ocispec.Descriptor, []byte, error) {
	u.gets.Add(1)
	if ref != u.desc().Digest.String() {
		return ocispec.Descriptor{}, nil, mirror.ErrNotFound
	}
	return u.desc(), u.manifest, nil
}

func (u *upstreamFake) Blob(ctx context.Context, repo string, d digest.Digest, size, offset int64) (io.ReadCloser, error) {
	u.blobs.Add(1)
	if d != digest.FromBytes(u.layer) {
		return nil, mirror.ErrNotFound
	}
	return io.NopCloser(bytes.NewReader(u.layer[offset:])), nil
}

// mirrorNet is three nodes mirroring one upstreamFake.
func mirrorNet(t *testing.T) (*fakeNet, *upstreamFake) {
	fn := newFakeNet(t)
	up := newUpstreamFake()
	for _, zone := range []string{"z1", "z2", "z3"} {
		n := fn.add(zone, func(c *Config) {
			c.Mirror = mirror.Config{Upstreams: []mirror.UpstreamConfig{{Name: "up.test", URL: "http://127.0.0.1:1"}}}
		})
		m, err := n.openMirror(map[string]mirror.Upstream{"up.test": up}, nil)
		if err != nil {
			t.Fatal(err)
		}
		n.useMirror(m)
	}
	return fn, up
}

// TestMirrorTagOncePerCluster: pulls of a tag through every node at once
// make one HEAD and one manifest GET upstream (the followers ask the
// leader, which shares the attempt), and every node answers the same
// digest from then on without asking again.
func TestMirrorTagOncePerCluster(t *testing.T) {
	fn, up := mirrorNet(t)
	up.gate = make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 9)
	for range 3 {
		for _, n := range fn.nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				m, err := n.GetManifest(t.Context(), "up.test/team/app", "v1")
				if err == nil && m.Digest != up.desc().Digest {
					err = fmt.Errorf("digest %s, want %s", m.Digest, up.desc().Digest)
				}
				errs <- err
			}()
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for up.heads.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // the others join the flight or queue behind it
	close(up.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if h, g := up.heads.Load(), up.gets.Load(); h != 1 || g != 1 {
		t.Fatalf("9 pulls through 3 nodes made %d HEADs and %d GETs upstream, want 1 and 1", h, g)
	}
	for i, n := range fn.nodes {
		if m, err := n.GetManifest(t.Context(), "up.test/team/app", "v1"); err != nil || m.Warning != "" {
			t.Fatalf("node %d after the first pull: %v %q", i, err, m.Warning)
		}
	}
	if h := up.heads.Load(); h != 1 {
		t.Fatalf("fresh tag asked upstream again: %d HEADs", h)
	}
}

// TestMirrorBlobFromUpstream: a layer of a mirrored manifest that no node
// holds is fetched from the upstream once, digest verified, then served
// by the other nodes from their peers.
func TestMirrorBlobFromUpstream(t *testing.T) {
	fn, up := mirrorNet(t)
	ctx := t.Context()
	if _, err := fn.nodes[1].GetManifest(ctx, "up.test/team/app", "v1"); err != nil {
		t.Fatal(err)
	}
	layer := digest.FromBytes(up.layer)
	for i, n := range fn.nodes {
		r, size, err := n.OpenBlob(ctx, "up.test/team/app", layer)
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || size != int64(len(up.layer)) || digest.FromBytes(got) != layer {
			t.Fatalf("node %d: %d bytes (%v), want the layer", i, len(got), err)
		}
	}
	if n := up.blobs.Load(); n != 1 {
		t.Fatalf("the layer was fetched from the upstream %d times, want once (then from peers)", n)
	}
}

// TestMirrorProtocolRefusesHostileRequests: a member asking the leader to
// revalidate something that is not a configured upstream's valid
// repository and tag gets a refusal, and nothing is asked upstream.
func TestMirrorProtocolRefusesHostileRequests(t *testing.T) {
	fn, up := mirrorNet(t)
	leader, member := fn.nodes[0], fn.nodes[1]
	for name, req := range map[string]string{
		"not JSON":         `{`,
		"unknown upstream": `{"upstream":"evil.example","repo":"team/app","tag":"v1"}`,
		"bad repository":   `{"upstream":"up.test","repo":"../etc","tag":"v1"}`,
		"bad tag":          `{"upstream":"up.test","repo":"team/app","tag":"-x/../"}`,
		"huge tag":         fmt.Sprintf(`{"upstream":"up.test","repo":"team/app","tag":%q}`, bytes.Repeat([]byte("a"), 5000)),
	} {
		resp, err := member.host.Request(t.Context(), leader.host.ID(), mirrorProtocol, []byte(req), maxControlLen)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var res mirrorResult
		if err := json.Unmarshal(resp, &res); err != nil || res.Kind == "" || res.Index != 0 {
			t.Errorf("%s: answer %s (%v), want a refusal", name, resp, err)
		}
	}
	if n := up.heads.Load(); n != 0 {
		t.Fatalf("hostile requests made %d HEADs upstream", n)
	}
}
