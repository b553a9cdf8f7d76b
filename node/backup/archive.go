// Package backup is the format of a meshreg backup archive: one tar stream
// that `meshreg backup` writes and `meshreg restore` reads.
//
// Layout, in this order and nothing else:
//
//	meshreg-backup.json        Manifest: format, source node, Raft index and term, counts
//	metadata/fsm.snapshot      the FSM snapshot stream at Manifest.Index (consensus)
//	blobs/<alg>/<hex>          each blob (blobs/sha256/…), when the backup holds blobs (any order)
//	meshreg-backup.sha256      Trailer: sha256 over every entry before it
//
// The trailer is last, so an archive cut short anywhere (a failed backup,
// a truncated copy) has none and is refused; a flipped byte anywhere fails
// the trailer's sum, and the metadata and each blob are also checked
// against their own digests while read. Readers bound every size before
// they trust it and refuse any entry name, type or order not drawn above.
package backup

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// FormatVersion is the archive format this package writes and reads.
const FormatVersion = 1

// Entry names.
const (
	ManifestName = "meshreg-backup.json"
	MetadataName = "metadata/fsm.snapshot"
	BlobPrefix   = "blobs/"
	TrailerName  = "meshreg-backup.sha256"
)

// Bounds a reader enforces before it trusts a size.
const (
	// MaxManifestSize and MaxTrailerSize bound the small JSON entries.
	MaxManifestSize = 1 << 20
	MaxTrailerSize  = 4 << 10
	// MaxMetadataSize bounds the metadata snapshot (the FSM state).
	MaxMetadataSize = 64 << 30
	// MaxBlobSize bounds one blob.
	MaxBlobSize = 1 << 40
	// MaxBlobs bounds how many blobs an archive may hold.
	MaxBlobs = 10_000_000
)

// ErrCorrupt marks an archive that is truncated, altered or not a meshreg
// backup; the message says what is wrong.
var ErrCorrupt = errors.New("backup archive is corrupt or incomplete")

// Manifest is the archive's first entry.
type Manifest struct {
	Format int `json:"format"`
	// NodeID is the peer id of the node that wrote the backup; Version
	// its build version.
	NodeID  string    `json:"node_id"`
	Version string    `json:"version"`
	Created time.Time `json:"created"`
	// Index and Term are the Raft index and term of the metadata snapshot.
	Index uint64 `json:"raft_index"`
	Term  uint64 `json:"raft_term"`
	// MetadataSize and MetadataSHA256 describe the metadata entry.
	MetadataSize   int64  `json:"metadata_size"`
	MetadataSHA256 string `json:"metadata_sha256"`
	// Counts of what the metadata holds, and of the blobs in the archive
	// (Blobs and BlobBytes are 0 for a metadata-only backup).
	Repositories int   `json:"repositories"`
	Manifests    int   `json:"manifests"`
	Tags         int   `json:"tags"`
	WithBlobs    bool  `json:"with_blobs"`
	Blobs        int   `json:"blobs"`
	BlobBytes    int64 `json:"blob_bytes"`
}

// Trailer is the archive's last entry.
type Trailer struct {
	// SHA256 is the hex sum of, for every entry before the trailer in
	// order, its name, a NUL, its size in decimal, a newline, its content.
	SHA256  string `json:"sha256"`
	Entries int    `json:"entries"`
}

// sum is the running trailer sum.
type sum struct {
	h hash.Hash
	n int
}

func newSum() *sum { return &sum{h: sha256.New()} }

func (s *sum) begin(name string, size int64) {
	s.n++
	io.WriteString(s.h, name+"\x00"+strconv.FormatInt(size, 10)+"\n")
}

func (s *sum) hex() string { return hex.EncodeToString(s.h.Sum(nil)) }

// Writer writes an archive: WriteManifest, WriteMetadata, then any number
// of WriteBlob, then Close. It is not safe for concurrent use.
type Writer struct {
	tw    *tar.Writer
	sum   *sum
	step  int // 0 manifest, 1 metadata, 2 blobs, 3 closed
	blobs int
	mod   time.Time
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{tw: tar.NewWriter(w), sum: newSum(), mod: time.Now().UTC().Truncate(time.Second)}
}

func (w *Writer) entry(name string, size int64, r io.Reader) (int64, error) {
	hdr := &tar.Header{Name: name, Size: size, Mode: 0o644, Typeflag: tar.TypeReg, ModTime: w.mod, Format: tar.FormatPAX}
	if err := w.tw.WriteHeader(hdr); err != nil {
		return 0, fmt.Errorf("backup: writing entry %s: %w", name, err)
	}
	w.sum.begin(name, size)
	n, err := io.Copy(io.MultiWriter(w.tw, w.sum.h), io.LimitReader(r, size))
	if err == nil && n != size {
		err = fmt.Errorf("%d bytes where %d were announced", n, size)
	}
	if err != nil {
		return n, fmt.Errorf("backup: writing entry %s: %w", name, err)
	}
	return n, nil
}

// WriteManifest writes the first entry.
func (w *Writer) WriteManifest(m Manifest) error {
	if w.step != 0 {
		return errors.New("backup: the manifest comes first")
	}
	m.Format = FormatVersion
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("backup: encoding the manifest: %w", err)
	}
	w.step = 1
	_, err = w.entry(ManifestName, int64(len(b)), strings.NewReader(string(b)))
	return err
}

// WriteMetadata writes the metadata snapshot: size bytes from r.
func (w *Writer) WriteMetadata(size int64, r io.Reader) error {
	if w.step != 1 {
		return errors.New("backup: the metadata comes right after the manifest")
	}
	w.step = 2
	_, err := w.entry(MetadataName, size, r)
	return err
}

// WriteBlob writes blob d of size bytes from r, verifying r against d: a
// blob that does not match is an error, never an entry.
func (w *Writer) WriteBlob(d digest.Digest, size int64, r io.Reader) error {
	if w.step != 2 {
		return errors.New("backup: blobs come after the metadata")
	}
	if err := checkBlobDigest(d); err != nil {
		return err
	}
	v := d.Verifier()
	if _, err := w.entry(BlobPrefix+d.Algorithm().String()+"/"+d.Encoded(), size, io.TeeReader(r, v)); err != nil {
		return err
	}
	if !v.Verified() {
		return fmt.Errorf("backup: blob %s: the bytes read do not match its digest", d)
	}
	w.blobs++
	return nil
}

// Close writes the trailer and the tar end. An archive whose Close was not
// reached (or failed) has no trailer and no reader accepts it.
func (w *Writer) Close() error {
	if w.step != 2 {
		return errors.New("backup: closing an archive without its manifest and metadata")
	}
	w.step = 3
	b, _ := json.Marshal(Trailer{SHA256: w.sum.hex(), Entries: w.sum.n})
	hdr := &tar.Header{Name: TrailerName, Size: int64(len(b)), Mode: 0o644, Typeflag: tar.TypeReg, ModTime: w.mod, Format: tar.FormatPAX}
	if err := w.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("backup: writing the trailer: %w", err)
	}
	if _, err := w.tw.Write(b); err != nil {
		return fmt.Errorf("backup: writing the trailer: %w", err)
	}
	if err := w.tw.Close(); err != nil {
		return fmt.Errorf("backup: finishing the archive: %w", err)
	}
	return nil
}

// checkBlobDigest accepts the digests the registry stores.
func checkBlobDigest(d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("backup: blob %q: %w", d, err)
	}
	return nil
}

// blobDigest reads a blob entry's name: blobs/<alg>/<encoded>, nothing
// else (no dots, no more slashes).
func blobDigest(name string) (digest.Digest, bool) {
	rest, ok := strings.CutPrefix(name, BlobPrefix)
	alg, enc, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 {
		return "", false
	}
	d := digest.NewDigestFromEncoded(digest.Algorithm(alg), enc)
	return d, d.Validate() == nil
}

// Visitor receives an archive's content as Read finds it. The readers it
// is given are valid only until the call returns; a visitor need not read
// them to the end (Read drains and checks what is left).
type Visitor struct {
	// Manifest is called first; an error stops the read.
	Manifest func(m Manifest) error
	// Metadata receives the metadata snapshot stream.
	Metadata func(m Manifest, r io.Reader) error
	// Blob receives each blob, verified as it is read: the reader fails
	// with ErrCorrupt at its end if the bytes do not match d.
	Blob func(d digest.Digest, size int64, r io.Reader) error
}

// Read reads a whole archive from r, calling v, and returns its manifest
// once the trailer is verified. Any error means the archive must not be
// trusted: the caller drops whatever it built from it.
func Read(r io.Reader, v Visitor) (Manifest, error) {
	var m Manifest
	tr := tar.NewReader(r)
	sm := newSum()
	next := func() (*tar.Header, error) {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: it ends before its trailer (%s): the backup did not finish or the file was cut short", ErrCorrupt, TrailerName)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: reading entry %d: %v", ErrCorrupt, sm.n+1, err)
		}
		if hdr.Typeflag != tar.TypeReg {
			return nil, fmt.Errorf("%w: entry %q is not a regular file (type %q)", ErrCorrupt, truncate(hdr.Name), hdr.Typeflag)
		}
		if hdr.Size < 0 {
			return nil, fmt.Errorf("%w: entry %q has a negative size", ErrCorrupt, truncate(hdr.Name))
		}
		return hdr, nil
	}
	// body hashes an entry's content into the trailer sum as it is read.
	body := func(hdr *tar.Header) io.Reader {
		sm.begin(hdr.Name, hdr.Size)
		return io.TeeReader(tr, sm.h)
	}
	drain := func(r io.Reader, name string) error {
		if _, err := io.Copy(io.Discard, r); err != nil {
			return fmt.Errorf("%w: reading entry %s: %v", ErrCorrupt, name, err)
		}
		return nil
	}

	// The manifest.
	hdr, err := next()
	if err != nil {
		return m, err
	}
	if hdr.Name != ManifestName {
		return m, fmt.Errorf("%w: the first entry is %q, not %s: not a meshreg backup", ErrCorrupt, truncate(hdr.Name), ManifestName)
	}
	if hdr.Size > MaxManifestSize {
		return m, fmt.Errorf("%w: %s is %d bytes, above the limit of %d", ErrCorrupt, ManifestName, hdr.Size, MaxManifestSize)
	}
	mb, err := io.ReadAll(body(hdr))
	if err != nil {
		return m, fmt.Errorf("%w: reading %s: %v", ErrCorrupt, ManifestName, err)
	}
	if err := json.Unmarshal(mb, &m); err != nil {
		return m, fmt.Errorf("%w: decoding %s: %v", ErrCorrupt, ManifestName, err)
	}
	switch {
	case m.Format != FormatVersion:
		return m, fmt.Errorf("%w: archive format %d, this meshreg reads format %d: restore it with the meshreg version that wrote it (%s)",
			ErrCorrupt, m.Format, FormatVersion, truncate(m.Version))
	case m.MetadataSize <= 0 || m.MetadataSize > MaxMetadataSize:
		return m, fmt.Errorf("%w: metadata size %d is out of range (1 to %d)", ErrCorrupt, m.MetadataSize, int64(MaxMetadataSize))
	case m.Blobs < 0 || m.Blobs > MaxBlobs || m.BlobBytes < 0:
		return m, fmt.Errorf("%w: blob counts %d / %d bytes are out of range", ErrCorrupt, m.Blobs, m.BlobBytes)
	case m.Index == 0:
		return m, fmt.Errorf("%w: the manifest gives no Raft index", ErrCorrupt)
	}
	if v.Manifest != nil {
		if err := v.Manifest(m); err != nil {
			return m, err
		}
	}

	// The metadata.
	if hdr, err = next(); err != nil {
		return m, err
	}
	if hdr.Name != MetadataName {
		return m, fmt.Errorf("%w: entry %q where %s was expected", ErrCorrupt, truncate(hdr.Name), MetadataName)
	}
	if hdr.Size != m.MetadataSize {
		return m, fmt.Errorf("%w: %s is %d bytes, the manifest says %d", ErrCorrupt, MetadataName, hdr.Size, m.MetadataSize)
	}
	mh := sha256.New()
	mr := &checkedReader{r: io.TeeReader(body(hdr), mh), check: func() error {
		if got := hex.EncodeToString(mh.Sum(nil)); got != m.MetadataSHA256 {
			return fmt.Errorf("%w: the metadata's sha256 is %s, the manifest says %s", ErrCorrupt, got, truncate(m.MetadataSHA256))
		}
		return nil
	}}
	if v.Metadata != nil {
		if err := v.Metadata(m, mr); err != nil {
			return m, err
		}
	}
	if err := drain(mr, MetadataName); err != nil {
		return m, err
	}
	if err := mr.finish(); err != nil {
		return m, err
	}

	// The blobs, then the trailer.
	blobs, bytes := 0, int64(0)
	seen := map[digest.Digest]bool{}
	for {
		if hdr, err = next(); err != nil {
			return m, err
		}
		if hdr.Name == TrailerName {
			break
		}
		d, ok := blobDigest(hdr.Name)
		if !ok {
			return m, fmt.Errorf("%w: unexpected entry %q (only %s<algorithm>/<hex> and %s may follow the metadata)", ErrCorrupt, truncate(hdr.Name), BlobPrefix, TrailerName)
		}
		blobs++
		bytes += hdr.Size
		switch {
		case !m.WithBlobs:
			return m, fmt.Errorf("%w: blob %s in a backup whose manifest says it holds none", ErrCorrupt, d)
		case seen[d]:
			return m, fmt.Errorf("%w: blob %s appears twice", ErrCorrupt, d)
		case blobs > m.Blobs || bytes > m.BlobBytes || hdr.Size > MaxBlobSize:
			return m, fmt.Errorf("%w: more blobs or bytes than the manifest announces (%d blobs, %d bytes)", ErrCorrupt, m.Blobs, m.BlobBytes)
		}
		seen[d] = true
		ver := d.Verifier()
		br := &checkedReader{r: io.TeeReader(body(hdr), ver), check: func() error {
			if !ver.Verified() {
				return fmt.Errorf("%w: blob %s does not match its digest", ErrCorrupt, d)
			}
			return nil
		}}
		if v.Blob != nil {
			if err := v.Blob(d, hdr.Size, br); err != nil {
				return m, err
			}
		}
		if err := drain(br, hdr.Name); err != nil {
			return m, err
		}
		if err := br.finish(); err != nil {
			return m, err
		}
	}
	if blobs != m.Blobs || bytes != m.BlobBytes {
		return m, fmt.Errorf("%w: %d blobs (%d bytes) where the manifest announces %d (%d bytes)", ErrCorrupt, blobs, bytes, m.Blobs, m.BlobBytes)
	}
	want, n := sm.hex(), sm.n
	if hdr.Size > MaxTrailerSize {
		return m, fmt.Errorf("%w: the trailer is %d bytes, above the limit of %d", ErrCorrupt, hdr.Size, MaxTrailerSize)
	}
	tb, err := io.ReadAll(tr)
	if err != nil {
		return m, fmt.Errorf("%w: reading the trailer: %v", ErrCorrupt, err)
	}
	var t Trailer
	if err := json.Unmarshal(tb, &t); err != nil {
		return m, fmt.Errorf("%w: decoding the trailer: %v", ErrCorrupt, err)
	}
	if t.SHA256 != want || t.Entries != n {
		return m, fmt.Errorf("%w: the trailer's sum does not match the archive's content (%d entries read): it was altered", ErrCorrupt, n)
	}
	if _, err := tr.Next(); !errors.Is(err, io.EOF) {
		return m, fmt.Errorf("%w: content after the trailer", ErrCorrupt)
	}
	return m, nil
}

// checkedReader runs check once, when its reader reaches EOF: a consumer
// that reads to the end sees a mismatch as the read's error.
type checkedReader struct {
	r       io.Reader
	check   func() error
	done    bool
	checked error
}

func (c *checkedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if errors.Is(err, io.EOF) {
		if cerr := c.finish(); cerr != nil {
			return n, cerr
		}
	} else if err != nil {
		err = fmt.Errorf("%w: %v", ErrCorrupt, unexpectedEOF(err))
	}
	return n, err
}

func (c *checkedReader) finish() error {
	if !c.done {
		c.done, c.checked = true, c.check()
	}
	return c.checked
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// truncate keeps names from a hostile archive short in messages.
func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
