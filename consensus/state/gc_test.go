package state

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func image(repo string, cfg digest.Digest, layers ...digest.Digest) Command {
	body := `{"schemaVersion":2,"config":{"digest":"` + string(cfg) + `"},"layers":[`
	for i, l := range layers {
		if i > 0 {
			body += ","
		}
		body += `{"digest":"` + string(l) + `"}`
	}
	return put(repo, ocispec.MediaTypeImageManifest, body+`]}`)
}

func link(repo string, d digest.Digest) Command {
	return Command{Op: OpLinkBlob, Repo: repo, Digest: d, Size: 1, Time: 1}
}

func sweep(mark uint64, blobs ...SweepBlob) Command {
	return Command{Op: OpGCSweep, MarkIndex: mark, Time: 100, Cutoff: 100, Sweep: blobs}
}

func linked(t *testing.T, a *applier, repo string, d digest.Digest) bool {
	t.Helper()
	var ok bool
	read(t, a.db, func(r Reader) {
		_, err := r.BlobLink(repo, d)
		ok = err == nil
	})
	return ok
}

// TestSweepRevivesWhatWasLinkedOrReferencedAfterTheMark: a sweep unlinks
// only digests nothing touched since its mark; a link or a manifest put
// applied between the mark and the sweep keeps the blob.
func TestSweepRevivesWhatWasLinkedOrReferencedAfterTheMark(t *testing.T) {
	t.Parallel()
	a := &applier{t: t, db: openDB(t)}
	gone, relinked, referenced := digest.FromString("gone"), digest.FromString("relinked"), digest.FromString("referenced")
	cfg := digest.FromString("cfg")
	a.must(link("a", gone))
	a.must(link("a", relinked))
	a.must(link("a", referenced))
	a.must(link("c", referenced))
	a.must(link("c", cfg))
	mark := a.index // the mark: nothing references the three
	a.must(link("b", relinked))
	a.must(image("c", cfg, referenced))
	a.must(sweep(mark,
		SweepBlob{Digest: gone, Repos: []string{"a"}},
		SweepBlob{Digest: referenced, Repos: []string{"a", "c"}},
		SweepBlob{Digest: relinked, Repos: []string{"a"}},
	))
	sweepIndex := a.index
	if linked(t, a, "a", gone) {
		t.Error("the unreferenced blob is still linked after the sweep")
	}
	if !linked(t, a, "a", relinked) || !linked(t, a, "b", relinked) {
		t.Error("a blob linked again after the mark lost a link")
	}
	if !linked(t, a, "c", referenced) || !linked(t, a, "a", referenced) {
		t.Error("a blob referenced by a manifest put after the mark lost a link")
	}
	read(t, a.db, func(r Reader) {
		ts, err := r.Tombstones(0, 10)
		if err != nil || len(ts) != 1 || ts[0].Digest != gone || ts[0].Index != sweepIndex || ts[0].Start != 100 {
			t.Errorf("Tombstones = %+v, %v; want only %s at %d", ts, err, gone, sweepIndex)
		}
		if touched, tomb, _ := r.BlobGC(gone); tomb != sweepIndex || touched > tomb {
			t.Errorf("BlobGC(gone) = %d, %d", touched, tomb)
		}
	})
}

// TestSweepSkipsBlobsInsideTheGrace: a link whose proposer time is at or
// after the cutoff survives.
func TestSweepSkipsBlobsInsideTheGrace(t *testing.T) {
	t.Parallel()
	a := &applier{t: t, db: openDB(t)}
	young := digest.FromString("young")
	a.must(Command{Op: OpLinkBlob, Repo: "a", Digest: young, Size: 1, Time: 150})
	a.must(sweep(a.index, SweepBlob{Digest: young, Repos: []string{"a"}}))
	if !linked(t, a, "a", young) {
		t.Error("a blob linked after the cutoff was collected")
	}
}

// TestTombstoneFailsAPutCheckedBeforeIt is CNCF Distribution's #1609: a
// push checks its layer, the GC collects it, the manifest commits. Here
// the put fails with ErrBlobCollected; pushed again (linked again, checked
// after the tombstone) it succeeds.
func TestTombstoneFailsAPutCheckedBeforeIt(t *testing.T) {
	t.Parallel()
	a := &applier{t: t, db: openDB(t)}
	layer, cfg := digest.FromString("layer"), digest.FromString("cfg")
	a.must(link("c", layer))
	a.must(link("c", cfg))
	check := a.index // the push checked both blobs here
	a.must(sweep(check, SweepBlob{Digest: layer, Repos: []string{"c"}}))
	img := image("c", cfg, layer)
	img.CheckIndex = check
	_, resp := a.apply(img)
	if !errors.Is(resp, ErrBlobCollected) || !strings.Contains(resp.Error(), string(layer)) || !strings.Contains(resp.Error(), "push it again") {
		t.Fatalf("put after the sweep: %v; want ErrBlobCollected naming %s", resp, layer)
	}
	read(t, a.db, func(r Reader) {
		if _, err := r.Manifest("c", img.Digest); !errors.Is(err, ErrNotFound) {
			t.Errorf("the refused manifest is in the state: %v", err)
		}
	})
	a.must(link("c", layer)) // the retry uploads the layer again
	img.CheckIndex = a.index
	a.must(img)
}

// TestTombstonesArePrunedBehindAFloor: a collection that begins more than
// TombstoneRetention after earlier ones prunes their tombstones, and a put
// checked before the floor fails.
func TestTombstonesArePrunedBehindAFloor(t *testing.T) {
	t.Parallel()
	a := &applier{t: t, db: openDB(t)}
	old, cfg := digest.FromString("old"), digest.FromString("cfg")
	a.must(link("a", old))
	a.must(link("a", cfg))
	a.must(sweep(a.index, SweepBlob{Digest: old, Repos: []string{"a"}}))
	first := a.index
	other := digest.FromString("other")
	a.must(link("a", other))
	// Within the retention, the first collection's tombstone stays.
	a.must(sweep(a.index, SweepBlob{Digest: other, Repos: []string{"a"}}))
	read(t, a.db, func(r Reader) {
		if ts, _ := r.Tombstones(0, 10); len(ts) != 2 {
			t.Errorf("tombstones within the retention: %+v; want both", ts)
		}
	})
	third := digest.FromString("third")
	a.must(link("a", third))
	late := sweep(a.index, SweepBlob{Digest: third, Repos: []string{"a"}})
	late.Time, late.Cutoff = 100+int64(TombstoneRetention), 100+int64(TombstoneRetention)
	a.must(late)
	read(t, a.db, func(r Reader) {
		ts, _ := r.Tombstones(0, 10)
		if len(ts) != 1 || ts[0].Digest != third {
			t.Errorf("tombstones after a collection past the retention: %+v; want only %s", ts, third)
		}
		if _, tomb, _ := r.BlobGC(old); tomb != 0 {
			t.Errorf("the pruned tombstone of %s is still there (%d)", old, tomb)
		}
	})
	img := image("a", cfg)
	img.CheckIndex = first - 1
	if _, resp := a.apply(img); !errors.Is(resp, ErrBlobCollected) {
		t.Errorf("put checked before the floor: %v; want ErrBlobCollected", resp)
	}
}

// TestHostileSweepsAreRefused: out-of-bounds sweeps are refused by
// Validate (at propose) and by Apply, changing nothing.
func TestHostileSweepsAreRefused(t *testing.T) {
	t.Parallel()
	d := digest.FromString("x")
	many := make([]SweepBlob, MaxSweepBlobs+1)
	for i := range many {
		many[i] = SweepBlob{Digest: digest.FromString(strings.Repeat("a", i)), Repos: []string{"a"}}
	}
	wide := SweepBlob{Digest: d}
	for i := range MaxSweepLinks + 1 {
		wide.Repos = append(wide.Repos, "r"+strings.Repeat("0", 6-len(itoa(i)))+itoa(i))
	}
	for name, c := range map[string]Command{
		"no blobs":           sweep(1),
		"no mark":            sweep(0, SweepBlob{Digest: d, Repos: []string{"a"}}),
		"too many blobs":     sweep(1, many...),
		"too many links":     sweep(1, wide),
		"unsorted":           sweep(1, SweepBlob{Digest: digest.Digest("sha256:" + strings.Repeat("b", 64)), Repos: []string{"a"}}, SweepBlob{Digest: digest.Digest("sha256:" + strings.Repeat("a", 64)), Repos: []string{"a"}}),
		"duplicate repo":     sweep(1, SweepBlob{Digest: d, Repos: []string{"a", "a"}}),
		"bad digest":         sweep(1, SweepBlob{Digest: "sha256:nope", Repos: []string{"a"}}),
		"bad repo":           sweep(1, SweepBlob{Digest: d, Repos: []string{"A B"}}),
		"with a manifest":    {Op: OpGCSweep, MarkIndex: 1, Sweep: []SweepBlob{{Digest: d, Repos: []string{"a"}}}, Body: []byte("{}")},
		"cutoff after start": {Op: OpGCSweep, MarkIndex: 1, Time: 1, Cutoff: 2, Sweep: []SweepBlob{{Digest: d, Repos: []string{"a"}}}},
		"put with a sweep":   {Op: OpPutManifest, Repo: "a", Digest: digest.FromString("{}"), MediaType: ocispec.MediaTypeImageManifest, Body: []byte("{}"), MarkIndex: 1},
	} {
		if err := c.Validate(); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("%s: Validate = %v; want ErrInvalidCommand", name, err)
		}
	}
	a := &applier{t: t, db: openDB(t)}
	a.must(link("a", d))
	// A sweep that claims to mark in its own future is refused at apply.
	if _, resp := a.apply(sweep(5, SweepBlob{Digest: d, Repos: []string{"a"}})); !errors.Is(resp, ErrInvalidCommand) {
		t.Errorf("sweep marked in the future: %v", resp)
	}
	img := image("a", d)
	img.CheckIndex = 99
	if _, resp := a.apply(img); !errors.Is(resp, ErrInvalidCommand) {
		t.Errorf("put checked in the future: %v", resp)
	}
	if !linked(t, a, "a", d) {
		t.Error("a refused sweep changed the state")
	}
}

func itoa(i int) string {
	s := ""
	for {
		s = string(rune('0'+i%10)) + s
		i /= 10
		if i == 0 {
			return s
		}
	}
}

// TestLargestSweepFitsOneTransaction: a sweep at the bounds (MaxSweepBlobs
// blobs, MaxSweepLinks links of the longest repository names) applies.
func TestLargestSweepFitsOneTransaction(t *testing.T) {
	t.Parallel()
	a := &applier{t: t, db: openDB(t)}
	perBlob := MaxSweepLinks / MaxSweepBlobs
	var repos []string
	for i := range perBlob {
		r := strings.Repeat("r", MaxRepoNameLength-2) + itoa(10+i)
		repos = append(repos, r)
	}
	var blobs []SweepBlob
	for i := range MaxSweepBlobs {
		d := digest.FromString(itoa(i))
		for _, r := range repos {
			a.must(link(r, d))
		}
		blobs = append(blobs, SweepBlob{Digest: d, Repos: repos})
	}
	slices.SortFunc(blobs, func(x, y SweepBlob) int { return strings.Compare(string(x.Digest), string(y.Digest)) })
	a.must(sweep(a.index, blobs...))
	read(t, a.db, func(r Reader) {
		if ts, _ := r.Tombstones(0, 2*MaxSweepBlobs); len(ts) != MaxSweepBlobs {
			t.Errorf("%d tombstones; want %d", len(ts), MaxSweepBlobs)
		}
		if names, _ := r.Repositories("", -1); len(names) != 0 {
			t.Errorf("repositories left: %d", len(names))
		}
	})
}
