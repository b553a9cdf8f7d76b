package main

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/urfave/cli/v2"

	"github.com/meshreg/meshreg/api/tlsconf"
)

// Limits of export and import.
const (
	// maxLayoutIndex bounds a layout's index.json and oci-layout.
	maxLayoutIndex = 4 << 20
	// maxLayoutEntries bounds the entries of a layout tar import reads.
	maxLayoutEntries = 1_000_000
	// maxLayoutManifests bounds the manifests import pushes from one layout.
	maxLayoutManifests = 10_000
	// uploadChunk is the default --chunk-size: the size above which import
	// uploads a blob in chunks (PATCH) rather than in one PUT, and the size
	// of each chunk; minChunk and maxChunk bound the flag.
	uploadChunk = 64 << 20
	minChunk    = 1 << 20
	maxChunk    = 1 << 30
)

// layoutClient is the HTTP side of export and import: preload's reader
// (manifest walk, verified blob streams) plus the upload calls.
func layoutClient(c *cli.Context, base string) (*preloader, error) {
	tlsCfg, err := tlsconf.Client(nodeTLSFiles(c))
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse(base)
	return &preloader{
		client: &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, ResponseHeaderTimeout: 60 * time.Second,
			TLSClientConfig: tlsCfg}},
		user: c.String("username"), password: c.String("password"),
		all: true, concurrency: 1, stall: time.Minute,
		ownHosts: map[string]bool{u.Host: true},
		log:      io.Discard,
	}, nil
}

func exportCommand() *cli.Command {
	return &cli.Command{
		Name:      "export",
		Usage:     "write an image (every platform) from a registry to an OCI image layout tar",
		ArgsUsage: "REPO[:TAG|@DIGEST]",
		Description: "Reads through the /v2/ API of --node (any registry). The layout holds oci-layout, index.json (the\n" +
			"image, annotated org.opencontainers.image.ref.name=TAG) and blobs/<alg>/<hex>; every byte is\n" +
			"verified against its digest. It is written to a temporary file renamed to --out at the end.",
		Flags: append([]cli.Flag{
			nodeFlag("the registry whose"),
			&cli.StringFlag{Name: "out", Usage: "layout tar `FILE` to write (required)"},
		}, nodeClientFlags()...),
		Action: exportAction,
	}
}

func exportAction(c *cli.Context) (err error) {
	args, err := trailingFlags(c)
	if err != nil {
		return err
	}
	if len(args) != 1 {
		return errors.New("export takes one argument: REPO[:TAG|@DIGEST]")
	}
	if err := requireFlags(c, "out"); err != nil {
		return err
	}
	base, err := nodeURL(c.String("node"))
	if err != nil {
		return err
	}
	p, err := layoutClient(c, base)
	if err != nil {
		return err
	}
	u, _ := url.Parse(base)
	ref, err := parseImageRef(u.Host + "/" + args[0])
	if err != nil {
		return err
	}
	out := c.String("out")
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".partial-*")
	if err != nil {
		return fmt.Errorf("export: creating a temporary file beside %s: %w", out, err)
	}
	defer func() {
		if tmp != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	prog := newProgress(c.App.ErrWriter, "export")
	n, err := exportLayout(c.Context, p, base, ref, tmp, prog)
	if err != nil {
		prog.finish(": failed")
		return fmt.Errorf("export of %s failed, nothing was written to %s: %w", args[0], out, err)
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	tmp = nil
	prog.finish("")
	fmt.Fprintf(c.App.Writer, "%s: %d manifests, %d blobs -> %s\n", args[0], n.manifests.Load(), n.blobs.Load(), out)
	return nil
}

// exportLayout writes the image ref as an OCI layout tar to w.
func exportLayout(ctx context.Context, p *preloader, base string, ref imageRef, w io.Writer, prog *progress) (*preloadStats, error) {
	tw := tar.NewWriter(w)
	now := time.Now().UTC().Truncate(time.Second)
	written := map[digest.Digest]bool{}
	entry := func(name string, size int64) error {
		return tw.WriteHeader(&tar.Header{Name: name, Size: size, Mode: 0o644, Typeflag: tar.TypeReg, ModTime: now, Format: tar.FormatPAX})
	}
	small := func(name string, b []byte) error {
		if err := entry(name, int64(len(b))); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	blobName := func(d digest.Digest) string { return "blobs/" + d.Algorithm().String() + "/" + d.Encoded() }
	layoutJSON, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err := small(ocispec.ImageLayoutFile, layoutJSON); err != nil {
		return nil, err
	}
	var top ocispec.Descriptor
	p.onManifest = func(desc ocispec.Descriptor, body []byte, depth int) error {
		if depth == 0 {
			top = desc
		}
		if written[desc.Digest] {
			return nil
		}
		written[desc.Digest] = true
		return small(blobName(desc.Digest), body)
	}
	st := &preloadStats{}
	ns := p.nsFor(ref)
	blobs := map[digest.Digest]ocispec.Descriptor{}
	var order []digest.Digest
	if err := p.walk(ctx, base, ns, ref, ref.Reference(), ref.Digest, 0, st, blobs, &order); err != nil {
		return st, err
	}
	for _, d := range order {
		desc := blobs[d]
		if written[d] {
			continue
		}
		written[d] = true
		if err := desc.Digest.Validate(); err != nil || desc.Size < 0 {
			return st, fmt.Errorf("a manifest lists a bad blob %q (size %d)", desc.Digest, desc.Size)
		}
		if err := entry(blobName(d), desc.Size); err != nil {
			return st, err
		}
		if err := p.blob(ctx, base, ns, ref.Repository, desc, countingWriter{w: tw, p: prog}); err != nil {
			return st, err
		}
		st.blobs.Add(1)
		prog.items.Add(1)
	}
	if ref.Tag != "" {
		top.Annotations = map[string]string{ocispec.AnnotationRefName: ref.Tag}
	}
	index, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{top}})
	if err := small(ocispec.ImageIndexFile, index); err != nil {
		return st, err
	}
	return st, tw.Close()
}

// countingWriter adds what it writes to a progress.
type countingWriter struct {
	w io.Writer
	p *progress
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.p.bytes.Add(int64(n))
	return n, err
}

func importCommand() *cli.Command {
	return &cli.Command{
		Name:      "import",
		Usage:     "push the images of an OCI image layout tar to a registry",
		ArgsUsage: "LAYOUT.tar",
		Description: "Pushes every manifest of the layout's index.json, with what it references, through the /v2/ API\n" +
			"of --node (any registry), blobs the registry lacks in one PUT or, above --chunk-size, in chunks; each\n" +
			"image is tagged with its org.opencontainers.image.ref.name annotation (a tag, or REPO:TAG).",
		Flags: append([]cli.Flag{
			nodeFlag("the registry whose"),
			&cli.StringFlag{Name: "repo", Usage: "`REPOSITORY` to push to (default: the repository in each ref.name annotation)"},
			&cli.StringFlag{Name: "chunk-size", Value: formatSize(uploadChunk), Usage: "blobs above this `SIZE` are uploaded in chunks of it (1MiB to 1GiB)"},
		}, nodeClientFlags()...),
		Action: importAction,
	}
}

// layoutEntry is where an entry's bytes are in the layout tar.
type layoutEntry struct{ off, size int64 }

// offsetReader counts the bytes read through it: after tar.Reader.Next,
// the count is where the entry's content begins (the reader reads
// exactly the header blocks).
type offsetReader struct {
	r io.Reader
	n int64
}

func (o *offsetReader) Read(p []byte) (int, error) {
	n, err := o.r.Read(p)
	o.n += int64(n)
	return n, err
}

// readLayoutTar indexes the regular files of a layout tar by name.
func readLayoutTar(f io.Reader) (map[string]layoutEntry, error) {
	or := &offsetReader{r: f}
	tr := tar.NewReader(or)
	entries := map[string]layoutEntry{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return entries, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading the layout tar: %w", err)
		}
		if len(entries) >= maxLayoutEntries {
			return nil, fmt.Errorf("the layout tar has more than %d entries", maxLayoutEntries)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue // directories; links are not followed
		}
		entries[strings.TrimPrefix(filepath.ToSlash(filepath.Clean(hdr.Name)), "./")] = layoutEntry{off: or.n, size: hdr.Size}
	}
}

func importAction(c *cli.Context) error {
	args, err := trailingFlags(c)
	if err != nil {
		return err
	}
	if len(args) != 1 {
		return errors.New("import takes one argument: the OCI layout tar")
	}
	base, err := nodeURL(c.String("node"))
	if err != nil {
		return err
	}
	p, err := layoutClient(c, base)
	if err != nil {
		return err
	}
	chunk, err := parseSize("chunk-size", c.String("chunk-size"))
	if err != nil {
		return err
	}
	if chunk < minChunk || chunk > maxChunk {
		return fmt.Errorf("--chunk-size %s: want 1MiB to 1GiB", c.String("chunk-size"))
	}
	f, err := os.Open(args[0])
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	defer f.Close()
	entries, err := readLayoutTar(f)
	if err != nil {
		return fmt.Errorf("import %s: %w", args[0], err)
	}
	im := &importer{p: p, base: base, f: f, entries: entries, prog: newProgress(c.App.ErrWriter, "import"), done: map[string]bool{}, chunk: chunk}
	pushed, err := im.run(c.Context, c.String("repo"))
	if err != nil {
		im.prog.finish(": failed")
		return fmt.Errorf("import %s: %w", args[0], err)
	}
	im.prog.finish("")
	for _, s := range pushed {
		fmt.Fprintln(c.App.Writer, s)
	}
	return nil
}

type importer struct {
	p         *preloader
	base      string
	f         io.ReaderAt
	entries   map[string]layoutEntry
	prog      *progress
	done      map[string]bool // repo@digest pushed
	manifests int
	chunk     int64 // --chunk-size
}

// file reads a small layout file whole (at most limit bytes).
func (im *importer) file(name string, limit int64) ([]byte, error) {
	e, ok := im.entries[name]
	if !ok {
		return nil, fmt.Errorf("the layout has no %s: is it an OCI image layout?", name)
	}
	if e.size > limit {
		return nil, fmt.Errorf("%s is %d bytes, above the limit of %d", name, e.size, limit)
	}
	b := make([]byte, e.size)
	if _, err := im.f.ReadAt(b, e.off); err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	return b, nil
}

func (im *importer) blob(d ocispec.Descriptor) (*io.SectionReader, error) {
	if err := d.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("bad digest %q in the layout: %w", d.Digest, err)
	}
	name := "blobs/" + d.Digest.Algorithm().String() + "/" + d.Digest.Encoded()
	e, ok := im.entries[name]
	if !ok {
		return nil, fmt.Errorf("the layout lacks %s", name)
	}
	if e.size != d.Size {
		return nil, fmt.Errorf("%s is %d bytes, its descriptor says %d", name, e.size, d.Size)
	}
	return io.NewSectionReader(im.f, e.off, e.size), nil
}

func (im *importer) run(ctx context.Context, repoFlag string) ([]string, error) {
	lb, err := im.file(ocispec.ImageLayoutFile, maxLayoutIndex)
	if err != nil {
		return nil, err
	}
	var lay ocispec.ImageLayout
	if err := json.Unmarshal(lb, &lay); err != nil || lay.Version != ocispec.ImageLayoutVersion {
		return nil, fmt.Errorf("oci-layout %q: not an OCI image layout %s", truncateStr(string(lb)), ocispec.ImageLayoutVersion)
	}
	ib, err := im.file(ocispec.ImageIndexFile, maxLayoutIndex)
	if err != nil {
		return nil, err
	}
	var index ocispec.Index
	if err := json.Unmarshal(ib, &index); err != nil {
		return nil, fmt.Errorf("index.json: %w", err)
	}
	if len(index.Manifests) == 0 {
		return nil, errors.New("index.json lists no image")
	}
	var pushed []string
	for _, desc := range index.Manifests {
		name := desc.Annotations[ocispec.AnnotationRefName]
		repo, tag := repoFlag, name
		if i := strings.LastIndexByte(name, ':'); i >= 0 && !strings.Contains(name[i+1:], "/") {
			// REPO:TAG; a bare tag has no colon
			if repo == "" {
				repo = name[:i]
			}
			tag = name[i+1:]
		}
		if repo == "" {
			return pushed, fmt.Errorf("image %s has no repository in its ref.name %q: pass --repo", desc.Digest, name)
		}
		if err := im.manifest(ctx, repo, desc, 0); err != nil {
			return pushed, err
		}
		ref := repo + "@" + desc.Digest.String()
		if tag != "" {
			if err := im.putManifest(ctx, repo, tag, desc); err != nil {
				return pushed, err
			}
			ref = repo + ":" + tag + "@" + desc.Digest.String()
		}
		pushed = append(pushed, ref)
	}
	return pushed, nil
}

// manifest pushes what desc references, then desc itself (by digest).
func (im *importer) manifest(ctx context.Context, repo string, desc ocispec.Descriptor, depth int) error {
	if depth > maxPreloadDepth {
		return fmt.Errorf("indexes nested more than %d deep", maxPreloadDepth)
	}
	if im.done[repo+"@"+desc.Digest.String()] {
		return nil
	}
	if im.manifests++; im.manifests > maxLayoutManifests {
		return fmt.Errorf("more than %d manifests in the layout", maxLayoutManifests)
	}
	if desc.Size > maxPreloadManifest {
		return fmt.Errorf("manifest %s is %d bytes, above the limit of %d", desc.Digest, desc.Size, maxPreloadManifest)
	}
	sr, err := im.blob(desc)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(sr)
	if err != nil {
		return err
	}
	if desc.Digest.Algorithm().FromBytes(body) != desc.Digest {
		return fmt.Errorf("manifest %s in the layout does not match its digest", desc.Digest)
	}
	var doc manifestDoc
	if err := json.Unmarshal(body, &doc); err != nil {
		return fmt.Errorf("manifest %s is not JSON: %w", desc.Digest, err)
	}
	for _, ch := range doc.Manifests {
		if err := im.manifest(ctx, repo, ch, depth+1); err != nil {
			return err
		}
	}
	var blobs []ocispec.Descriptor
	if doc.Config != nil {
		blobs = append(blobs, *doc.Config)
	}
	for _, b := range append(blobs, doc.Layers...) {
		if err := im.pushBlob(ctx, repo, b); err != nil {
			return err
		}
	}
	if err := im.putManifest(ctx, repo, desc.Digest.String(), desc); err != nil {
		return err
	}
	im.done[repo+"@"+desc.Digest.String()] = true
	return nil
}

func (im *importer) putManifest(ctx context.Context, repo, reference string, desc ocispec.Descriptor) error {
	sr, err := im.blob(desc)
	if err != nil {
		return err
	}
	mt := desc.MediaType
	if mt == "" {
		var doc manifestDoc
		b, _ := io.ReadAll(io.NewSectionReader(sr, 0, sr.Size()))
		_ = json.Unmarshal(b, &doc)
		mt = doc.MediaType
	}
	_, err = im.send(ctx, http.MethodPut, im.base+"/v2/"+repo+"/manifests/"+reference, sr, sr.Size(), http.Header{"Content-Type": {mt}}, http.StatusCreated)
	return err
}

// pushBlob uploads a blob the registry lacks: in one PUT, or in PATCH
// chunks of --chunk-size for a big one. The bytes are verified as they go.
func (im *importer) pushBlob(ctx context.Context, repo string, d ocispec.Descriptor) error {
	if im.done[repo+"@"+d.Digest.String()] {
		return nil
	}
	sr, err := im.blob(d)
	if err != nil {
		return err
	}
	if resp, err := im.p.do(ctx, http.MethodHead, im.base+"/v2/"+repo+"/blobs/"+d.Digest.String(), nil); err == nil {
		resp.Body.Close()
		im.done[repo+"@"+d.Digest.String()] = true
		im.prog.items.Add(1)
		return nil
	}
	ver := d.Digest.Verifier()
	body := io.TeeReader(sr, ver)
	resp, err := im.send(ctx, http.MethodPost, im.base+"/v2/"+repo+"/blobs/uploads/", nil, 0, nil, http.StatusAccepted)
	if err != nil {
		return err
	}
	loc, err := im.location(resp)
	if err != nil {
		return err
	}
	if d.Size > im.chunk {
		for off := int64(0); off < d.Size; off += im.chunk {
			n := min(im.chunk, d.Size-off)
			h := http.Header{"Content-Type": {"application/octet-stream"}, "Content-Range": {fmt.Sprintf("%d-%d", off, off+n-1)}}
			resp, err := im.send(ctx, http.MethodPatch, loc, io.LimitReader(body, n), n, h, http.StatusAccepted)
			if err != nil {
				return err
			}
			if loc, err = im.location(resp); err != nil {
				return err
			}
		}
		if !ver.Verified() {
			return fmt.Errorf("blob %s in the layout does not match its digest", d.Digest)
		}
		_, err = im.send(ctx, http.MethodPut, withQuery(loc, "digest", d.Digest.String()), nil, 0, nil, http.StatusCreated)
	} else {
		_, err = im.send(ctx, http.MethodPut, withQuery(loc, "digest", d.Digest.String()), &verifyAtEOF{r: body, ok: ver.Verified, d: d.Digest}, d.Size,
			http.Header{"Content-Type": {"application/octet-stream"}}, http.StatusCreated)
	}
	if err != nil {
		return err
	}
	im.done[repo+"@"+d.Digest.String()] = true
	im.prog.items.Add(1)
	return nil
}

// verifyAtEOF fails the read at its end when the bytes did not match: the
// request is cut short and the registry never commits them.
type verifyAtEOF struct {
	r  io.Reader
	ok func() bool
	d  digest.Digest
}

func (v *verifyAtEOF) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	if errors.Is(err, io.EOF) && !v.ok() {
		return n, fmt.Errorf("blob %s in the layout does not match its digest", v.d)
	}
	return n, err
}

func (im *importer) location(resp *http.Response) (string, error) {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return "", errors.New("the registry gave no upload Location")
	}
	u, err := url.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("upload Location %q: %w", truncateStr(loc), err)
	}
	b, _ := url.Parse(im.base)
	return b.ResolveReference(u).String(), nil
}

func withQuery(u, k, v string) string {
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	return u + sep + k + "=" + url.QueryEscape(v)
}

// send makes one request with a body of size bytes (nil: none) and wants
// status; the response's body is closed.
func (im *importer) send(ctx context.Context, method, u string, body io.Reader, size int64, h http.Header, want int) (*http.Response, error) {
	if body != nil {
		body = countingReader{r: body, p: im.prog}
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	req.ContentLength = size
	if body == nil {
		req.Body, req.ContentLength = http.NoBody, 0
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if im.p.user != "" {
		req.SetBasicAuth(im.p.user, im.p.password)
	}
	resp, err := im.p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("%s %s: %s", method, u, apiErrorText(resp.StatusCode, msg))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp, nil
}

func truncateStr(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
