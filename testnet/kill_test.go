package testnet_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshreg/meshreg/testnet"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestKillDuringUpload kills a node with SIGKILL in the middle of a 512 MiB
// chunked upload and restarts it: the half-uploaded blob must not be
// served, the content pushed before must be intact, no upload temp files
// may be left, and the upload must succeed when redone.
func TestKillDuringUpload(t *testing.T) {
	testnet.RequireProcess(t)
	n := testnet.StartNode(t, testnet.Options{})
	c := testnet.NewClient(n.URL())
	ctx := t.Context()
	const repo = "e2e/kill"

	// Content pushed before the crash: three layers, a config and a
	// manifest tagged v1.
	type blob struct {
		d    digest.Digest
		size int64
	}
	var earlier []blob
	var layers []ocispec.Descriptor
	for i := range 3 {
		b := testnet.RandomBytes(1<<20 + i)
		d, err := c.PushBytes(ctx, repo, b)
		if err != nil {
			t.Fatalf("push layer %d: %v", i, err)
		}
		earlier = append(earlier, blob{d, int64(len(b))})
		layers = append(layers, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: d, Size: int64(len(b))})
	}
	cfg, _ := json.Marshal(ocispec.Image{Platform: ocispec.Platform{Architecture: "amd64", OS: "linux"}, RootFS: ocispec.RootFS{Type: "layers"}})
	cfgDigest, err := c.PushBytes(ctx, repo, cfg)
	if err != nil {
		t.Fatalf("push config: %v", err)
	}
	earlier = append(earlier, blob{cfgDigest, int64(len(cfg))})
	manifest, _ := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cfgDigest, Size: int64(len(cfg))},
		Layers:    layers,
	})
	manifestDigest, err := c.PutManifest(ctx, repo, "v1", ocispec.MediaTypeImageManifest, manifest)
	if err != nil {
		t.Fatalf("push manifest: %v", err)
	}

	// The big upload: one complete 128 MiB chunk, then the rest streamed
	// in a second PATCH that the node dies in the middle of.
	const (
		size   = 512 << 20
		chunk  = 128 << 20
		killAt = 256 << 20 // bytes sent in all when the node is killed
	)
	seed := rand.Uint64()
	big := testnet.StreamDigest(seed, size)
	t.Logf("big blob: %d MiB, %s", size>>20, big)
	stream := testnet.NewStream(seed, size)
	loc, err := c.StartUpload(ctx, repo)
	if err != nil {
		t.Fatal(err)
	}
	firstLoc := loc
	if loc, err = c.PatchUpload(ctx, loc, 0, chunk, io.LimitReader(stream, chunk)); err != nil {
		t.Fatalf("first chunk: %v", err)
	}
	if partial, err := testnet.LeftoverUploads(n.DataDir()); err != nil {
		t.Fatal(err)
	} else if len(partial) == 0 {
		t.Errorf("with %d MiB of an upload accepted, no upload temp file is under any %s/**/uploads dir: "+
			"the leftover check after the restart would prove nothing", chunk>>20, n.DataDir())
	} else {
		t.Logf("upload in progress: %s", strings.Join(partial, ", "))
	}

	gate := &killGate{r: stream, left: killAt - chunk, reached: make(chan struct{})}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	gate.ctx = pctx
	patchErr := make(chan error, 1)
	go func() {
		_, err := c.PatchUpload(pctx, loc, chunk, size-chunk, gate)
		patchErr <- err
	}()
	select {
	case <-gate.reached:
	case err := <-patchErr:
		t.Fatalf("second chunk ended before the kill point: %v", err)
	case <-time.After(3 * time.Minute):
		t.Fatal("second chunk did not reach the kill point in 3 minutes")
	}
	time.Sleep(300 * time.Millisecond) // let the node write what it has received
	t.Logf("SIGKILL with %d of %d MiB sent", killAt>>20, size>>20)
	n.Kill()
	cancel()
	if err := <-patchErr; err == nil {
		t.Errorf("the PATCH cut off by the kill reported success")
	}

	n.Restart()

	// The half-uploaded blob is not there.
	if status, _, err := c.HeadBlob(ctx, repo, big); err != nil {
		t.Fatal(err)
	} else if status != http.StatusNotFound {
		t.Errorf("HEAD /v2/%s/blobs/%s after the crash: %d, want 404", repo, big, status)
	}
	if status, _, body, err := c.Get(ctx, "/v2/"+repo+"/blobs/"+big.String(), nil); err != nil {
		t.Fatal(err)
	} else if status != http.StatusNotFound {
		t.Errorf("GET /v2/%s/blobs/%s after the crash: %d, want 404 (%d bytes of body)", repo, big, status, len(body))
	}
	if files, err := testnet.FilesNamed(n.DataDir(), big.Encoded()); err != nil {
		t.Fatal(err)
	} else if len(files) > 0 {
		t.Errorf("files named after the unfinished blob are on disk: %v", files)
	}
	// The session died with the process: its upload URL is unknown now.
	for _, l := range []string{firstLoc, loc} {
		status, _, body, err := c.Get(ctx, strings.TrimPrefix(l, n.URL()), nil)
		if err != nil {
			t.Fatal(err)
		}
		if status != http.StatusNotFound {
			t.Errorf("GET %s (upload session of the killed process) after restart: %d, want 404 BLOB_UPLOAD_UNKNOWN; body: %s", l, status, body)
		}
	}
	// No temp files are left (cleaned at start; allow a moment for it).
	var left []string
	for deadline := time.Now().Add(5 * time.Second); ; {
		if left, err = testnet.LeftoverUploads(n.DataDir()); err != nil {
			t.Fatal(err)
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("upload temp files left after restart: %v", left)
	}

	// Everything pushed before the crash is intact.
	for _, b := range earlier {
		if err := c.VerifyBlob(ctx, repo, b.d, b.size); err != nil {
			t.Errorf("earlier blob after the crash: %v", err)
		}
	}
	body, _, served, err := c.GetManifest(ctx, repo, "v1")
	if err != nil {
		t.Errorf("earlier manifest after the crash: %v", err)
	} else if got := digest.FromBytes(body); got != manifestDigest || (served != "" && served != manifestDigest.String()) {
		t.Errorf("%s:v1 after the crash: body %s, Docker-Content-Digest %s; want %s", repo, got, served, manifestDigest)
	}

	// The upload can be redone, and the blob is then served whole.
	start := time.Now()
	if err := c.PushBlob(ctx, repo, big, size, testnet.NewStream(seed, size)); err != nil {
		t.Fatalf("redo the upload: %v", err)
	}
	t.Logf("redone upload of %d MiB in %v", size>>20, time.Since(start).Round(time.Millisecond))
	if status, length, err := c.HeadBlob(ctx, repo, big); err != nil {
		t.Fatal(err)
	} else if status != http.StatusOK || length != size {
		t.Errorf("HEAD after the redone upload: %d with Content-Length %d, want 200 with %d", status, length, size)
	}
	if err := c.VerifyBlob(ctx, repo, big, size); err != nil {
		t.Errorf("after the redone upload: %v", err)
	}
	if left, err := testnet.LeftoverUploads(n.DataDir()); err != nil {
		t.Fatal(err)
	} else if len(left) > 0 {
		t.Errorf("upload temp files left after a completed upload: %v", left)
	}
	n.Stop()
}

// killGate passes left bytes of r through, then closes reached and blocks
// until ctx ends: the request body stalls mid-way so the node can be killed
// while it is receiving it.
type killGate struct {
	r       io.Reader
	left    int64
	ctx     context.Context
	reached chan struct{}
	once    sync.Once
}

func (g *killGate) Read(p []byte) (int, error) {
	if g.left <= 0 {
		g.once.Do(func() { close(g.reached) })
		<-g.ctx.Done()
		return 0, errors.New("killGate: request abandoned")
	}
	if int64(len(p)) > g.left {
		p = p[:g.left]
	}
	n, err := g.r.Read(p)
	g.left -= int64(n)
	return n, err
}
