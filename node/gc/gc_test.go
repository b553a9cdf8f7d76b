package gc

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/goleak"

	"github.com/meshreg/meshreg/blobstore"
	"github.com/meshreg/meshreg/consensus/state"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// meta is the replicated state on a real badger database, applied with
// state.Apply as the FSM does, with the reads the collector and the
// sweeper use.
type meta struct {
	t     testing.TB
	db    *badger.DB
	index uint64
}

func newMeta(t testing.TB) *meta {
	db, err := badger.Open(badger.DefaultOptions(t.TempDir()).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return &meta{t: t, db: db}
}

func (m *meta) apply(c state.Command) error {
	m.t.Helper()
	data, err := c.Encode()
	if err != nil {
		m.t.Fatal(err)
	}
	m.index++
	_, _, resp, err := state.Apply(m.db, m.index, data, nil)
	if err != nil {
		m.t.Fatal(err)
	}
	return resp
}

func (m *meta) must(c state.Command) {
	m.t.Helper()
	if err := m.apply(c); err != nil {
		m.t.Fatalf("%v: %v", c.Op, err)
	}
}

func (m *meta) link(repo string, d digest.Digest, size int64, at time.Time) {
	m.must(state.Command{Op: state.OpLinkBlob, Repo: repo, Digest: d, Size: size, Time: at.UnixNano()})
}

// put stores a manifest body in repo and returns its digest.
func (m *meta) put(repo, mediaType, body string, subject digest.Digest, tags ...string) digest.Digest {
	d := digest.FromString(body)
	m.must(state.Command{Op: state.OpPutManifest, Repo: repo, Digest: d, MediaType: mediaType, Body: []byte(body),
		Subject: subject, Tags: tags, CheckIndex: m.index})
	return d
}

func imageBody(cfg digest.Digest, layers ...digest.Digest) string {
	var ls []string
	for _, l := range layers {
		ls = append(ls, `{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"`+string(l)+`","size":1}`)
	}
	return `{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + string(cfg) +
		`","size":1},"layers":[` + strings.Join(ls, ",") + `]}`
}

func (m *meta) View(fn func(v *state.View) error) error {
	return m.db.View(func(txn *badger.Txn) error {
		v, err := state.NewView(txn)
		if err != nil {
			return err
		}
		return fn(v)
	})
}

func (m *meta) GCSweep(ctx context.Context, mark uint64, start, cutoff int64, blobs []state.SweepBlob) error {
	return m.apply(state.Command{Op: state.OpGCSweep, MarkIndex: mark, Time: start, Cutoff: cutoff, Sweep: blobs})
}

func (m *meta) Tombstones(after uint64, n int) (ts []state.Tombstone, err error) {
	err = m.db.View(func(txn *badger.Txn) error { ts, err = state.NewReader(txn).Tombstones(after, n); return err })
	return ts, err
}

func (m *meta) BlobGC(d digest.Digest) (touched, tomb uint64, err error) {
	err = m.db.View(func(txn *badger.Txn) error { touched, tomb, err = state.NewReader(txn).BlobGC(d); return err })
	return touched, tomb, err
}

func (m *meta) linked(repo string, d digest.Digest) bool {
	var ok bool
	_ = m.db.View(func(txn *badger.Txn) error {
		_, err := state.NewReader(txn).BlobLink(repo, d)
		ok = err == nil
		return nil
	})
	return ok
}

func digests(p Plan) []digest.Digest {
	var out []digest.Digest
	for _, c := range p.Blobs {
		out = append(out, c.Digest)
	}
	return out
}

func sorted(ds ...digest.Digest) []digest.Digest { slices.Sort(ds); return ds }

// TestMarkKeepsEverythingReferenced: shared layers, an index's children,
// referrers, untagged manifests and a repository with an unparsable
// manifest keep their blobs; a deleted image's own blobs, orphan links and
// nothing younger than the grace go.
func TestMarkKeepsEverythingReferenced(t *testing.T) {
	t.Parallel()
	m := newMeta(t)
	old, now := time.Unix(1000, 0), time.Unix(5000, 0)
	d := func(s string) digest.Digest { return digest.FromString(s) }
	for _, b := range []string{"shared", "uniqueA", "cfgA"} {
		m.link("a", d(b), 10, old)
	}
	for _, b := range []string{"shared", "uniqueB", "cfgB", "untagged", "ref", "cfgR"} {
		m.link("b", d(b), 10, old)
	}
	m.link("i", d("child"), 10, old)
	m.link("i", d("cfgC"), 10, old)
	m.link("a", d("orphan"), 7, old)
	m.link("a", d("young"), 7, now.Add(-time.Second))
	m.link("bad", d("unknown"), 3, old)
	a := m.put("a", ocispec.MediaTypeImageManifest, imageBody(d("cfgA"), d("shared"), d("uniqueA")), "", "v1")
	b := m.put("b", ocispec.MediaTypeImageManifest, imageBody(d("cfgB"), d("shared"), d("uniqueB")), "", "v1")
	m.put("b", ocispec.MediaTypeImageManifest, imageBody(d("cfgB"), d("untagged")), "") // no tag, not deleted
	m.put("b", ocispec.MediaTypeImageManifest, imageBody(d("cfgR"), d("ref")), b)       // a referrer of B
	child := m.put("i", ocispec.MediaTypeImageManifest, imageBody(d("cfgC"), d("child")), "")
	m.put("i", ocispec.MediaTypeImageIndex, `{"schemaVersion":2,"manifests":[{"digest":"`+string(child)+`","size":1}]}`, "", "multi")
	m.must(state.Command{Op: state.OpDeleteTag, Repo: "i", Tag: "multi"}) // the index stays, untagged
	m.put("bad", ocispec.MediaTypeImageManifest, "not json", "")
	m.must(state.Command{Op: state.OpDeleteManifest, Repo: "a", Digest: a})

	var plan Plan
	if err := m.View(func(v *state.View) (err error) { plan, err = Mark(v, now, now.Add(-time.Hour)); return err }); err != nil {
		t.Fatal(err)
	}
	want := sorted(d("uniqueA"), d("cfgA"), d("orphan"))
	if got := digests(plan); !slices.Equal(got, want) {
		t.Errorf("Mark frees %v; want %v", got, want)
	}
	if plan.Bytes != 27 || plan.MarkIndex != m.index || plan.Kept != 2 {
		t.Errorf("plan: %d bytes, mark %d, kept %d; want 27, %d, 2 (young and unknown)", plan.Bytes, plan.MarkIndex, plan.Kept, m.index)
	}

	// Collected through the state: the links go, the rest stay.
	got, err := MarkAndSweep(context.Background(), m, Options{Grace: time.Hour, Now: func() time.Time { return now }})
	if err != nil || len(got.Blobs) != 3 {
		t.Fatalf("MarkAndSweep: %d blobs, %v", len(got.Blobs), err)
	}
	if m.linked("a", d("uniqueA")) || !m.linked("a", d("shared")) || !m.linked("b", d("shared")) || !m.linked("a", d("young")) {
		t.Error("the sweep unlinked the wrong blobs")
	}
}

// TestBatchesStayInBounds: no batch exceeds one sweep's bounds and a
// blob's links stay together.
func TestBatchesStayInBounds(t *testing.T) {
	t.Parallel()
	var cands []Candidate
	for i := range 2500 {
		c := Candidate{Digest: digest.FromString(strings.Repeat("x", i)), Repos: []string{"a"}}
		if i%100 == 0 {
			c.Repos = make([]string, 300)
		}
		cands = append(cands, c)
	}
	n := 0
	for _, b := range Batches(cands) {
		links := 0
		for _, s := range b {
			links += len(s.Repos)
		}
		if len(b) > state.MaxSweepBlobs || links > state.MaxSweepLinks {
			t.Errorf("batch of %d blobs, %d links", len(b), links)
		}
		n += len(b)
	}
	if n != len(cands) {
		t.Errorf("batches hold %d blobs; want %d", n, len(cands))
	}
}

// disk is a real blob store and its root.
type disk struct {
	*blobstore.Store
	root string
}

func store(t *testing.T) disk {
	root := t.TempDir()
	s, err := blobstore.Open(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	return disk{s, root}
}

func putBlob(t *testing.T, s disk, content string, mtime time.Time) digest.Digest {
	t.Helper()
	d := digest.FromString(content)
	if _, err := s.Put(d, strings.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	if !mtime.IsZero() {
		p := blobPath(t, s, d)
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func blobPath(t *testing.T, s disk, d digest.Digest) string {
	t.Helper()
	path := filepath.Join(s.root, "blobs", string(d.Algorithm()), d.Encoded()[:2], d.Encoded())
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestSweeperFreesOnlyWhatIsSafe: of the tombstoned blobs, the sweeper
// deletes the old idle files, and keeps a file written since the
// collection began, a file being read, and a blob linked again; it then
// removes an old leftover and keeps a young one. A sweeper that starts
// again (a node restarted) frees nothing twice.
func TestSweeperFreesOnlyWhatIsSafe(t *testing.T) {
	t.Parallel()
	m, files, pins := newMeta(t), store(t), &Pins{}
	start := time.Now()
	old := start.Add(-2 * time.Hour)
	gone := putBlob(t, files, "gone", old)
	fresh := putBlob(t, files, "fresh", time.Time{}) // written after the start below
	read := putBlob(t, files, "read", old)
	relinked := putBlob(t, files, "relinked", old)
	leftover := putBlob(t, files, "leftover", old)
	youngLeftover := putBlob(t, files, "young leftover", start.Add(-time.Minute))
	for _, d := range []digest.Digest{gone, fresh, read, relinked} {
		m.link("a", d, 4, old)
	}
	mark := m.index
	var blobs []state.SweepBlob
	for _, d := range sorted(gone, fresh, read, relinked) {
		blobs = append(blobs, state.SweepBlob{Digest: d, Repos: []string{"a"}})
	}
	// Fresh was stored after the collection began: its file is newer.
	if err := os.Chtimes(blobPath(t, files, fresh), start.Add(time.Second), start.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	m.must(state.Command{Op: state.OpGCSweep, MarkIndex: mark, Time: start.UnixNano(), Cutoff: start.Add(-time.Hour).UnixNano(), Sweep: blobs})
	m.link("b", relinked, 8, time.Now()) // pushed again after the sweep
	release := pins.Pin(read)

	cursor := filepath.Join(t.TempDir(), "cursor")
	s, err := NewSweeper(SweeperConfig{Files: files, Meta: m, Pins: pins, CursorFile: cursor})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := s.ReportFor(context.Background(), mark, start.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for d, want := range map[digest.Digest]bool{gone: false, fresh: true, read: true, relinked: true, leftover: false, youngLeftover: true} {
		if _, err := files.Stat(d); (err == nil) != want {
			t.Errorf("blob %s held after the sweep: %v; want %v", d, err == nil, want)
		}
	}
	if rep.Blobs != 1 || rep.Bytes != 4 || rep.Kept != 3 || rep.LeftoverBlobs != 1 || rep.LeftoverBytes != 8 {
		t.Errorf("report %+v; want 1 blob of 4 bytes freed, 3 kept, 1 leftover of 8 bytes", rep)
	}
	release()

	// Restarted: the cursor is past the sweep, so the pinned-then-released
	// blob stays until a later collection (or the leftover pass) frees it.
	s2, err := NewSweeper(SweeperConfig{Files: files, Meta: m, Pins: pins, CursorFile: cursor})
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := files.Stat(read); err != nil {
		t.Errorf("a restarted sweeper swept again from the start: %v", err)
	}
}

// TestSweeperResumesAfterARestart: a node that stopped before sweeping
// (no cursor) frees the tombstoned blobs when it starts.
func TestSweeperResumesAfterARestart(t *testing.T) {
	t.Parallel()
	m, files := newMeta(t), store(t)
	start := time.Now()
	gone := putBlob(t, files, "gone", start.Add(-time.Hour))
	m.link("a", gone, 4, start.Add(-time.Hour))
	m.must(state.Command{Op: state.OpGCSweep, MarkIndex: m.index, Time: start.UnixNano(), Cutoff: start.UnixNano(),
		Sweep: []state.SweepBlob{{Digest: gone, Repos: []string{"a"}}}})
	s, err := NewSweeper(SweeperConfig{Files: files, Meta: m, CursorFile: filepath.Join(t.TempDir(), "cursor"), Every: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := files.Stat(gone); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sweeper did not free the tombstoned blob at start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
