package main

// The mirror benchmark (-mirror): a 5-node meshreg cluster in front of an
// upstream registry (CNCF Distribution v3 on loopback, plain HTTP), every
// node a process started with `--upstream NAME=URL`, NAME being the
// upstream's host:port as clients name it (`?ns=NAME`). Between the nodes
// and the upstream sits a reverse proxy in this process that counts the
// bytes the upstream sends: its egress.
//
// -runs times, with two fresh images of -mirror-layers × -mirror-layer-size
// random layers (a config and a manifest each) pushed straight to the
// upstream (three, C too):
//
//  1. direct: one client pulls image A from the upstream through the
//     proxy (manifest, then config and layers one at a time, digests
//     checked): the time a host without meshreg takes;
//  2. one node: image C through node 1 alone, from the upstream through
//     meshreg (what a mirror costs without sharing);
//  3. cluster: the five nodes each pull image B at once through meshreg
//     (`?ns=NAME`): manifest, config, layers one at a time. The time from
//     the first GET to the last byte of the slowest node, and the
//     upstream's egress (bytes of blob GETs) ÷ image size: 1.00 means each
//     blob left the upstream once for the whole cluster; a pull-through
//     cache on every host would be 5.
//
// Then, -peer-ttfb-runs times: a fresh one-layer image of -peer-ttfb-size
// is pulled through node 1 (from the upstream), then its layer through
// node 2: the time to first byte of a blob cached in the cluster, served
// to node 2's client from a peer (the upstream's egress during that GET is
// checked to be 0).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/testnet"
)

const (
	mirrorRepo        = "bench/mirror"
	mirrorClusterSize = 5
)

// supportsUpstream reports whether the meshreg binary has --upstream (the
// mirror): the section is skipped with a note otherwise, unless asked for.
func supportsUpstream(bin string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, bin, "serve", "--help").CombinedOutput()
	return strings.Contains(string(out), "--upstream ")
}

// egressProxy is a reverse proxy to the upstream that counts the bytes of
// the upstream's responses: all of them, and those of blob GETs.
type egressProxy struct {
	srv   *http.Server
	ln    net.Listener
	done  chan struct{}
	all   atomic.Int64
	blobs atomic.Int64
}

func startEgressProxy(target string) (*egressProxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &egressProxy{ln: ln, done: make(chan struct{})}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(resp *http.Response) error {
		resp.Body = &countedBody{ReadCloser: resp.Body, all: &p.all, blobs: &p.blobs,
			blob: resp.Request.Method == http.MethodGet && strings.Contains(resp.Request.URL.Path, "/blobs/")}
		return nil
	}
	p.srv = &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(p.done)
		_ = p.srv.Serve(ln)
	}()
	return p, nil
}

func (p *egressProxy) addr() string { return p.ln.Addr().String() }

func (p *egressProxy) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = p.srv.Shutdown(ctx)
	<-p.done
}

type countedBody struct {
	io.ReadCloser
	all, blobs *atomic.Int64
	blob       bool
}

func (b *countedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.all.Add(int64(n))
	if b.blob {
		b.blobs.Add(int64(n))
	}
	return n, err
}

// getManifest GETs img's manifest by tag from s (with query, e.g.
// "?ns=NAME") and checks it is the one pushed.
func getManifest(ctx context.Context, c config, hc *http.Client, s *server, img *image, query string) error {
	ctx, cancel := context.WithTimeout(ctx, c.peerGetTimeout)
	defer cancel()
	u := s.url() + "/v2/" + img.repository() + "/manifests/" + img.tag + query
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
	resp, err := hc.Do(req)
	if err != nil {
		return s.failed(fmt.Errorf("GET %s: %w", u, err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return s.failed(fmt.Errorf("GET %s: %w", u, err))
	}
	if resp.StatusCode != http.StatusOK {
		return s.failed(fmt.Errorf("GET %s: %s: %.300s", u, resp.Status, body))
	}
	if string(body) != string(img.manifest) {
		return s.failed(fmt.Errorf("GET %s: not the manifest pushed upstream", u))
	}
	return nil
}

// pullVia pulls img through s as a client does: the manifest, then the
// config and the layers one at a time, digests checked. It returns when
// the last byte arrived, and the first blob's time to first byte.
func pullVia(ctx context.Context, c config, hc *http.Client, s *server, img *image, query string) (time.Time, error) {
	if err := getManifest(ctx, c, hc, s, img, query); err != nil {
		return time.Time{}, err
	}
	for _, b := range img.blobs() {
		if _, err := timedGetQuery(ctx, c, hc, s, img.repository(), b.Digest, b.Size, query); err != nil {
			return time.Time{}, err
		}
	}
	return time.Now(), nil
}

// mirrorSamples are the outcomes of the mirror section.
type mirrorSamples struct {
	imageSize       int64
	direct, cluster []float64 // s
	single          []float64 // s, one node alone
	egress          []float64 // upstream blob egress during the cluster pull ÷ image size
	egressAll       []float64 // all upstream bytes during it ÷ image size
	ttfb            []float64 // ms
	ttfbEgress      []float64 // upstream blob bytes during those GETs
	version         string
	notes           []string
}

// runMirror runs the mirror section and returns its table. Everything it
// starts is stopped before it returns.
func runMirror(ctx context.Context, c config, bin, distBin, dir string) (string, error) {
	up, err := startDistribution(ctx, distBin, filepath.Join(dir, "upstream"))
	if err != nil {
		return "", fmt.Errorf("mirror: upstream: %w", err)
	}
	defer up.stop()
	proxy, err := startEgressProxy(up.url())
	if err != nil {
		return "", fmt.Errorf("mirror: proxy: %w", err)
	}
	defer proxy.stop()
	name := proxy.addr() // the upstream's host as clients name it
	query := "?ns=" + url.QueryEscape(name)
	direct := &server{name: "upstream (direct)", addr: proxy.addr(), dir: up.dir, client: testnet.NewClient("http://" + proxy.addr())}

	cl, err := startCluster(ctx, bin, filepath.Join(dir, "cluster"), mirrorClusterSize, "--upstream", name+"=http://"+proxy.addr())
	if err != nil {
		return "", fmt.Errorf("mirror: cluster: %w", err)
	}
	defer cl.stop()
	logf("mirror: %d nodes with --upstream %s=http://%s (a counting proxy to %s at %s)", len(cl.nodes), name, proxy.addr(), up.name, up.addr)
	hcs := make([]*http.Client, len(cl.nodes))
	for i := range hcs {
		hcs[i] = newPeerHTTP()
		defer hcs[i].CloseIdleConnections()
		if err := warm(ctx, hcs[i], cl.nodes); err != nil {
			return "", err
		}
	}
	hd := newPeerHTTP()
	defer hd.CloseIdleConnections()

	ms := &mirrorSamples{version: cl.nodes[0].version}
	lsize := int64(c.mirrorLayerSize)
	for rep := range c.runs {
		a := newImage(fmt.Sprintf("direct-%d", rep+1), c.mirrorLayers, lsize, 5, rep)
		b := newImage(fmt.Sprintf("cluster-%d", rep+1), c.mirrorLayers, lsize, 6, rep)
		one := newImage(fmt.Sprintf("single-%d", rep+1), c.mirrorLayers, lsize, 8, rep)
		a.repo, b.repo, one.repo = mirrorRepo, mirrorRepo, mirrorRepo
		ms.imageSize = b.size
		for _, img := range []*image{a, b, one} {
			if err := img.push(ctx, c, up); err != nil {
				return "", fmt.Errorf("mirror: run %d: push upstream: %w", rep+1, err)
			}
		}

		start := time.Now()
		end, err := pullVia(ctx, c, hd, direct, a, "")
		if err != nil {
			return "", fmt.Errorf("mirror: run %d, direct pull: %w", rep+1, err)
		}
		ms.direct = append(ms.direct, end.Sub(start).Seconds())

		start = time.Now()
		end, err = pullVia(ctx, c, hcs[0], cl.nodes[0], one, query)
		if err != nil {
			return "", fmt.Errorf("mirror: run %d, pull through %s alone: %w", rep+1, cl.nodes[0].name, err)
		}
		ms.single = append(ms.single, end.Sub(start).Seconds())

		all0, blobs0 := proxy.all.Load(), proxy.blobs.Load()
		ends := make([]time.Time, len(cl.nodes))
		errs := make([]error, len(cl.nodes))
		var wg sync.WaitGroup
		start = time.Now()
		for i, s := range cl.nodes {
			wg.Go(func() { ends[i], errs[i] = pullVia(ctx, c, hcs[i], s, b, query) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return "", fmt.Errorf("mirror: run %d, pull through %d nodes: %w", rep+1, len(cl.nodes), err)
		}
		last := start
		for _, e := range ends {
			if e.After(last) {
				last = e
			}
		}
		size := float64(b.size)
		egress, egressAll := float64(proxy.blobs.Load()-blobs0)/size, float64(proxy.all.Load()-all0)/size
		ms.cluster = append(ms.cluster, last.Sub(start).Seconds())
		ms.egress, ms.egressAll = append(ms.egress, egress), append(ms.egressAll, egressAll)
		logf("mirror run %d  %d × %s: direct %.2f s; through one node alone %.2f s; %d nodes at once %.2f s; upstream egress %.2f× the image (blobs), %.2f× (all responses)",
			rep+1, c.mirrorLayers, c.mirrorLayerSize, ms.direct[rep], ms.single[rep], len(cl.nodes), ms.cluster[rep], egress, egressAll)
	}

	n1, n2 := cl.nodes[0], cl.nodes[1]
	tsize := int64(c.peerTTFBSize)
	for rep := range c.peerTTFBRuns {
		img := newImage(fmt.Sprintf("ttfb-%d", rep+1), 1, tsize, 7, rep)
		img.repo = mirrorRepo
		if err := img.push(ctx, c, up); err != nil {
			return "", fmt.Errorf("mirror: ttfb %d: push upstream: %w", rep+1, err)
		}
		if _, err := pullVia(ctx, c, hcs[0], n1, img, query); err != nil {
			return "", fmt.Errorf("mirror: ttfb %d, pull through %s: %w", rep+1, n1.name, err)
		}
		if err := getManifest(ctx, c, hcs[1], n2, img, query); err != nil {
			return "", err
		}
		blobs0 := proxy.blobs.Load()
		l := img.layers[0]
		res, err := timedGetQuery(ctx, c, hcs[1], n2, img.repository(), l.Digest, l.Size, query)
		if err != nil {
			return "", fmt.Errorf("mirror: ttfb %d, layer through %s: %w", rep+1, n2.name, err)
		}
		ms.ttfb = append(ms.ttfb, float64(res.ttfb)/float64(time.Millisecond))
		ms.ttfbEgress = append(ms.ttfbEgress, float64(proxy.blobs.Load()-blobs0))
		logf("mirror ttfb %d  %s layer cached by %s, through %s: %.2f ms; upstream sent %d blob bytes meanwhile",
			rep+1, c.peerTTFBSize, n1.name, n2.name, ms.ttfb[rep], proxy.blobs.Load()-blobs0)
	}
	for i, e := range ms.ttfbEgress {
		if e != 0 {
			ms.notes = append(ms.notes, fmt.Sprintf("time to first byte %d: the upstream sent %.0f blob bytes while node 2 read a blob cached in the cluster (want 0)", i+1, e))
		}
	}
	return mirrorTable(c, ms), nil
}

// mirrorTable renders the medians of the mirror section as Markdown.
func mirrorTable(c config, ms *mirrorSamples) string {
	var b strings.Builder
	img := fmt.Sprintf("%d × %s image (%.1f MiB of blobs)", c.mirrorLayers, c.mirrorLayerSize, float64(ms.imageSize)/mib)
	fmt.Fprintf(&b, "| metric (meshreg as a pull-through mirror, %d nodes, median of %d unless stated) | value |\n| --- | ---: |\n", mirrorClusterSize, c.runs)
	row := func(label, format string, v float64) { fmt.Fprintf(&b, "| %s | "+format+" |\n", label, v) }
	direct, cluster := median(ms.direct), median(ms.cluster)
	row(fmt.Sprintf("**upstream egress (blob bytes) ÷ image size, %d nodes pulling a fresh %s at once** (goal ≤ 1.05; a cache per host: %d)", mirrorClusterSize, img, mirrorClusterSize), "**%.2f×**", median(ms.egress))
	row("upstream egress, all responses (manifests, HEADs, blobs) ÷ image size", "%.2f×", median(ms.egressAll))
	row(fmt.Sprintf("%d nodes pull it at once through meshreg, first GET → last byte of the slowest, s", mirrorClusterSize), "%.2f", cluster)
	row("one direct pull of a same-size fresh image from the upstream, s", "%.2f", direct)
	if direct > 0 {
		row("**cluster pull / direct pull** (goal ≤ 1.5×)", "**%.2f×**", cluster/direct)
	}
	single := median(ms.single)
	row("one pull of a same-size fresh image through one node alone (from the upstream through meshreg), s", "%.2f", single)
	if single > 0 {
		row("cluster pull / pull through one node alone", "%.2f×", cluster/single)
	}
	row(fmt.Sprintf("time to first byte of a %s blob cached in the cluster (pulled through node 1), GET through node 2 from a peer, p50 of %d, ms", c.peerTTFBSize, c.peerTTFBRuns), "%.2f", percentile(ms.ttfb, 50))
	fmt.Fprintf(&b, "\n%s; %d CPUs; %s; %s; meshreg processes and CNCF Distribution v3 (the upstream, filesystem storage) on loopback; "+
		"upstream egress counted by a reverse proxy in the benchmark process; every pull: the manifest, then the config and the layers one at a time, digests checked.\n",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), runtime.Version(), ms.version)
	var per []string
	for i := range ms.egress {
		per = append(per, fmt.Sprintf("%.2f× in %.2f s (direct %.2f s, one node alone %.2f s)", ms.egress[i], ms.cluster[i], ms.direct[i], ms.single[i]))
	}
	fmt.Fprintf(&b, "Per run: %s.\n", strings.Join(per, ", "))
	b.WriteString(commandLine())
	if len(ms.notes) > 0 {
		b.WriteString("\nNotes:\n")
		for _, n := range ms.notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	return b.String()
}
