package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"

	"github.com/meshreg/meshreg/api/tlsconf"
	"github.com/meshreg/meshreg/internal/bytesize"
)

// Limits of `meshreg preload`.
const (
	// maxPreloadManifest is the largest manifest or index read (the node
	// refuses to store larger ones).
	maxPreloadManifest = 4 << 20
	// maxPreloadChildren bounds the manifests of one index that are walked.
	maxPreloadChildren = 1024
	// maxPreloadDepth bounds indexes nested in indexes.
	maxPreloadDepth = 4
	// maxPreloadConcurrency bounds --concurrency.
	maxPreloadConcurrency = 32
)

// The media types asked for in a manifest GET: both OCI and both Docker
// schema 2 types.
var manifestAccept = strings.Join([]string{
	ocispec.MediaTypeImageIndex,
	ocispec.MediaTypeImageManifest,
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.docker.distribution.manifest.v2+json",
}, ", ")

func preloadCommand() *cli.Command {
	return &cli.Command{
		Name:      "preload",
		Usage:     "pull images into the cluster ahead of need, through a node (one per zone with --zones)",
		ArgsUsage: "IMAGE...",
		Description: "Reads each image's manifests and blobs through the node, which keeps them; the bytes are\n" +
			"verified and discarded here. IMAGE is [REGISTRY/]REPOSITORY[:TAG][@DIGEST]: the registry\n" +
			"part is sent as ?ns=REGISTRY (the mirror's upstream), except when it is the HOST:PORT of\n" +
			"a --node: `preload 127.0.0.1:5000/team/app:v1` reads team/app pushed to the cluster.",
		Flags: append([]cli.Flag{
			&cli.StringSliceFlag{
				Name:    "node",
				Value:   cli.NewStringSlice("127.0.0.1:5000"),
				Usage:   "`ADDR` of a node's API (HOST:PORT or an http(s) URL); repeat to pull through several (with --zones: one per zone)",
				EnvVars: []string{"MESHREG_NODE"},
			},
			&cli.StringSliceFlag{Name: "platform", Usage: "`OS/ARCH[/VARIANT]` of an index to pull (repeatable), e.g. linux/amd64"},
			&cli.BoolFlag{Name: "all-platforms", Usage: "pull every manifest of an index (attestations too)"},
			&cli.BoolFlag{Name: "zones", Usage: "a copy in every zone: pull through one node of each zone among --node (each node's status says its zone)"},
			&cli.IntFlag{Name: "concurrency", Value: 4, Usage: "blobs read at once per node (1-32)"},
			&cli.DurationFlag{Name: "stall-timeout", Value: time.Minute, Usage: "give up on a blob when no byte of it arrives for this long"},
		}, nodeClientFlags()...),
		Action: preloadAction,
	}
}

func preloadAction(c *cli.Context) error {
	if !c.Args().Present() {
		return errors.New("usage: meshreg preload [--node ADDR]... (--platform OS/ARCH... | --all-platforms) IMAGE...")
	}
	var refs []imageRef
	for _, a := range c.Args().Slice() {
		r, err := parseImageRef(a)
		if err != nil {
			return err
		}
		refs = append(refs, r)
	}
	var plats []platform
	for _, s := range c.StringSlice("platform") {
		p, err := parsePlatform(s)
		if err != nil {
			return err
		}
		plats = append(plats, p)
	}
	all := c.Bool("all-platforms")
	switch {
	case all && len(plats) > 0:
		return errors.New("--all-platforms and --platform: give one of them")
	case !all && len(plats) == 0:
		return errors.New("say which platforms of a multi-platform image to pull: --platform OS/ARCH (repeatable, e.g. linux/amd64) or --all-platforms")
	}
	conc := c.Int("concurrency")
	if conc < 1 || conc > maxPreloadConcurrency {
		return fmt.Errorf("--concurrency %d: want 1 to %d", conc, maxPreloadConcurrency)
	}
	if st := c.Duration("stall-timeout"); st < time.Second {
		return fmt.Errorf("--stall-timeout %s: want at least 1s", st)
	}
	var nodes []string
	for _, n := range c.StringSlice("node") {
		base, err := nodeURL(n)
		if err != nil {
			return err
		}
		if !slices.Contains(nodes, base) {
			nodes = append(nodes, base)
		}
	}
	log := c.App.ErrWriter
	if log == nil {
		log = os.Stderr
	}
	tlsCfg, err := tlsconf.Client(nodeTLSFiles(c))
	if err != nil {
		return err
	}
	p := &preloader{
		client: &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, ResponseHeaderTimeout: 30 * time.Second,
			MaxIdleConnsPerHost: maxPreloadConcurrency, TLSClientConfig: tlsCfg}},
		user:        c.String("username"),
		password:    c.String("password"),
		platforms:   plats,
		all:         all,
		concurrency: conc,
		stall:       c.Duration("stall-timeout"),
		ownHosts:    map[string]bool{},
		log:         log,
	}
	for _, base := range nodes {
		p.ownHosts[urlHost(base)] = true
	}
	defer p.client.CloseIdleConnections()
	if c.Bool("zones") {
		var err error
		if nodes, err = p.zoneNodes(c.Context, nodes); err != nil {
			return err
		}
	}
	start := time.Now()
	var total preloadStats
	var failed []string
	ok := 0
	for _, ref := range refs {
		good := true
		for _, base := range nodes {
			st, err := p.image(c.Context, base, ref)
			total.add(st)
			if err != nil {
				good = false
				fmt.Fprintf(log, "FAILED %s via %s: %v\n", ref, base, err)
				failed = append(failed, fmt.Sprintf("%s (via %s)", ref, base))
				if c.Context.Err() != nil {
					return fmt.Errorf("preload interrupted: %w", c.Context.Err())
				}
			}
		}
		if good {
			ok++
		}
	}
	fmt.Fprintf(log, "preloaded %d of %d images through %d node(s): %d blobs, %s in %s\n",
		ok, len(refs), len(nodes), total.blobs.Load(), bytesize.Human(total.bytes.Load()), time.Since(start).Round(time.Millisecond))
	if len(failed) > 0 {
		return fmt.Errorf("preload failed for %s", strings.Join(failed, ", "))
	}
	return nil
}

// preloader reads images through nodes.
type preloader struct {
	client         *http.Client
	user, password string
	platforms      []platform
	all            bool
	concurrency    int
	stall          time.Duration
	ownHosts       map[string]bool // HOST:PORT of every --node
	log            io.Writer
	logMu          sync.Mutex
	// onManifest, if set, receives each manifest walk reads (verified
	// against its digest), the image's own first (depth 0). export
	// keeps them.
	onManifest func(desc ocispec.Descriptor, body []byte, depth int) error
}

type preloadStats struct {
	blobs     atomic.Int64
	bytes     atomic.Int64
	manifests atomic.Int64
}

func (s *preloadStats) add(o *preloadStats) {
	if o == nil {
		return
	}
	s.blobs.Add(o.blobs.Load())
	s.bytes.Add(o.bytes.Load())
	s.manifests.Add(o.manifests.Load())
}

func (p *preloader) logf(format string, args ...any) {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	fmt.Fprintf(p.log, format+"\n", args...)
}

// nsFor is the ?ns= value for ref: the registry the image names, or none
// when that is one of the nodes given (content pushed to the cluster, read
// through any of its nodes).
func (p *preloader) nsFor(ref imageRef) string {
	if p.ownHosts[ref.Registry] {
		return ""
	}
	return ref.Registry
}

// v2URL is base/v2/<repo>/<kind>/<reference>[?ns=NS].
func v2URL(base, ns, repo, kind, reference string) string {
	u := base + "/v2/" + repo + "/" + kind + "/" + reference
	if ns != "" {
		u += "?ns=" + url.QueryEscape(ns)
	}
	return u
}

// image reads ref's manifests and blobs through the node at base.
func (p *preloader) image(ctx context.Context, base string, ref imageRef) (*preloadStats, error) {
	start := time.Now()
	st := &preloadStats{}
	ns := p.nsFor(ref)
	blobs := map[digest.Digest]ocispec.Descriptor{}
	var order []digest.Digest
	if err := p.walk(ctx, base, ns, ref, ref.Reference(), ref.Digest, 0, st, blobs, &order); err != nil {
		return st, err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.concurrency)
	for _, d := range order {
		desc := blobs[d]
		g.Go(func() error {
			t0 := time.Now()
			if err := p.blob(gctx, base, ns, ref.Repository, desc, nil); err != nil {
				return err
			}
			st.blobs.Add(1)
			st.bytes.Add(desc.Size)
			p.logf("%s: blob %s %s in %s via %s", ref, desc.Digest, bytesize.Human(desc.Size), time.Since(t0).Round(time.Millisecond), base)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return st, err
	}
	p.logf("%s via %s: %d manifests, %d blobs, %s in %s", ref, base, st.manifests.Load(), st.blobs.Load(), bytesize.Human(st.bytes.Load()), time.Since(start).Round(time.Millisecond))
	return st, nil
}

// manifestDoc is the part of a manifest or an index preload reads.
type manifestDoc struct {
	MediaType string               `json:"mediaType"`
	Manifests []ocispec.Descriptor `json:"manifests"`
	Config    *ocispec.Descriptor  `json:"config"`
	Layers    []ocispec.Descriptor `json:"layers"`
}

// walk reads one manifest; an index's children that the platforms ask for
// are walked in turn, and a manifest's config and layers are added to
// blobs (in order, once each).
func (p *preloader) walk(ctx context.Context, base, ns string, ref imageRef, reference string, want digest.Digest, depth int, st *preloadStats, blobs map[digest.Digest]ocispec.Descriptor, order *[]digest.Digest) error {
	if depth > maxPreloadDepth {
		return fmt.Errorf("indexes nested more than %d deep", maxPreloadDepth)
	}
	body, ctype, err := p.getManifest(ctx, base, ns, ref.Repository, reference, want)
	if err != nil {
		return err
	}
	st.manifests.Add(1)
	var doc manifestDoc
	if err := json.Unmarshal(body, &doc); err != nil {
		return fmt.Errorf("manifest %s of %s is not JSON: %w", reference, ref.Repository, err)
	}
	mt := doc.MediaType
	if mt == "" {
		mt = ctype
	}
	if p.onManifest != nil {
		d := want
		if d == "" {
			d = digest.FromBytes(body)
		}
		if err := p.onManifest(ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(body))}, body, depth); err != nil {
			return err
		}
	}
	isIndex := mt == ocispec.MediaTypeImageIndex || mt == "application/vnd.docker.distribution.manifest.list.v2+json" || (doc.Config == nil && len(doc.Manifests) > 0)
	if !isIndex {
		if doc.Config != nil {
			addBlob(*doc.Config, blobs, order)
		}
		for _, l := range doc.Layers {
			if len(l.URLs) > 0 || strings.Contains(l.MediaType, "nondistributable") || strings.Contains(l.MediaType, "foreign") {
				p.logf("%s: skipped the non-distributable layer %s (registries do not serve it)", ref, l.Digest)
				continue
			}
			addBlob(l, blobs, order)
		}
		return nil
	}
	children := selectManifests(doc.Manifests, p.platforms, p.all)
	if len(children) == 0 {
		return fmt.Errorf("the index %s has no manifest for %s (it has %s)", reference, platformList(p.platforms), strings.Join(indexPlatforms(doc.Manifests), ", "))
	}
	if len(children) > maxPreloadChildren {
		return fmt.Errorf("the index %s lists %d manifests, more than the %d preload walks", reference, len(children), maxPreloadChildren)
	}
	for _, ch := range children {
		if err := ch.Digest.Validate(); err != nil {
			return fmt.Errorf("the index %s lists a bad digest %q: %w", reference, ch.Digest, err)
		}
		if err := p.walk(ctx, base, ns, ref, ch.Digest.String(), ch.Digest, depth+1, st, blobs, order); err != nil {
			return err
		}
	}
	return nil
}

func addBlob(d ocispec.Descriptor, blobs map[digest.Digest]ocispec.Descriptor, order *[]digest.Digest) {
	if _, ok := blobs[d.Digest]; ok {
		return
	}
	blobs[d.Digest] = d
	*order = append(*order, d.Digest)
}

// selectManifests is the children of an index that platforms ask for
// (every one with all). Children without a platform (attestations and
// other artifacts) are taken only with all.
func selectManifests(children []ocispec.Descriptor, platforms []platform, all bool) []ocispec.Descriptor {
	if all {
		return children
	}
	var out []ocispec.Descriptor
	for _, ch := range children {
		if ch.Platform == nil {
			continue
		}
		for _, p := range platforms {
			if p.matches(ch.Platform.OS, ch.Platform.Architecture, ch.Platform.Variant) {
				out = append(out, ch)
				break
			}
		}
	}
	return out
}

func platformList(ps []platform) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return strings.Join(s, ", ")
}

func indexPlatforms(children []ocispec.Descriptor) []string {
	var out []string
	for _, ch := range children {
		if ch.Platform == nil {
			continue
		}
		p := platform{OS: ch.Platform.OS, Arch: ch.Platform.Architecture, Variant: ch.Platform.Variant}.String()
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return []string{"no platforms"}
	}
	return out
}

func (p *preloader) do(ctx context.Context, method, u string, header http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if p.user != "" {
		req.SetBasicAuth(p.user, p.password)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w (is a node running there? pass --node)", method, u, err)
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, fmt.Errorf("%s %s: %s", method, u, apiErrorText(resp.StatusCode, msg))
	}
	return resp, nil
}

// getManifest reads a manifest (at most maxPreloadManifest bytes) and
// checks it against want, or against the node's Docker-Content-Digest.
func (p *preloader) getManifest(ctx context.Context, base, ns, repo, reference string, want digest.Digest) ([]byte, string, error) {
	u := v2URL(base, ns, repo, "manifests", reference)
	resp, err := p.do(ctx, http.MethodGet, u, http.Header{"Accept": {manifestAccept}})
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPreloadManifest+1))
	if err != nil {
		return nil, "", fmt.Errorf("GET %s: %w", u, err)
	}
	if len(body) > maxPreloadManifest {
		return nil, "", fmt.Errorf("GET %s: the manifest is larger than %d bytes", u, maxPreloadManifest)
	}
	if want == "" {
		if h := resp.Header.Get("Docker-Content-Digest"); h != "" {
			if d, err := digest.Parse(h); err == nil {
				want = d
			}
		}
	}
	if want != "" && want.Algorithm().Available() && want.Algorithm().FromBytes(body) != want {
		return nil, "", fmt.Errorf("GET %s: the manifest does not match its digest %s", u, want)
	}
	return body, resp.Header.Get("Content-Type"), nil
}

// blob reads a blob through the node, verifying its size and digest as
// the bytes stream, and writes them to w (nil: discards them). A blob
// whose bytes stop arriving for p.stall is given up. w sees the bytes
// before the digest is checked: on an error, what it got is garbage.
func (p *preloader) blob(ctx context.Context, base, ns, repo string, d ocispec.Descriptor, w io.Writer) error {
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("a manifest of %s lists a bad digest %q: %w", repo, d.Digest, err)
	}
	if d.Size < 0 {
		return fmt.Errorf("a manifest of %s gives blob %s a negative size", repo, d.Digest)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	u := v2URL(base, ns, repo, "blobs", d.Digest.String())
	resp, err := p.do(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	stalled := fmt.Errorf("no byte of it arrived for %s (--stall-timeout)", p.stall)
	timer := time.AfterFunc(p.stall, func() { cancel(stalled) })
	defer timer.Stop()
	v := d.Digest.Verifier()
	buf := make([]byte, 256<<10)
	var n int64
	for {
		m, rerr := resp.Body.Read(buf)
		if m > 0 {
			timer.Reset(p.stall)
			n += int64(m)
			if n > d.Size {
				return fmt.Errorf("GET %s: more than the %d bytes the manifest says", u, d.Size)
			}
			v.Write(buf[:m])
			if w != nil {
				if _, err := w.Write(buf[:m]); err != nil {
					return err
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if cause := context.Cause(ctx); cause != nil {
				rerr = cause
			}
			return fmt.Errorf("GET %s: after %d bytes: %w", u, n, rerr)
		}
	}
	if n != d.Size {
		return fmt.Errorf("GET %s: %d bytes, the manifest says %d", u, n, d.Size)
	}
	if !v.Verified() {
		return fmt.Errorf("GET %s: the bytes do not match the digest", u)
	}
	return nil
}

// zoneNodes picks one node per zone among nodes, from each node's status
// (its own zone). The status does not carry the API address of the other
// members, only their zones: a zone whose nodes are not among --node is
// named, and gets no copy from this run.
func (p *preloader) zoneNodes(ctx context.Context, nodes []string) ([]string, error) {
	type status struct {
		Zone  string `json:"zone"`
		Peers []struct {
			Zone string `json:"zone"`
		} `json:"peers"`
	}
	chosen := map[string]string{}
	known := map[string]bool{}
	var out []string
	for _, base := range nodes {
		resp, err := p.do(ctx, http.MethodGet, base+"/_meshreg/v1/status", nil)
		if err != nil {
			return nil, fmt.Errorf("--zones: reading the node's zone: %w", err)
		}
		var st status
		err = json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&st)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("--zones: reading %s/_meshreg/v1/status: %w", base, err)
		}
		for _, peer := range st.Peers {
			known[peer.Zone] = true
		}
		known[st.Zone] = true
		if _, ok := chosen[st.Zone]; ok {
			continue
		}
		chosen[st.Zone] = base
		out = append(out, base)
		p.logf("zone %s: through %s", zoneName(st.Zone), base)
	}
	var missing []string
	for z := range known {
		if _, ok := chosen[z]; !ok {
			missing = append(missing, zoneName(z))
		}
	}
	slices.Sort(missing)
	for _, z := range missing {
		p.logf("zone %s: no --node in it was given, and the status does not carry members' API addresses: it gets no copy from this run (add --node ADDR of a node in zone %s)", z, z)
	}
	return out, nil
}

func zoneName(z string) string {
	if z == "" {
		return "(none)"
	}
	return z
}
