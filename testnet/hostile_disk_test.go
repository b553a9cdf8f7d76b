package testnet_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/node"
	"github.com/meshreg/meshreg/testnet"
)

// blobFile is where a node with data dir dataDir keeps blob d.
func blobFile(dataDir string, d digest.Digest) string {
	return filepath.Join(dataDir, "blobs", string(d.Algorithm()), d.Encoded()[:2], d.Encoded())
}

// flipStoredByte inverts one byte of the blob file in place, as bit rot
// would.
func flipStoredByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("open the stored blob to corrupt it: %v", err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func quarantined(t *testing.T, dataDir string) int {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dataDir, "quarantine"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return len(entries)
}

// fileHolds reports whether path holds exactly the bytes of d.
func fileHolds(path string, d digest.Digest) bool {
	b, err := os.ReadFile(path)
	return err == nil && digest.FromBytes(b) == d
}

// pull GETs a blob as a client would and reports what came back: the
// status, the bytes received, and the error that ended the body.
func pull(ctx context.Context, base, repo string, d digest.Digest) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v2/"+repo+"/blobs/"+d.String(), nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// assertNeverWholeAndWrong fails if a client got a 200 whose body ended
// cleanly (so the client takes it as complete) but does not hash to the
// digest it asked for.
func assertNeverWholeAndWrong(t *testing.T, who string, status int, got []byte, rerr error, d digest.Digest, size int) {
	t.Helper()
	if status == http.StatusOK && rerr == nil && digest.FromBytes(got) != d {
		t.Fatalf("%s: 200 with a body that ended cleanly after %d bytes (blob: %d) hashing to %s, not %s: a corrupt copy was served as good",
			who, len(got), size, digest.FromBytes(got), d)
	}
	t.Logf("%s: status %d, %d of %d bytes, body error %v, complete and right: %v",
		who, status, len(got), size, rerr, rerr == nil && digest.FromBytes(got) == d)
}

// pushWithManifest pushes blob b and a manifest naming it through c, so
// that the manifest PUT makes --replicas copies of b.
func pushWithManifest(t *testing.T, c *testnet.Client, repo string, b []byte) digest.Digest {
	t.Helper()
	ctx := t.Context()
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	cd, err := c.PushBytes(ctx, repo, cfg)
	if err != nil {
		t.Fatalf("push config: %v", err)
	}
	d, err := c.PushBytes(ctx, repo, b)
	if err != nil {
		t.Fatalf("push layer: %v", err)
	}
	m, _ := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cd, Size: int64(len(cfg))},
		Layers:    []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: d, Size: int64(len(b))}},
	})
	if _, err := c.PutManifest(ctx, repo, "v1", ocispec.MediaTypeImageManifest, m); err != nil {
		t.Fatalf("push manifest: %v", err)
	}
	return d
}

// TestHostileDiskBitRot flips one byte of stored blobs, as bit rot or a
// stray write would, and checks what clients and peers get: never a
// complete wrong blob; the corrupt file moved to quarantine, counted, and
// replaced from a peer; and the scrub finds rot in a blob nobody reads.
func TestHostileDiskBitRot(t *testing.T) {
	t.Parallel()
	dirs := make([]string, 3)
	nodes := testnet.StartInProcessCluster(t, 3, func(i int, c *node.Config) {
		dirs[i] = c.DataDir
		c.Replicas = 2
		c.RepairInterval = time.Hour // copies come from pushes only
		c.ScrubRate = 0
		if i == 2 {
			c.ScrubRate = 256 << 20
			c.ScrubInterval = 300 * time.Millisecond
		}
	})
	a, b, c := nodes[0], nodes[1], nodes[2]
	ctx := t.Context()

	t.Run("a client never gets a rotten blob whole", func(t *testing.T) {
		repo := testnet.UniqueRepo("e2e/bitrot")
		blob, _ := randomBlob(71, 3<<20+123)
		d := pushWithManifest(t, testnet.NewClient(a.URL()), repo, blob)
		path := blobFile(dirs[0], d)
		flipStoredByte(t, path, 1<<20)

		status, got, rerr := pull(ctx, a.URL(), repo, d)
		assertNeverWholeAndWrong(t, "GET from the node with the rotten copy", status, got, rerr, d, len(blob))

		// The node quarantined its copy, counted it, and fetched a good
		// one from the other holder: it serves the right bytes again.
		if !testnet.Eventually(60*time.Second, func() bool {
			s, g, err := pull(ctx, a.URL(), repo, d)
			return s == http.StatusOK && err == nil && bytes.Equal(g, blob) && fileHolds(path, d)
		}) {
			t.Fatalf("the node never served and held the right bytes again (file holds them: %v)", fileHolds(path, d))
		}
		if n := quarantined(t, dirs[0]); n != 1 {
			t.Fatalf("%d files in quarantine, want 1", n)
		}
		if v := metric(t, a.Node, "meshreg_blobs_corrupt_total"); v != 1 {
			t.Fatalf("meshreg_blobs_corrupt_total = %v, want 1", v)
		}
	})

	t.Run("a peer never stores a rotten copy", func(t *testing.T) {
		repo := testnet.UniqueRepo("e2e/bitrot-peer")
		blob, d := randomBlob(72, 2<<20+5)
		// A plain blob push: only a holds it (no manifest, no repair).
		if _, err := testnet.NewClient(a.URL()).PushBytes(ctx, repo, blob); err != nil {
			t.Fatal(err)
		}
		waitLinked(t, b.Node, repo, d)
		flipStoredByte(t, blobFile(dirs[0], d), int64(len(blob)-1))

		status, got, rerr := pull(ctx, b.URL(), repo, d)
		assertNeverWholeAndWrong(t, "GET through a peer of the node with the rotten copy", status, got, rerr, d, len(blob))
		// Once b's fetch has ended, look at its disk.
		if !testnet.Eventually(30*time.Second, func() bool {
			st, err := b.Status(ctx)
			return err == nil && st.Blobs.Fetching == 0
		}) {
			t.Fatal("the peer's fetch from the rotten copy never ended")
		}
		if _, err := os.Stat(blobFile(dirs[1], d)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the peer stored the blob fetched from a rotten copy (stat: %v)", err)
		}
		if n := quarantined(t, dirs[0]); n != 2 {
			t.Fatalf("%d files in the serving node's quarantine, want 2", n)
		}
	})

	t.Run("a blob truncated to nothing", func(t *testing.T) {
		repo := testnet.UniqueRepo("e2e/bitrot-truncated")
		blob, _ := randomBlob(74, 1<<20+3)
		d := pushWithManifest(t, testnet.NewClient(a.URL()), repo, blob)
		path := blobFile(dirs[0], d)
		if err := os.Truncate(path, 0); err != nil {
			t.Fatal(err)
		}
		status, got, rerr := pull(ctx, a.URL(), repo, d)
		assertNeverWholeAndWrong(t, "GET of a blob whose file was truncated", status, got, rerr, d, len(blob))
		if !testnet.Eventually(60*time.Second, func() bool {
			s, g, err := pull(ctx, a.URL(), repo, d)
			return s == http.StatusOK && err == nil && bytes.Equal(g, blob) && fileHolds(path, d)
		}) {
			t.Fatal("the node never served and held the right bytes again")
		}
		if n := quarantined(t, dirs[0]); n != 3 {
			t.Fatalf("%d files in quarantine, want 3", n)
		}
	})

	t.Run("the scrub finds rot in a blob nobody reads", func(t *testing.T) {
		repo := testnet.UniqueRepo("e2e/bitrot-scrub")
		blob, _ := randomBlob(73, 1<<20+7)
		d := pushWithManifest(t, testnet.NewClient(c.URL()), repo, blob)
		path := blobFile(dirs[2], d)
		if !fileHolds(path, d) {
			t.Fatal("the node the image was pushed to does not hold its layer")
		}
		flipStoredByte(t, path, 17)
		if !testnet.Eventually(60*time.Second, func() bool {
			return quarantined(t, dirs[2]) == 1 && fileHolds(path, d)
		}) {
			t.Fatalf("the scrub did not quarantine and replace the rotten blob: %d quarantined, file right: %v",
				quarantined(t, dirs[2]), fileHolds(path, d))
		}
		if v := metric(t, c.Node, "meshreg_blobs_corrupt_total"); v != 1 {
			t.Fatalf("meshreg_blobs_corrupt_total = %v, want 1", v)
		}
		st := rawStatus(t, c.URL())
		if st.Blobs.Corrupt != 1 || st.Scrub.CorruptFound != 1 {
			t.Fatalf("status: blobs.corrupt = %d, scrub.corrupt_found = %d; want 1 and 1", st.Blobs.Corrupt, st.Scrub.CorruptFound)
		}
	})
}

// diskStatus is the part of the status document these tests read.
type diskStatus struct {
	Blobs struct {
		Corrupt int64 `json:"corrupt"`
	} `json:"blobs"`
	Scrub struct {
		CorruptFound int64 `json:"corrupt_found"`
	} `json:"scrub"`
	Disk struct {
		FreeBytes    int64 `json:"free_bytes"`
		ReserveBytes int64 `json:"reserve_bytes"`
		Low          bool  `json:"low"`
	} `json:"disk"`
}

func rawStatus(t *testing.T, base string) diskStatus {
	t.Helper()
	var st diskStatus
	resp, err := http.Get(base + "/_meshreg/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// tmpfsNode is a meshreg process whose data dir is a small tmpfs.
type tmpfsNode struct {
	t       *testing.T
	dir     string
	dataDir string
	host    string
	args    []string
	proc    *testnet.Process
}

func (n *tmpfsNode) url() string { return "http://" + n.host }

func (n *tmpfsNode) start() {
	n.t.Helper()
	p, err := testnet.StartProcess(testnet.ProcessConfig{
		Name: "meshreg on tmpfs", Path: testnet.Binary(n.t), Args: n.args, Dir: n.dir,
		LogPath: filepath.Join(n.dir, "node.log"), StripEnv: []string{"MESHREG_"},
	})
	if err != nil {
		n.t.Fatal(err)
	}
	n.proc = p
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := p.WaitHTTP(ctx, n.url()+"/readyz", http.StatusOK); err != nil {
		n.t.Fatal(err)
	}
}

// mountTmpfs mounts a tmpfs of size at dir until the test ends. Mounting
// needs root (CI runs as root): anywhere else the test fails and says so.
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("the full-disk test mounts a %s tmpfs and needs root with mount permitted (as in CI): mount -t tmpfs %s: %v: %s",
			size, dir, err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
}

// pushStatus pushes b monolithically (POST ?digest=) and returns the
// status and the OCI error body, if any.
func pushStatus(ctx context.Context, base, repo string, b []byte) (int, string, error) {
	d := digest.FromBytes(b)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/?digest="+d.String(), bytes.NewReader(b))
	if err != nil {
		return 0, "", err
	}
	req.ContentLength = int64(len(b))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}

// assertInsufficientStorage checks a refused write's answer: 507 and an
// OCI error body that says the node is low on disk.
func assertInsufficientStorage(t *testing.T, what string, status int, body string) {
	t.Helper()
	var e struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if status != http.StatusInsufficientStorage || json.Unmarshal([]byte(body), &e) != nil || len(e.Errors) != 1 ||
		e.Errors[0].Code != "DENIED" || !strings.Contains(e.Errors[0].Message, "low on disk") || !strings.Contains(e.Errors[0].Message, "reserved") {
		t.Fatalf("%s on a full disk: %d %s; want 507 with an OCI DENIED error saying the node is low on disk", what, status, body)
	}
}

// TestHostileDiskFull fills a node's 64 MiB disk with pushes: writes must
// be refused with 507 before the metadata store runs out (no crash, no
// SIGBUS, no partial file), reads keep working, writes resume once space
// is freed, and the node restarts clean.
func TestHostileDiskFull(t *testing.T) {
	testnet.RequireProcess(t)
	t.Parallel()
	dir := testnet.KeepDir(t, "tmpfs")
	n := &tmpfsNode{t: t, dir: dir, dataDir: filepath.Join(dir, "data")}
	if err := os.Mkdir(n.dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, n.dataDir, "64m")
	var err error
	if n.host, err = testnet.FreeAddr(); err != nil {
		t.Fatal(err)
	}
	p2pAddr, err := testnet.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	_, p2pPort, _ := net.SplitHostPort(p2pAddr)
	n.args = []string{"serve", "--listen", n.host, "--data-dir", n.dataDir, "--log-format", "json",
		"--p2p-listen", "/ip4/127.0.0.1/tcp/" + p2pPort, "--min-free-disk", "16MiB"}
	// A filler the operator can delete later.
	filler := filepath.Join(n.dataDir, "filler")
	if err := os.WriteFile(filler, make([]byte, 8<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	n.start()
	t.Cleanup(func() {
		if !n.proc.Exited() {
			if err := n.proc.Stop(30 * time.Second); err != nil {
				t.Errorf("stop: %v", err)
			}
		}
		if t.Failed() {
			tail, _, _ := testnet.TailFile(filepath.Join(dir, "node.log"), 60)
			t.Logf("node log:\n%s", tail)
		}
	})
	ctx := t.Context()
	c := testnet.NewClient(n.url())
	repo := testnet.UniqueRepo("e2e/full")
	first := pushWithManifest(t, c, repo, testnet.RandomBytes(1<<20))
	session, err := c.StartUpload(ctx, repo) // chunks are sent once the disk is full
	if err != nil {
		t.Fatal(err)
	}

	// Fill the disk with 1 MiB pushes until one is refused.
	var status int
	var body string
	pushed := 0
	for i := 0; i < 200; i++ {
		status, body, err = pushStatus(ctx, n.url(), repo, testnet.RandomBytes(1<<20))
		if err != nil {
			t.Fatalf("push %d: %v", i, err)
		}
		if status != http.StatusCreated {
			break
		}
		pushed++
	}
	t.Logf("%d pushes of 1 MiB accepted before the first refusal", pushed)
	assertInsufficientStorage(t, "blob push", status, body)
	if n.proc.Exited() {
		t.Fatalf("the node died on a full disk: %v", n.proc.ExitErr())
	}

	// Every kind of write is refused the same way.
	st, _, _, err := testnet.NewClient(n.url()).Get(ctx, "/v2/", nil)
	if err != nil || st != http.StatusOK {
		t.Fatalf("GET /v2/ on a full disk: %d %v", st, err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, n.url()+"/v2/"+repo+"/blobs/uploads/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assertInsufficientStorage(t, "starting an upload", resp.StatusCode, string(b))
	m := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`)
	req, _ = http.NewRequestWithContext(ctx, http.MethodPut, n.url()+"/v2/"+repo+"/manifests/v2", bytes.NewReader(m))
	req.Header.Set("Content-Type", ocispec.MediaTypeImageManifest)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	assertInsufficientStorage(t, "manifest PUT", resp.StatusCode, string(b))
	st, pb := patchStatus(t, session, 0, testnet.RandomBytes(1<<20))
	assertInsufficientStorage(t, "a chunk (PATCH)", st, pb)

	// Reads go on.
	if err := c.VerifyBlob(ctx, repo, first, 1<<20); err != nil {
		t.Fatalf("reading a blob on a full disk: %v", err)
	}
	if _, _, _, err := c.GetManifest(ctx, repo, "v1"); err != nil {
		t.Fatalf("reading a manifest on a full disk: %v", err)
	}
	ds := rawStatus(t, n.url())
	if !ds.Disk.Low || ds.Disk.ReserveBytes != 16<<20 {
		t.Fatalf("status disk = %+v, want low with 16 MiB reserved", ds.Disk)
	}
	if v := readMetric(t, n.url(), "meshreg_writes_refused_total", `reason="disk"`); v < 3 {
		t.Fatalf("meshreg_writes_refused_total{reason=\"disk\"} = %v, want >= 3", v)
	}
	if v := readMetric(t, n.url(), "meshreg_disk_free_bytes"); v >= 16<<20 {
		t.Fatalf("meshreg_disk_free_bytes = %v on a full disk, want < 16 MiB", v)
	}
	if left := leftovers(t, n.dataDir); len(left) > 0 {
		t.Fatalf("refused pushes left temp files behind: %v", left)
	}

	// The operator frees space: pushes work again, with no restart.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if !testnet.Eventually(10*time.Second, func() bool {
		s, _, err := pushStatus(ctx, n.url(), repo, testnet.RandomBytes(1<<20))
		return err == nil && s == http.StatusCreated
	}) {
		t.Fatal("pushes stayed refused after space was freed")
	}
	// A push larger than the space left above the reserve is cut off by
	// the guard (or ENOSPC) and leaves nothing behind.
	status, body, err = pushStatus(ctx, n.url(), repo, testnet.RandomBytes(24<<20))
	if err != nil {
		t.Fatalf("large push: %v", err)
	}
	assertInsufficientStorage(t, "a push larger than the free space", status, body)
	st, pb = patchStatus(t, session, 0, testnet.RandomBytes(24<<20))
	assertInsufficientStorage(t, "a chunk larger than the free space (PATCH)", st, pb)
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, session, nil)
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Range") != "0-0" {
		t.Fatalf("the upload session after a refused chunk: %s, Range %q; want 204 and unchanged (0-0)", resp.Status, resp.Header.Get("Range"))
	}
	if left := leftovers(t, n.dataDir); len(left) > 0 {
		t.Fatalf("a refused chunk left bytes behind: %v", left)
	}
	if left := leftovers(t, n.dataDir); len(left) > 0 {
		t.Fatalf("a refused large push left temp files behind: %v", left)
	}

	// A restart comes back clean, with every acknowledged blob.
	if err := n.proc.Stop(30 * time.Second); err != nil {
		t.Fatalf("stopping the node on a full disk: %v", err)
	}
	n.start()
	if err := c.VerifyBlob(ctx, repo, first, 1<<20); err != nil {
		t.Fatalf("after restart: %v", err)
	}
}

// patchStatus sends one chunk to an upload session and returns the status
// and body of the answer.
func patchStatus(t *testing.T, location string, start int64, chunk []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPatch, location, bytes.NewReader(chunk))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(chunk))
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", start, start+int64(len(chunk))-1))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("PATCH %s: %v", location, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// leftovers lists what a refused write left in the node's uploads
// directory: temp files of pushes and fetches, and upload session files
// that are not empty (the one session the test keeps open had every chunk
// refused).
func leftovers(t *testing.T, dataDir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dataDir, "uploads"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			continue
		}
		if strings.HasPrefix(e.Name(), "put-") || strings.HasPrefix(e.Name(), "fetch-") || fi.Size() != 0 {
			out = append(out, fmt.Sprintf("%s (%d bytes)", e.Name(), fi.Size()))
		}
	}
	return out
}

// readMetric sums a metric of the node at base.
func readMetric(t *testing.T, base, name string, match ...string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	v, err := testnet.SumMetric(resp.Body, name, match...)
	if err != nil {
		t.Fatal(fmt.Errorf("metric %s: %w", name, err))
	}
	return v
}
