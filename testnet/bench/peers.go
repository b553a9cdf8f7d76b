package main

// The peer-transfer benchmark (-peers, on by default): blobs moving
// between meshreg nodes over libp2p, every node a process on loopback.
//
//  1. peer pull: on a 3-node cluster started with --replicas 1 (so a push
//     copies nothing), -runs times: push a fresh -peer-blob-size blob to
//     node 1, GET it through node 2 (which fetches it from node 1 and
//     streams it to the client while writing it to its disk), then from
//     node 1 (the holder, from disk), then through node 2 again (now
//     local). MB/s from sending the GET to the last byte, the client
//     hashing the body as it reads and checking the digest.
//  2. time to first byte, on the same cluster, -peer-ttfb-runs times: push
//     a fresh -peer-ttfb-size blob to node 1, GET it through node 2 (from
//     the peer), then from node 1 and node 2 again (both local); the time
//     from sending the GET to the first body byte. p50.
//  3. fan-out: on a 5-node cluster with the default --replicas 2, -runs
//     times: push an image of -fanout-layers × -fanout-layer-size random
//     layers, a config and a manifest to node 1 (the manifest PUT returns
//     once each blob is on a second node), then nodes 2–5 each pull every
//     blob of it (config, then the layers in order, one GET at a time,
//     digests checked), all four at once. The time from the first GET to
//     the last byte is compared with one pull of another fresh image of
//     the same size through one node, alone, and every node's
//     meshreg_peer_bytes_served_total is read before and after the push
//     and after the fan-out. The key figure is the pusher's egress in
//     image sizes: 1.00 means every other node got the bytes from another
//     puller, not from the pusher.
//
// Every blob has a digest never used before in the run, so a node cannot
// already hold it.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshreg/meshreg/testnet"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	peersRepo          = "bench/peers"
	fanoutRepo         = "bench/fanout"
	peerClusterSize    = 3
	fanoutClusterSize  = 5
	metricPeerServed   = "meshreg_peer_bytes_served_total"
	metricPeerFetched  = "meshreg_peer_bytes_fetched_total"
	metricsReadTimeout = 10 * time.Second
)

// peerSeed is the seed of blob i of repetition rep of phase, distinct from
// every seed of the other sections (those are (run+1)<<32 + i).
func peerSeed(phase, rep, i int) uint64 {
	return 0x7065_6572<<32 | uint64(phase)<<24 | uint64(rep)<<12 | uint64(i)
}

// getResult is one timed blob GET.
type getResult struct {
	ttfb, total time.Duration
	n           int64
}

func (g getResult) mbps() float64 { return float64(g.n) / 1e6 / g.total.Seconds() }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// newPeerHTTP is the client of the peer section: keep-alive, no
// compression, no overall timeout (each request has its own).
func newPeerHTTP() *http.Client {
	return &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 8}}
}

// warm opens a kept-alive connection to every node, so that no timed GET
// includes a TCP handshake.
func warm(ctx context.Context, hc *http.Client, nodes []*server) error {
	for _, s := range nodes {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url()+"/v2/", nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return s.failed(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return nil
}

// timedGet GETs blob d of repo from s, hashing the body as it streams, and
// checks its length and digest. Times run from just before the request is
// sent to the first body byte (ttfb) and to the last (total).
func timedGet(ctx context.Context, c config, hc *http.Client, s *server, repo string, d digest.Digest, size int64) (getResult, error) {
	return timedGetQuery(ctx, c, hc, s, repo, d, size, "")
}

// timedGetQuery is timedGet with a query string (such as "?ns=docker.io")
// after the blob's path.
func timedGetQuery(ctx context.Context, c config, hc *http.Client, s *server, repo string, d digest.Digest, size int64, query string) (getResult, error) {
	var res getResult
	ctx, cancel := context.WithTimeout(ctx, c.peerGetTimeout)
	defer cancel()
	url := s.url() + "/v2/" + repo + "/blobs/" + d.String() + query
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return res, err
	}
	start := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return res, s.failed(fmt.Errorf("GET %s: %w", url, err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return res, s.failed(fmt.Errorf("GET %s: %s after %v: %s", url, resp.Status, time.Since(start).Round(time.Millisecond), strings.TrimSpace(string(b))))
	}
	v := d.Verifier()
	buf := make([]byte, 1<<20)
	for {
		m, err := resp.Body.Read(buf)
		if m > 0 {
			if res.n == 0 {
				res.ttfb = time.Since(start)
			}
			v.Write(buf[:m])
			res.n += int64(m)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return res, s.failed(fmt.Errorf("GET %s: after %d of %d bytes and %v: %w", url, res.n, size, time.Since(start).Round(time.Millisecond), err))
		}
	}
	res.total = time.Since(start)
	if res.n != size {
		return res, s.failed(fmt.Errorf("GET %s: %d bytes, want %d", url, res.n, size))
	}
	if !v.Verified() {
		return res, s.failed(fmt.Errorf("GET %s: the %d bytes served do not hash to the digest", url, res.n))
	}
	return res, nil
}

// pushStream pushes the size-byte stream of seed to s as one monolithic
// upload and returns its digest.
func pushStream(ctx context.Context, c config, s *server, repo string, seed uint64, size int64) (digest.Digest, error) {
	d := testnet.StreamDigest(seed, size)
	ctx, cancel := context.WithTimeout(ctx, c.peerGetTimeout)
	defer cancel()
	if err := s.client.PushBlob(ctx, repo, d, size, testnet.NewStream(seed, size)); err != nil {
		return "", s.failed(fmt.Errorf("push %s (%d bytes): %w", d, size, err))
	}
	return d, nil
}

// waitLinked polls HEAD of blob d on s until it answers 200, at most
// visibilityTimeout, and returns how long that took. A blob's link to its
// repository is Raft metadata that a node other than the one pushed to
// applies a moment after the push returns; until then it answers 404.
// HEAD answers from the metadata and fetches nothing.
func waitLinked(ctx context.Context, s *server, repo string, d digest.Digest) (time.Duration, error) {
	start := time.Now()
	for {
		code, _, err := s.client.HeadBlob(ctx, repo, d)
		if err != nil {
			return 0, s.failed(err)
		}
		if code == http.StatusOK {
			return time.Since(start), nil
		}
		if code != http.StatusNotFound {
			return 0, s.failed(fmt.Errorf("HEAD /v2/%s/blobs/%s: %d", repo, d, code))
		}
		if time.Since(start) > visibilityTimeout {
			return 0, s.failed(fmt.Errorf("HEAD /v2/%s/blobs/%s: still 404 %v after the push returned", repo, d, visibilityTimeout))
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// linkWaits records the waits of waitLinked, for a note.
type linkWaits struct {
	n     int
	worst time.Duration
}

func (w *linkWaits) wait(ctx context.Context, s *server, repo string, d digest.Digest) error {
	took, err := waitLinked(ctx, s, repo, d)
	if err == nil {
		w.n++
		w.worst = max(w.worst, took)
	}
	return err
}

func (w *linkWaits) note(what string) string {
	return fmt.Sprintf("%s: before each timed GET through a node other than the pusher, HEAD was polled every 1 ms until the blob's link had reached that node (untimed; %d waits, longest %.1f ms)", what, w.n, ms(w.worst))
}

// peerCounters is one reading of a node's peer byte counters.
type peerCounters struct{ served, fetched float64 }

func (a peerCounters) minus(b peerCounters) peerCounters {
	return peerCounters{a.served - b.served, a.fetched - b.fetched}
}

// readCounters reads s's peer byte counters from its /metrics.
func readCounters(ctx context.Context, s *server) (peerCounters, error) {
	ctx, cancel := context.WithTimeout(ctx, metricsReadTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url()+"/metrics", nil)
	if err != nil {
		return peerCounters{}, err
	}
	resp, err := s.client.HTTP.Do(req)
	if err != nil {
		return peerCounters{}, s.failed(fmt.Errorf("GET /metrics: %w", err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return peerCounters{}, s.failed(fmt.Errorf("GET /metrics: %s", resp.Status))
	}
	text, err := io.ReadAll(resp.Body)
	if err != nil {
		return peerCounters{}, s.failed(fmt.Errorf("GET /metrics: %w", err))
	}
	served, err := testnet.SumMetric(bytes.NewReader(text), metricPeerServed)
	if err != nil {
		return peerCounters{}, s.failed(err)
	}
	fetched, err := testnet.SumMetric(bytes.NewReader(text), metricPeerFetched)
	if err != nil {
		return peerCounters{}, s.failed(err)
	}
	return peerCounters{served, fetched}, nil
}

// counters reads the peer byte counters of every node, at once.
func counters(ctx context.Context, nodes []*server) ([]peerCounters, error) {
	out := make([]peerCounters, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, s := range nodes {
		wg.Go(func() {
			out[i], errs[i] = readCounters(ctx, s)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func deltas(after, before []peerCounters) []peerCounters {
	out := make([]peerCounters, len(after))
	for i := range after {
		out[i] = after[i].minus(before[i])
	}
	return out
}

const mib = 1 << 20

// runPeers measures blob transfers between nodes and returns the Markdown
// tables. Every node it starts is stopped before it returns.
func runPeers(ctx context.Context, c config, bin, dir string) (string, error) {
	pull, ttfb, err := peerPulls(ctx, c, bin, filepath.Join(dir, "pull"))
	if err != nil {
		return "", fmt.Errorf("peers: %w", err)
	}
	fan, err := fanouts(ctx, c, bin, filepath.Join(dir, "fanout"))
	if err != nil {
		return "", fmt.Errorf("peers: fan-out: %w", err)
	}
	return peersTable(c, pull, ttfb, fan), nil
}

// pullSamples are the outcomes of measurement 1.
type pullSamples struct {
	peer, holder, again []float64 // MB/s
	notes               []string
	version             string
}

// ttfbSamples are the outcomes of measurement 2, in ms.
type ttfbSamples struct {
	peer, holder, again, peerTotal []float64
	notes                          []string
}

// peerPulls runs measurements 1 and 2 on one 3-node cluster with
// --replicas 1.
func peerPulls(ctx context.Context, c config, bin, dir string) (*pullSamples, *ttfbSamples, error) {
	cl, err := startCluster(ctx, bin, dir, peerClusterSize, "--replicas", "1")
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: %w", err)
	}
	defer cl.stop()
	n1, n2 := cl.nodes[0], cl.nodes[1]
	logf("peers: 3 nodes with --replicas 1, leader %s; holder %s (%s), fetcher %s (%s)", cl.leader.name, n1.name, n1.addr, n2.name, n2.addr)
	hc := newPeerHTTP()
	defer hc.CloseIdleConnections()
	if err := warm(ctx, hc, cl.nodes); err != nil {
		return nil, nil, err
	}
	pair := []*server{n1, n2}

	ps := &pullSamples{version: n1.version}
	size := int64(c.peerBlobSize)
	var lw linkWaits
	for rep := range c.runs {
		d, err := pushStream(ctx, c, n1, peersRepo, peerSeed(1, rep, 0), size)
		if err != nil {
			return nil, nil, err
		}
		if err := lw.wait(ctx, n2, peersRepo, d); err != nil {
			return nil, nil, err
		}
		c0, err := counters(ctx, pair)
		if err != nil {
			return nil, nil, err
		}
		peer, err := timedGet(ctx, c, hc, n2, peersRepo, d, size)
		if err != nil {
			return nil, nil, fmt.Errorf("run %d, peer pull: %w", rep+1, err)
		}
		c1, err := counters(ctx, pair)
		if err != nil {
			return nil, nil, err
		}
		holder, err := timedGet(ctx, c, hc, n1, peersRepo, d, size)
		if err != nil {
			return nil, nil, fmt.Errorf("run %d, holder pull: %w", rep+1, err)
		}
		again, err := timedGet(ctx, c, hc, n2, peersRepo, d, size)
		if err != nil {
			return nil, nil, fmt.Errorf("run %d, second pull through %s: %w", rep+1, n2.name, err)
		}
		c2, err := counters(ctx, pair)
		if err != nil {
			return nil, nil, err
		}
		first, second := deltas(c1, c0), deltas(c2, c1)
		ps.peer, ps.holder, ps.again = append(ps.peer, peer.mbps()), append(ps.holder, holder.mbps()), append(ps.again, again.mbps())
		logf("run %d  peer pull %s: through %s %.0f MB/s (ttfb %.1f ms), from %s %.0f MB/s, again through %s %.0f MB/s; %s fetched %.1f MiB then %.1f MiB, %s served %.1f MiB",
			rep+1, c.peerBlobSize, n2.name, peer.mbps(), ms(peer.ttfb), n1.name, holder.mbps(), n2.name, again.mbps(),
			n2.name, first[1].fetched/mib, second[1].fetched/mib, n1.name, first[0].served/mib)
		if first[1].fetched != float64(size) || second[1].fetched != 0 {
			ps.notes = append(ps.notes, fmt.Sprintf("peer pull, run %d: %s's %s grew by %.0f bytes over its first GET (want %d) and %.0f over the second (want 0)",
				rep+1, n2.name, metricPeerFetched, first[1].fetched, size, second[1].fetched))
		}
	}

	ts := &ttfbSamples{}
	tsize := int64(c.peerTTFBSize)
	for rep := range c.peerTTFBRuns {
		d, err := pushStream(ctx, c, n1, peersRepo, peerSeed(2, rep, 0), tsize)
		if err != nil {
			return nil, nil, err
		}
		if err := lw.wait(ctx, n2, peersRepo, d); err != nil {
			return nil, nil, err
		}
		peer, err := timedGet(ctx, c, hc, n2, peersRepo, d, tsize)
		if err != nil {
			return nil, nil, fmt.Errorf("ttfb %d, peer: %w", rep+1, err)
		}
		holder, err := timedGet(ctx, c, hc, n1, peersRepo, d, tsize)
		if err != nil {
			return nil, nil, fmt.Errorf("ttfb %d, holder: %w", rep+1, err)
		}
		again, err := timedGet(ctx, c, hc, n2, peersRepo, d, tsize)
		if err != nil {
			return nil, nil, fmt.Errorf("ttfb %d, again: %w", rep+1, err)
		}
		ts.peer = append(ts.peer, ms(peer.ttfb))
		ts.peerTotal = append(ts.peerTotal, ms(peer.total))
		ts.holder = append(ts.holder, ms(holder.ttfb))
		ts.again = append(ts.again, ms(again.ttfb))
		logf("ttfb %d  %s: through %s (peer) %.2f ms (whole blob %.0f ms), from %s %.2f ms, again through %s %.2f ms",
			rep+1, c.peerTTFBSize, n2.name, ms(peer.ttfb), ms(peer.total), n1.name, ms(holder.ttfb), n2.name, ms(again.ttfb))
	}
	ps.notes = append(ps.notes, lw.note("peer pull and time to first byte"))
	return ps, ts, nil
}

// image is a random image: layers, a config and a manifest.
type image struct {
	repo     string // fanoutRepo unless set
	tag      string
	layers   []ocispec.Descriptor
	seeds    []uint64
	config   []byte
	manifest []byte
	size     int64 // bytes of its blobs: layers and config
}

func newImage(tag string, layers int, layerSize int64, phase, rep int) *image {
	img := &image{tag: tag}
	var diffIDs []digest.Digest
	for i := range layers {
		seed := peerSeed(phase, rep, i)
		d := testnet.StreamDigest(seed, layerSize)
		img.seeds = append(img.seeds, seed)
		img.layers = append(img.layers, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: d, Size: layerSize})
		diffIDs = append(diffIDs, d)
		img.size += layerSize
	}
	img.config, _ = json.Marshal(ocispec.Image{
		Platform: ocispec.Platform{Architecture: "amd64", OS: "linux"},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
	})
	img.size += int64(len(img.config))
	img.manifest, _ = json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    img.configDesc(),
		Layers:    img.layers,
	})
	return img
}

func (img *image) repository() string {
	if img.repo == "" {
		return fanoutRepo
	}
	return img.repo
}

func (img *image) configDesc() ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(img.config), Size: int64(len(img.config))}
}

// blobs lists the config, then the layers: what a client pulls.
func (img *image) blobs() []ocispec.Descriptor {
	return append([]ocispec.Descriptor{img.configDesc()}, img.layers...)
}

// push uploads the layers (-layer-jobs at a time), the config and the
// manifest to s.
func (img *image) push(ctx context.Context, c config, s *server) error {
	ctx, cancel := context.WithTimeout(ctx, c.peerGetTimeout)
	defer cancel()
	err := parallel(ctx, len(img.layers), c.layerJobs, func(ctx context.Context, i int) error {
		l := img.layers[i]
		return s.client.PushBlob(ctx, img.repository(), l.Digest, l.Size, testnet.NewStream(img.seeds[i], l.Size))
	})
	if err != nil {
		return s.failed(fmt.Errorf("push layers: %w", err))
	}
	if _, err := s.client.PushBytes(ctx, img.repository(), img.config); err != nil {
		return s.failed(fmt.Errorf("push config: %w", err))
	}
	if _, err := s.client.PutManifest(ctx, img.repository(), img.tag, ocispec.MediaTypeImageManifest, img.manifest); err != nil {
		return s.failed(fmt.Errorf("PUT manifest: %w", err))
	}
	return nil
}

// pullBlobs GETs every blob of img through s, one at a time, digests
// checked, and returns when the last byte arrived.
func (img *image) pullBlobs(ctx context.Context, c config, hc *http.Client, s *server) (time.Time, error) {
	for _, b := range img.blobs() {
		if _, err := timedGet(ctx, c, hc, s, img.repository(), b.Digest, b.Size); err != nil {
			return time.Time{}, err
		}
	}
	return time.Now(), nil
}

// fanoutSamples are the outcomes of measurement 3.
type fanoutSamples struct {
	imageSize      int64
	total, single  []float64   // s
	pushServed     [][]float64 // [node][run] bytes served during the push
	fanServed      [][]float64 // [node][run] bytes served during the fan-out
	fanFetched     [][]float64 // [node][run] bytes fetched during the fan-out
	pullTime       [][]float64 // [node][run] s from the first GET to the node's last byte
	singleVia      []string    // node of each single pull
	singleFetched  []float64   // bytes that node fetched during it
	keyFan, keyAll []float64   // node 1's egress ÷ image size, per run
	names          []string    // node names
	leader         string      // the leader's name
	notes          []string    // anomalies
}

// fanouts runs measurement 3 on a 5-node cluster with the default
// --replicas.
func fanouts(ctx context.Context, c config, bin, dir string) (*fanoutSamples, error) {
	cl, err := startCluster(ctx, bin, dir, fanoutClusterSize)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	defer cl.stop()
	pusher := cl.nodes[0]
	logf("fan-out: %d nodes (default --replicas), leader %s; pusher %s", len(cl.nodes), cl.leader.name, pusher.name)
	hcs := make([]*http.Client, len(cl.nodes))
	for i := range hcs {
		hcs[i] = newPeerHTTP()
		defer hcs[i].CloseIdleConnections()
		if err := warm(ctx, hcs[i], cl.nodes); err != nil {
			return nil, err
		}
	}
	nn := len(cl.nodes)
	fs := &fanoutSamples{leader: cl.leader.name,
		pushServed: make([][]float64, nn), fanServed: make([][]float64, nn), fanFetched: make([][]float64, nn), pullTime: make([][]float64, nn)}
	for _, s := range cl.nodes {
		fs.names = append(fs.names, s.name)
	}
	lsize := int64(c.fanoutLayerSize)
	var lw linkWaits
	for rep := range c.runs {
		// A single pull through one node, alone, of a fresh image of the
		// same size; through the node that got the fewest bytes from the
		// push (none, if it holds no replica).
		one := newImage(fmt.Sprintf("single-%d", rep+1), c.fanoutLayers, lsize, 3, rep)
		fs.imageSize = one.size
		c0, err := counters(ctx, cl.nodes)
		if err != nil {
			return nil, err
		}
		if err := one.push(ctx, c, pusher); err != nil {
			return nil, fmt.Errorf("run %d: %w", rep+1, err)
		}
		c1, err := counters(ctx, cl.nodes)
		if err != nil {
			return nil, err
		}
		pushed := deltas(c1, c0)
		via := 1
		for i := 2; i < nn; i++ {
			if pushed[i].fetched < pushed[via].fetched {
				via = i
			}
		}
		for _, b := range one.blobs() {
			if err := lw.wait(ctx, cl.nodes[via], fanoutRepo, b.Digest); err != nil {
				return nil, err
			}
		}
		start := time.Now()
		end, err := one.pullBlobs(ctx, c, hcs[via], cl.nodes[via])
		if err != nil {
			return nil, fmt.Errorf("run %d, single pull: %w", rep+1, err)
		}
		c2, err := counters(ctx, cl.nodes)
		if err != nil {
			return nil, err
		}
		single := end.Sub(start)
		fs.single = append(fs.single, single.Seconds())
		fs.singleVia = append(fs.singleVia, cl.nodes[via].name)
		fs.singleFetched = append(fs.singleFetched, c2[via].fetched-c1[via].fetched)
		logf("run %d  single pull of %d × %s through %s: %.2f s; it fetched %.1f MiB from peers (%.1f MiB during the push)",
			rep+1, c.fanoutLayers, c.fanoutLayerSize, cl.nodes[via].name, single.Seconds(), fs.singleFetched[rep]/mib, pushed[via].fetched/mib)

		// The fan-out.
		img := newImage(fmt.Sprintf("fanout-%d", rep+1), c.fanoutLayers, lsize, 4, rep)
		c0, err = counters(ctx, cl.nodes)
		if err != nil {
			return nil, err
		}
		if err := img.push(ctx, c, pusher); err != nil {
			return nil, fmt.Errorf("run %d: %w", rep+1, err)
		}
		for i := 1; i < nn; i++ {
			for _, b := range img.blobs() {
				if err := lw.wait(ctx, cl.nodes[i], fanoutRepo, b.Digest); err != nil {
					return nil, err
				}
			}
		}
		c1, err = counters(ctx, cl.nodes)
		if err != nil {
			return nil, err
		}
		ends := make([]time.Time, nn)
		errs := make([]error, nn)
		var wg sync.WaitGroup
		start = time.Now()
		for i := 1; i < nn; i++ {
			wg.Go(func() { ends[i], errs[i] = img.pullBlobs(ctx, c, hcs[i], cl.nodes[i]) })
		}
		wg.Wait()
		for i := 1; i < nn; i++ {
			if errs[i] != nil {
				return nil, fmt.Errorf("run %d, fan-out pull through %s: %w", rep+1, cl.nodes[i].name, errs[i])
			}
		}
		last := start
		for i := 1; i < nn; i++ {
			if ends[i].After(last) {
				last = ends[i]
			}
		}
		c2, err = counters(ctx, cl.nodes)
		if err != nil {
			return nil, err
		}
		push, fan := deltas(c1, c0), deltas(c2, c1)
		total := last.Sub(start)
		fs.total = append(fs.total, total.Seconds())
		size := float64(img.size)
		for i := range nn {
			fs.pushServed[i] = append(fs.pushServed[i], push[i].served)
			fs.fanServed[i] = append(fs.fanServed[i], fan[i].served)
			fs.fanFetched[i] = append(fs.fanFetched[i], fan[i].fetched)
			if i > 0 {
				fs.pullTime[i] = append(fs.pullTime[i], ends[i].Sub(start).Seconds())
			}
		}
		fs.keyFan = append(fs.keyFan, fan[0].served/size)
		fs.keyAll = append(fs.keyAll, (fan[0].served+push[0].served)/size)
		var per []string
		for i := range nn {
			per = append(per, fmt.Sprintf("%s served %.1f+%.1f fetched %.1f+%.1f", cl.nodes[i].name, push[i].served/mib, fan[i].served/mib, push[i].fetched/mib, fan[i].fetched/mib))
		}
		logf("run %d  fan-out of %d × %s to %d nodes: %.2f s; pusher egress %.2f× the image (%.2f× with the replica copy); MiB push+fan-out: %s",
			rep+1, c.fanoutLayers, c.fanoutLayerSize, nn-1, total.Seconds(), fs.keyFan[rep], fs.keyAll[rep], strings.Join(per, "; "))
		var servedAll, fetchedAll float64
		for i := range nn {
			servedAll += fan[i].served
			fetchedAll += fan[i].fetched
		}
		if servedAll != fetchedAll {
			fs.notes = append(fs.notes, fmt.Sprintf("fan-out, run %d: the nodes served %.0f bytes to peers but fetched %.0f", rep+1, servedAll, fetchedAll))
		}
	}
	fs.notes = append(fs.notes, lw.note("fan-out and single pull"))
	return fs, nil
}

// peersTable renders the medians of the peer section as Markdown.
func peersTable(c config, ps *pullSamples, ts *ttfbSamples, fs *fanoutSamples) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| metric (meshreg peer transfers, median of %d unless stated) | value |\n| --- | ---: |\n", c.runs)
	row := func(label, format string, v float64) { fmt.Fprintf(&b, "| %s | "+format+" |\n", label, v) }
	ratio := func(a, d float64) float64 {
		if d == 0 {
			return 0
		}
		return a / d
	}
	peer, holder, again := median(ps.peer), median(ps.holder), median(ps.again)
	row(fmt.Sprintf("pull one %s blob through node 2, fetched from node 1 over libp2p, MB/s (higher is better)", c.peerBlobSize), "%.0f", peer)
	row("pull the same blob from node 1, the holder (from disk), MB/s", "%.0f", holder)
	row("pull the same blob through node 2 again (now local), MB/s", "%.0f", again)
	row("peer pull / holder pull", "%.2f×", ratio(peer, holder))
	ttfbLabel := fmt.Sprintf("time to first byte of a fresh %s blob, p50 of %d", c.peerTTFBSize, c.peerTTFBRuns)
	row(ttfbLabel+", through node 2 from a peer, ms (lower is better)", "%.2f", percentile(ts.peer, 50))
	row(ttfbLabel+", from node 1 (local), ms", "%.2f", percentile(ts.holder, 50))
	row(ttfbLabel+", through node 2 again (local), ms", "%.2f", percentile(ts.again, 50))
	row(fmt.Sprintf("whole %s blob through node 2 from a peer, p50 of %d, ms", c.peerTTFBSize, c.peerTTFBRuns), "%.0f", percentile(ts.peerTotal, 50))
	img := fmt.Sprintf("%d × %s image (%.1f MiB of blobs)", c.fanoutLayers, c.fanoutLayerSize, float64(fs.imageSize)/mib)
	total, single := median(fs.total), median(fs.single)
	row(fmt.Sprintf("fan-out: nodes 2–5 pull a %s at once, first GET → last byte, s (lower is better)", img), "%.2f", total)
	row(fmt.Sprintf("single pull of a fresh %s through one node alone, s", img), "%.2f", single)
	row("fan-out to 4 nodes / single pull", "%.2f×", ratio(total, single))
	row("**node 1 (the pusher): peer egress during the fan-out ÷ image size**", "**%.2f×**", median(fs.keyFan))
	row("**node 1 (the pusher): peer egress during push (replica copy) + fan-out ÷ image size**", "**%.2f×**", median(fs.keyAll))

	size := float64(fs.imageSize)
	fmt.Fprintf(&b, "\n| node (5-node cluster, median of %d) | served during the push, MiB | × image | served during the fan-out, MiB | × image | fetched during the fan-out, MiB | fan-out pull done after, s |\n", c.runs)
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for i, name := range fs.names {
		role := ""
		if i == 0 {
			role = " (pusher)"
		}
		if name == fs.leader {
			role += " (Raft leader)"
		}
		done := "–"
		if i > 0 {
			done = fmt.Sprintf("%.2f", median(fs.pullTime[i]))
		}
		ps, fsv := median(fs.pushServed[i]), median(fs.fanServed[i])
		fmt.Fprintf(&b, "| %s%s | %.1f | %.2f× | %.1f | %.2f× | %.1f | %s |\n", name, role, ps/mib, ps/size, fsv/mib, fsv/size, median(fs.fanFetched[i])/mib, done)
	}

	fmt.Fprintf(&b, "\n%s; %d CPUs; %s; meshreg processes on loopback, blobs between nodes over libp2p TCP; %s.\n",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), runtime.Version(), ps.version)
	fmt.Fprintf(&b, "Peer pull and time to first byte: %d nodes with `--replicas 1`, a fresh blob (new digest) pushed monolithically to node 1 before each measurement; times from sending the GET (on a kept-alive connection) to the first/last body byte, the client hashing the body as it reads and checking the digest. "+
		"Fan-out: %d nodes with the default `--replicas`; the image (%d random layers + config + manifest, fresh each run) is pushed to node 1, whose manifest PUT returns once each blob is on a second node; then nodes 2–5 each GET the config and the layers in order, one at a time, all four nodes at once. "+
		"Egress is the delta of `%s` (bytes sent to other nodes); image size counts layers and config. The single pull goes through the node that got the fewest bytes during its push (%s).\n",
		peerClusterSize, fanoutClusterSize, c.fanoutLayers, metricPeerServed, strings.Join(fs.singleVia, ", "))
	var keys []string
	for i := range fs.keyFan {
		keys = append(keys, fmt.Sprintf("%.2f× / %.2f×", fs.keyFan[i], fs.keyAll[i]))
	}
	fmt.Fprintf(&b, "Node 1's egress ÷ image size per run (fan-out only / with the replica copy): %s.\n", strings.Join(keys, ", "))
	b.WriteString(commandLine())
	notes := append(append(slices.Clone(ps.notes), ts.notes...), fs.notes...)
	for i, f := range fs.singleFetched {
		if f < size*0.99 {
			notes = append(notes, fmt.Sprintf("single pull, run %d: %s fetched only %.1f MiB of the %.1f MiB image from peers (it held a replica of part of it)", i+1, fs.singleVia[i], f/mib, size/mib))
		}
	}
	if len(notes) > 0 {
		b.WriteString("\nNotes:\n")
		for _, n := range notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	return b.String()
}
