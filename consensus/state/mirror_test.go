package state

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func mirrorTagCmd(repo, tag string, d digest.Digest, at time.Time) Command {
	return Command{Op: OpPutMirrorTag, Upstream: "127.0.0.1:5999", Repo: repo, Tag: tag, Digest: d,
		MediaType: ocispec.MediaTypeImageIndex, Size: 42, CheckedAt: at.UnixNano()}
}

func TestMirrorTagValidation(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	d := digest.FromString("m")
	good := mirrorTagCmd("127.0.0.1-5999/library/app", "v1", d, now)
	if err := good.Validate(); err != nil {
		t.Fatalf("valid mirrored tag refused: %v", err)
	}
	for name, mutate := range map[string]func(c *Command){
		"upstream with a path":   func(c *Command) { c.Upstream = "evil.example/x" },
		"upstream empty":         func(c *Command) { c.Upstream = "" },
		"upstream too long":      func(c *Command) { c.Upstream = strings.Repeat("a", 300) },
		"repository without ns":  func(c *Command) { c.Repo = "app" },
		"bad tag":                func(c *Command) { c.Tag = "-x" },
		"bad digest":             func(c *Command) { c.Digest = "sha256:zz" },
		"clock before 2000":      func(c *Command) { c.CheckedAt = 1 },
		"clock after 2200":       func(c *Command) { c.CheckedAt = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano() },
		"no check time":          func(c *Command) { c.CheckedAt = 0 },
		"negative size":          func(c *Command) { c.Size = -1 },
		"oversized manifest":     func(c *Command) { c.Size = MaxManifestBytes + 1 },
		"not a manifest type":    func(c *Command) { c.MediaType = "text/plain" },
		"carries a body":         func(c *Command) { c.Body = []byte("{}") },
		"carries tags":           func(c *Command) { c.Tags = []string{"x"} },
		"carries a GC sweep":     func(c *Command) { c.Sweep = []SweepBlob{{Digest: d, Repos: []string{"a"}}} },
		"carries a check index":  func(c *Command) { c.CheckIndex = 3 },
		"link with upstream":     func(c *Command) { *c = Command{Op: OpLinkBlob, Repo: "a", Digest: d, Upstream: "x"} },
		"link with a check time": func(c *Command) { *c = Command{Op: OpLinkBlob, Repo: "a", Digest: d, CheckedAt: 5} },
	} {
		c := good
		mutate(&c)
		if err := c.Validate(); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("%s: Validate = %v, want ErrInvalidCommand", name, err)
		}
	}
}

func TestMirrorTagApply(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	a := &applier{t: t, db: db}
	repo := "127.0.0.1-5999/library/app"
	body := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`
	m := put(repo, ocispec.MediaTypeImageIndex, body)
	at := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)

	// The manifest must be stored first: the same failure on every node.
	applied, resp := a.apply(mirrorTagCmd(repo, "v1", m.Digest, at))
	if !errors.Is(resp, ErrNotFound) || !applied.Failed || applied.Kind != KindPutMirrorTag {
		t.Fatalf("mirrored tag without its manifest: %+v, %v; want a failed entry with ErrNotFound", applied, resp)
	}
	a.must(m)
	a.must(mirrorTagCmd(repo, "v1", m.Digest, at))
	read(t, db, func(r Reader) {
		rec, err := r.MirrorTag(repo, "v1")
		if err != nil || rec.Digest != m.Digest || !rec.CheckedAt.Equal(at) || rec.Upstream != "127.0.0.1:5999" || rec.Size != 42 {
			t.Fatalf("MirrorTag = %+v, %v", rec, err)
		}
		if d, err := r.ResolveTag(repo, "v1"); err != nil || d != m.Digest {
			t.Fatalf("the repository's tag = %s, %v; want %s", d, err, m.Digest)
		}
		if _, err := r.MirrorTag(repo, "v2"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown mirrored tag: %v", err)
		}
	})
	// Revalidated later: the time moves on, the tag moves to another manifest.
	m2 := put(repo, ocispec.MediaTypeImageIndex, body+" ")
	a.must(m2)
	later := at.Add(time.Minute)
	a.must(mirrorTagCmd(repo, "v1", m2.Digest, later))
	read(t, db, func(r Reader) {
		rec, err := r.MirrorTag(repo, "v1")
		if err != nil || rec.Digest != m2.Digest || !rec.CheckedAt.Equal(later) {
			t.Fatalf("after revalidation MirrorTag = %+v, %v", rec, err)
		}
	})
	// Its manifest deleted: the record is no answer any more.
	a.must(Command{Op: OpDeleteManifest, Repo: repo, Digest: m2.Digest})
	read(t, db, func(r Reader) {
		if _, err := r.MirrorTag(repo, "v1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("mirrored tag of a deleted manifest: %v, want ErrNotFound", err)
		}
	})
}
