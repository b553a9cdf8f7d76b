package state

import (
	"errors"
	"slices"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func openDB(t *testing.T) *badger.DB {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(t.TempDir()).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// applier applies commands at increasing indexes.
type applier struct {
	t     *testing.T
	db    *badger.DB
	index uint64
}

func (a *applier) apply(c Command) (Applied, error) {
	a.t.Helper()
	data, err := c.Encode()
	if err != nil {
		a.t.Fatal(err)
	}
	a.index++
	got, ok, resp, err := Apply(a.db, a.index, data, nil)
	if err != nil || !ok {
		a.t.Fatalf("Apply(%d): ok %v, storage error %v", a.index, ok, err)
	}
	return got, resp
}

func (a *applier) must(c Command) {
	a.t.Helper()
	if _, resp := a.apply(c); resp != nil {
		a.t.Fatalf("command %+v: %v", c.Op, resp)
	}
}

func put(repo, mediaType, body string, tags ...string) Command {
	return Command{Op: OpPutManifest, Repo: repo, Digest: digest.FromString(body), MediaType: mediaType,
		Body: []byte(body), Tags: tags}
}

func read(t *testing.T, db *badger.DB, fn func(r Reader)) {
	t.Helper()
	if err := db.View(func(txn *badger.Txn) error { fn(NewReader(txn)); return nil }); err != nil {
		t.Fatal(err)
	}
}

// TestApplyReadAndReplay: commands change the state as the reads show,
// the applied entry says what it was, a replayed index changes nothing,
// and a refused command leaves only its index.
func TestApplyReadAndReplay(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	a := &applier{t: t, db: db}
	cfg, layer := digest.FromString("config"), digest.FromString("layer")
	img := put("repo", ocispec.MediaTypeImageManifest,
		`{"schemaVersion":2,"config":{"digest":"`+string(cfg)+`"},"layers":[{"digest":"`+string(layer)+`"}]}`, "v1")
	got, resp := a.apply(img)
	if resp != nil || got != (Applied{Index: 1, Kind: KindPutManifest, Repo: "repo", Digest: img.Digest}) {
		t.Fatalf("put: %+v, %v", got, resp)
	}
	a.must(Command{Op: OpLinkBlob, Repo: "repo", Digest: layer, Size: 5})

	data, _ := Command{Op: OpUnlinkBlob, Repo: "repo", Digest: layer}.Encode()
	if _, ok, resp, err := Apply(db, 2, data, nil); ok || resp != nil || err != nil {
		t.Errorf("replaying index 2: ok %v, %v, %v; want a skip", ok, resp, err)
	}
	got, resp = a.apply(Command{Op: OpDeleteTag, Repo: "repo", Tag: "nope"})
	if !errors.Is(resp, ErrNotFound) || !got.Failed || got.Kind != KindDeleteTag {
		t.Errorf("deleting a missing tag: %+v, %v", got, resp)
	}
	if _, resp = a.apply(Command{Op: OpLinkBlob, Repo: "Bad Name", Digest: layer}); !errors.Is(resp, ErrInvalidCommand) {
		t.Errorf("an invalid repository name: %v, want ErrInvalidCommand", resp)
	}

	read(t, db, func(r Reader) {
		if idx, err := r.AppliedIndex(); err != nil || idx != 4 {
			t.Errorf("AppliedIndex = %d, %v; want 4", idx, err)
		}
		if d, err := r.ResolveTag("repo", "v1"); err != nil || d != img.Digest {
			t.Errorf("ResolveTag = %s, %v", d, err)
		}
		if m, err := r.Manifest("repo", img.Digest); err != nil || string(m.Body) != string(img.Body) {
			t.Errorf("Manifest = %+v, %v", m, err)
		}
		if size, err := r.BlobLink("repo", layer); err != nil || size != 5 {
			t.Errorf("BlobLink = %d, %v; the replayed unlink must not have applied", size, err)
		}
		if repos, _ := r.Repositories("", -1); !slices.Equal(repos, []string{"repo"}) {
			t.Errorf("Repositories = %v", repos)
		}
		if _, err := r.Tags("other", "", -1); !errors.Is(err, ErrNotFound) {
			t.Errorf("Tags of a missing repository: %v", err)
		}
	})
}

// TestViewIsPinnedAndComplete: a View lists every manifest with what it
// references and every blob link, as of the index it was opened at, and
// does not see writes applied after.
func TestViewIsPinnedAndComplete(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	a := &applier{t: t, db: db}
	cfg, l1, l2 := digest.FromString("config"), digest.FromString("l1"), digest.FromString("l2")
	img := put("app", ocispec.MediaTypeImageManifest,
		`{"schemaVersion":2,"config":{"digest":"`+string(cfg)+`"},"layers":[{"digest":"`+string(l1)+`"},{"digest":"`+string(l2)+`"}]}`, "v1", "latest")
	idx := put("app", ocispec.MediaTypeImageIndex,
		`{"schemaVersion":2,"manifests":[{"digest":"`+string(img.Digest)+`"}]}`, "multi")
	a.must(img)
	a.must(idx)
	for _, d := range []digest.Digest{cfg, l1, l2} {
		a.must(Command{Op: OpLinkBlob, Repo: "app", Digest: d, Size: 1})
	}
	a.must(Command{Op: OpLinkBlob, Repo: "other", Digest: l1, Size: 1})

	txn := db.NewTransaction(false)
	defer txn.Discard()
	v, err := NewView(txn)
	if err != nil {
		t.Fatal(err)
	}
	// Applied after the view opened: invisible to it.
	a.must(Command{Op: OpDeleteManifest, Repo: "app", Digest: img.Digest})
	a.must(Command{Op: OpUnlinkBlob, Repo: "other", Digest: l1})
	a.must(put("late", ocispec.MediaTypeImageManifest, `{"schemaVersion":2}`))

	if v.Index() != 6 {
		t.Errorf("Index = %d, want 6", v.Index())
	}
	var manifests []ManifestRef
	if err := v.Manifests(func(m ManifestRef) error { manifests = append(manifests, m); return nil }); err != nil {
		t.Fatal(err)
	}
	want := map[digest.Digest]ManifestRef{
		img.Digest: {Repo: "app", Digest: img.Digest, MediaType: img.MediaType, Tags: []string{"latest", "v1"}, Blobs: []digest.Digest{cfg, l1, l2}},
		idx.Digest: {Repo: "app", Digest: idx.Digest, MediaType: idx.MediaType, Tags: []string{"multi"}, Children: []digest.Digest{img.Digest}},
	}
	if len(manifests) != len(want) {
		t.Fatalf("Manifests = %+v, want %d", manifests, len(want))
	}
	for _, m := range manifests {
		w := want[m.Digest]
		if m.Repo != w.Repo || m.MediaType != w.MediaType || m.BodyErr != nil || !slices.Equal(m.Tags, w.Tags) ||
			!slices.Equal(m.Blobs, w.Blobs) || !slices.Equal(m.Children, w.Children) {
			t.Errorf("manifest %s = %+v, want %+v", m.Digest, m, w)
		}
	}
	var links []BlobLinkRef
	if err := v.BlobLinks(func(l BlobLinkRef) error { links = append(links, l); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(links) != 4 || !slices.Contains(links, BlobLinkRef{Repo: "other", Digest: l1, Size: 1}) {
		t.Errorf("BlobLinks = %+v, want the 4 of index 6", links)
	}
	stop := errors.New("stop")
	if err := v.BlobLinks(func(BlobLinkRef) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("BlobLinks returned %v, want fn's error", err)
	}
}

// TestLastOpIsTheNewest: LastOp is what members tell each other they
// apply (node/features.go); an op added without raising it would be
// proposed to members that cannot apply it.
func TestLastOpIsTheNewest(t *testing.T) {
	if LastOp.Kind() == KindInvalid {
		t.Fatalf("LastOp %d is not an op", LastOp)
	}
	if k := (LastOp + 1).Kind(); k != KindInvalid {
		t.Fatalf("op %d (%s) is newer than LastOp %d: raise LastOp", LastOp+1, k, LastOp)
	}
}
