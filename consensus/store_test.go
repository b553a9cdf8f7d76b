package consensus

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

var ctx = context.Background()

func TestManifestsAndTags(t *testing.T) {
	t.Parallel()
	s := openStore(t, testConfig(t, t.TempDir()))
	a, b := manifest("lib/app", "a", ""), manifest("lib/app", "b", "")

	mustPut(t, s, a, "v1")
	got, err := s.Manifest("lib/app", a.Digest)
	if err != nil || !reflect.DeepEqual(got, a) {
		t.Fatalf("Manifest = %+v, %v; want %+v", got, err, a)
	}
	if d, err := s.ResolveTag("lib/app", "v1"); err != nil || d != a.Digest {
		t.Fatalf("ResolveTag(v1) = %s, %v; want %s", d, err, a.Digest)
	}
	mustPut(t, s, a, "v1") // idempotent
	mustPut(t, s, a, "")   // by digest, no tag

	mustPut(t, s, b, "v1") // the tag moves: last writer wins
	if d, _ := s.ResolveTag("lib/app", "v1"); d != b.Digest {
		t.Errorf("v1 points at %s after moving it to %s", d, b.Digest)
	}
	if _, err := s.Manifest("lib/app", a.Digest); err != nil {
		t.Errorf("untagged manifest vanished: %v", err)
	}

	if err := s.DeleteTag(ctx, "lib/app", "v1"); err != nil {
		t.Fatal(err)
	}
	_, err = s.ResolveTag("lib/app", "v1")
	wantNotFound(t, "ResolveTag of a deleted tag", err)
	wantNotFound(t, "DeleteTag twice", s.DeleteTag(ctx, "lib/app", "v1"))
	if _, err := s.Manifest("lib/app", b.Digest); err != nil {
		t.Errorf("deleting a tag deleted its manifest: %v", err)
	}

	// One write may point several tags at a manifest.
	if err := s.PutManifest(ctx, a, "x", "y"); err != nil {
		t.Fatal(err)
	}
	for _, tag := range []string{"x", "y"} {
		if d, err := s.ResolveTag("lib/app", tag); err != nil || d != a.Digest {
			t.Errorf("ResolveTag(%s) = %s, %v; want %s", tag, d, err, a.Digest)
		}
	}

	c := manifest("lib/app", "c", "")
	c.Digest = digest.SHA512.FromBytes(c.Body)
	mustPut(t, s, c, "sha512")
	if got, err := s.Manifest("lib/app", c.Digest); err != nil || got.Digest != c.Digest {
		t.Errorf("Manifest(sha512) = %v, %v", got.Digest, err)
	}

	_, err = s.Manifest("other", a.Digest)
	wantNotFound(t, "Manifest in a repository that does not hold it", err)
	_, err = s.Manifest("lib/app", digest.FromString("nothing"))
	wantNotFound(t, "Manifest of an unknown digest", err)
	_, err = s.ResolveTag("nope", "v1")
	wantNotFound(t, "ResolveTag in an unknown repository", err)
	if ok, err := s.RepositoryExists("lib/app"); !ok || err != nil {
		t.Errorf("RepositoryExists(lib/app) = %v, %v", ok, err)
	}
	if ok, err := s.RepositoryExists("lib"); ok || err != nil {
		t.Errorf("RepositoryExists(lib) = %v, %v; want false", ok, err)
	}
}

func TestTagsPagination(t *testing.T) {
	t.Parallel()
	s := openStore(t, testConfig(t, t.TempDir()))
	m := manifest("repo", "m", "")
	tags := []string{"v1", "v10", "v2", "latest", "V1", "a", "a.b", "a-b"}
	for _, tag := range tags {
		mustPut(t, s, m, tag)
	}
	mustPut(t, s, manifest("repo-other", "m", ""), "zzz") // a neighbouring repository
	sorted := slices.Clone(tags)
	slices.Sort(sorted) // byte order
	for _, tc := range []struct {
		name string
		last string
		n    int
		want []string
	}{
		{"all", "", -1, sorted},
		{"first page", "", 3, sorted[:3]},
		{"next page", sorted[2], 3, sorted[3:6]},
		{"last page", sorted[5], 3, sorted[6:]},
		{"after the end", sorted[len(sorted)-1], 3, []string{}},
		{"zero", "", 0, []string{}},
		{"last not a tag", "b", -1, []string{"latest", "v1", "v10", "v2"}},
		{"prefix of tags", "v", 2, []string{"v1", "v10"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Tags("repo", tc.last, tc.n)
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Tags(%q, %d) = %q, %v; want %q", tc.last, tc.n, got, err, tc.want)
			}
		})
	}

	_, err := s.Tags("unknown", "", -1)
	wantNotFound(t, "Tags of an unknown repository", err)
	if err := s.LinkBlob(ctx, "blobs-only", digest.FromString("x"), 1); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Tags("blobs-only", "", -1); err != nil || got == nil || len(got) != 0 {
		t.Errorf("Tags of a repository without tags = %#v, %v; want an empty slice", got, err)
	}
}

func TestRepositories(t *testing.T) {
	t.Parallel()
	s := openStore(t, testConfig(t, t.TempDir()))
	if got, err := s.Repositories("", -1); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("Repositories of an empty store = %#v, %v", got, err)
	}
	m := manifest("a/b", "m", "")
	mustPut(t, s, m, "")
	mustPut(t, s, manifest("a", "m", ""), "v1")
	blob := digest.FromString("blob")
	if err := s.LinkBlob(ctx, "a-c", blob, 4); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Repositories("", -1); !slices.Equal(got, []string{"a", "a-c", "a/b"}) {
		t.Errorf("Repositories = %q", got)
	}
	if got, _ := s.Repositories("a", 1); !slices.Equal(got, []string{"a-c"}) {
		t.Errorf("Repositories(a, 1) = %q", got)
	}

	// A repository is listed while it holds a manifest, tag or blob link.
	if err := s.DeleteManifest(ctx, "a/b", m.Digest); err != nil {
		t.Fatal(err)
	}
	if err := s.UnlinkBlob(ctx, "a-c", blob); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Repositories("", -1); !slices.Equal(got, []string{"a"}) {
		t.Errorf("Repositories after emptying a/b and a-c = %q, want [a]", got)
	}
	_, err := s.Tags("a/b", "", -1)
	wantNotFound(t, "Tags of an emptied repository", err)
}

func TestBlobLinks(t *testing.T) {
	t.Parallel()
	s := openStore(t, testConfig(t, t.TempDir()))
	d := digest.FromString("layer")
	_, err := s.BlobLink("r", d)
	wantNotFound(t, "BlobLink before linking", err)
	for _, size := range []int64{10, 10, 0} { // relinking is fine
		if err := s.LinkBlob(ctx, "r", d, size); err != nil {
			t.Fatal(err)
		}
		if got, err := s.BlobLink("r", d); err != nil || got != size {
			t.Errorf("BlobLink = %d, %v; want %d", got, err, size)
		}
	}
	_, err = s.BlobLink("r2", d)
	wantNotFound(t, "BlobLink in another repository", err)
	if err := s.UnlinkBlob(ctx, "r", d); err != nil {
		t.Fatal(err)
	}
	_, err = s.BlobLink("r", d)
	wantNotFound(t, "BlobLink after unlinking", err)
	wantNotFound(t, "UnlinkBlob twice", s.UnlinkBlob(ctx, "r", d))
	if ok, _ := s.RepositoryExists("r"); ok {
		t.Error("repository still exists after its only blob link went")
	}
}

func TestReferrers(t *testing.T) {
	t.Parallel()
	s := openStore(t, testConfig(t, t.TempDir()))
	subject := manifest("repo", "subject", "")
	mustPut(t, s, subject, "v1")
	if got, err := s.Referrers("repo", subject.Digest, "", "", -1); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("Referrers before any = %#v, %v; want an empty slice", got, err)
	}
	// Referrers may arrive before their subject, and in any order.
	sig, sbom := manifest("repo", "signature", subject.Digest), manifest("repo", "sbom", subject.Digest)
	mustPut(t, s, sig, "")
	mustPut(t, s, sbom, "")
	mustPut(t, s, manifest("repo", "orphan", digest.FromString("absent")), "")
	mustPut(t, s, manifest("elsewhere", "signature", subject.Digest), "")

	desc := func(m ManifestRecord) ocispec.Descriptor {
		return ocispec.Descriptor{MediaType: m.MediaType, Digest: m.Digest, Size: int64(len(m.Body)),
			ArtifactType: m.ArtifactType, Annotations: m.Annotations}
	}
	want := []ocispec.Descriptor{desc(sig), desc(sbom)}
	slices.SortFunc(want, func(a, b ocispec.Descriptor) int { return compare(a.Digest, b.Digest) })
	if got, err := s.Referrers("repo", subject.Digest, "", "", -1); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Referrers = %+v, %v;\nwant %+v", got, err, want)
	}

	if err := s.DeleteManifest(ctx, "repo", sig.Digest); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Referrers("repo", subject.Digest, "", "", -1); !reflect.DeepEqual(got, []ocispec.Descriptor{desc(sbom)}) {
		t.Errorf("Referrers after deleting one = %+v", got)
	}
	if got, _ := s.Referrers("elsewhere", subject.Digest, "", "", -1); len(got) != 1 {
		t.Errorf("a delete in repo touched the referrers of another repository: %+v", got)
	}
}

func compare(a, b digest.Digest) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func TestDeleteManifest(t *testing.T) {
	t.Parallel()
	s := openStore(t, testConfig(t, t.TempDir()))
	m, other := manifest("a", "shared", ""), manifest("a", "other", "")
	inB := m
	inB.Repo = "b"
	mustPut(t, s, m, "v1")
	mustPut(t, s, m, "latest")
	mustPut(t, s, other, "v2")
	mustPut(t, s, inB, "v1")

	if err := s.DeleteManifest(ctx, "a", m.Digest); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Tags("a", "", -1); !slices.Equal(got, []string{"v2"}) {
		t.Errorf("tags of a after the delete = %q, want [v2]", got)
	}
	_, err := s.Manifest("a", m.Digest)
	wantNotFound(t, "Manifest after DeleteManifest", err)
	wantNotFound(t, "DeleteManifest twice", s.DeleteManifest(ctx, "a", m.Digest))
	// b still holds the bytes.
	if got, err := s.Manifest("b", m.Digest); err != nil || string(got.Body) != string(m.Body) {
		t.Fatalf("Manifest in b after deleting from a = %v", err)
	}
	if d, _ := s.ResolveTag("b", "v1"); d != m.Digest {
		t.Errorf("tag in b lost")
	}

	hasBody := func() bool { _, ok := dump(t, s.fsm)[string(bodyKey(m.Digest))]; return ok }
	if !hasBody() {
		t.Fatal("bytes dropped while b still holds the manifest")
	}
	if err := s.DeleteManifest(ctx, "b", m.Digest); err != nil {
		t.Fatal(err)
	}
	if hasBody() {
		t.Error("bytes kept after the last repository let go")
	}
	if ok, _ := s.RepositoryExists("b"); ok {
		t.Error("repository b still exists without manifests")
	}
}

func TestWritesValidateInput(t *testing.T) {
	t.Parallel()
	s := openStore(t, testConfig(t, t.TempDir()))
	m := manifest("r", "m", "")
	bad := func(mod func(*ManifestRecord)) ManifestRecord { c := m; mod(&c); return c }
	for name, err := range map[string]error{
		"empty repo":      s.PutManifest(ctx, bad(func(c *ManifestRecord) { c.Repo = "" })),
		"NUL in repo":     s.PutManifest(ctx, bad(func(c *ManifestRecord) { c.Repo = "a\x00b" })),
		"NUL in tag":      s.PutManifest(ctx, m, "v\x001"),
		"body mismatch":   s.PutManifest(ctx, bad(func(c *ManifestRecord) { c.Body = []byte("{}") })),
		"bad digest":      s.PutManifest(ctx, bad(func(c *ManifestRecord) { c.Digest = "sha256:xyz" })),
		"bad subject":     s.PutManifest(ctx, bad(func(c *ManifestRecord) { c.Subject = "nope" })),
		"link bad digest": s.LinkBlob(ctx, "r", "md5:abc", 1),
		"negative size":   s.LinkBlob(ctx, "r", digest.FromString("x"), -1),
		"delete bad tag":  s.DeleteTag(ctx, "r", ""),
	} {
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if got, _ := s.Repositories("", -1); len(got) != 0 {
		t.Errorf("invalid writes created repositories %q", got)
	}
}

func TestRestartKeepsEverything(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(testConfig(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	subject := manifest("r", "subject", "")
	mustPut(t, s, subject, "v1")
	mustPut(t, s, manifest("r", "sig", subject.Digest), "")
	if err := s.LinkBlob(ctx, "r", digest.FromString("layer"), 42); err != nil {
		t.Fatal(err)
	}
	want := dump(t, s.fsm)
	term := s.Status().Term
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, testConfig(t, dir))
	if got := dump(t, s.fsm); !maps.Equal(got, want) {
		t.Fatalf("state after restart differs:\n got %q\nwant %q", got, want)
	}
	if st := s.Status(); st.Term <= term || st.State != "Leader" {
		t.Errorf("after restart: term %d (before %d), state %s", st.Term, term, st.State)
	}
	if d, err := s.ResolveTag("r", "v1"); err != nil || d != subject.Digest {
		t.Errorf("ResolveTag after restart = %s, %v", d, err)
	}
	mustPut(t, s, manifest("r", "after", ""), "v2") // and it still takes writes
}

// TestSnapshotRestart forces a snapshot after a few hundred writes with a
// short log tail, so the reopened store must restore the snapshot and replay
// the entries after it.
func TestSnapshotRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.TrailingLogs = 20
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	write := func(i int) {
		repo := fmt.Sprintf("repo-%d", i%5)
		mustPut(t, s, manifest(repo, fmt.Sprint(i%50), ""), fmt.Sprintf("t%d", i%80))
		if i%3 == 0 {
			if err := s.LinkBlob(ctx, repo, digest.FromString(fmt.Sprint(i)), int64(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range 300 {
		write(i)
	}
	snap := s.raft.Snapshot()
	if err := snap.Error(); err != nil {
		t.Fatalf("raft.Snapshot: %v", err)
	}
	// The snapshot restores into a fresh FSM as the state it was taken from.
	meta, rc, err := snap.Open()
	if err != nil {
		t.Fatal(err)
	}
	fresh := openFSM(t)
	if err := fresh.Restore(rc); err != nil {
		t.Fatal(err)
	}
	if got, want := dump(t, fresh), dump(t, s.fsm); !maps.Equal(got, want) {
		t.Fatalf("snapshot at %d restored %d keys, live state has %d", meta.Index, len(got), len(want))
	}

	for i := 300; i < 340; i++ { // entries after the snapshot, replayed on restart
		write(i)
	}
	if err := s.DeleteManifest(ctx, "repo-1", manifest("repo-1", "1", "").Digest); err != nil {
		t.Fatal(err)
	}
	if applied, _ := s.fsm.appliedIndex(); applied <= meta.Index {
		t.Fatalf("no entries after the snapshot (applied %d, snapshot %d)", applied, meta.Index)
	}
	var logs logStore = logStore{db: s.raftDB}
	if first, _ := logs.FirstIndex(); first <= 1 {
		t.Fatalf("the log was not compacted (first index %d)", first)
	}
	want := dump(t, s.fsm)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, cfg)
	if err := s.raft.Barrier(5 * time.Second).Error(); err != nil { // the replay is done
		t.Fatal(err)
	}
	if got := dump(t, s.fsm); !maps.Equal(got, want) {
		t.Fatalf("state after snapshot restart: %d keys, want %d", len(got), len(want))
	}
}

func TestClosedStore(t *testing.T) {
	t.Parallel()
	s, err := Open(testConfig(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	m := manifest("r", "m", "")
	if err := s.PutManifest(ctx, m, "v1"); !errors.Is(err, ErrClosed) {
		t.Errorf("PutManifest after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Manifest("r", m.Digest); !errors.Is(err, ErrClosed) {
		t.Errorf("Manifest after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Repositories("", -1); !errors.Is(err, ErrClosed) {
		t.Errorf("Repositories after Close = %v, want ErrClosed", err)
	}
	if s.Ready() {
		t.Error("Ready after Close")
	}
	if st := s.Status(); st.State != "Shutdown" {
		t.Errorf("Status().State after Close = %q", st.State)
	}
}

func TestStatusAndContext(t *testing.T) {
	t.Parallel()
	s := openStore(t, testConfig(t, t.TempDir()))
	if !s.Ready() {
		t.Fatal("not ready after Open")
	}
	mustPut(t, s, manifest("r", "m", ""), "v1")
	st := s.Status()
	wantMembers := []Member{{ID: "node-1", Address: "node-1", Suffrage: "Voter"}}
	if st.State != "Leader" || st.LeaderID != "node-1" || st.Term == 0 || st.AppliedIndex < 3 ||
		st.CommitIndex < st.AppliedIndex || st.LastIndex < st.CommitIndex || !reflect.DeepEqual(st.Members, wantMembers) {
		t.Errorf("Status = %+v", st)
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.PutManifest(cancelled, manifest("r", "x", "")); !errors.Is(err, context.Canceled) {
		t.Errorf("PutManifest with a cancelled context = %v", err)
	}
	if ok, _ := s.RepositoryExists("r"); !ok {
		t.Error("repository r lost")
	}
}

// TestFollowerRefusesWrites opens a node that does not bootstrap: it has no
// leader, so writes fail with ErrNotLeader while reads work.
func TestFollowerRefusesWrites(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, t.TempDir())
	cfg.NoBootstrap = true
	s := openStore(t, cfg)
	if s.Ready() {
		t.Error("Ready without a leader")
	}
	if err := s.LinkBlob(ctx, "r", digest.FromString("x"), 1); !errors.Is(err, ErrNotLeader) {
		t.Errorf("LinkBlob on a node without leader = %v, want ErrNotLeader", err)
	}
	if _, err := s.Repositories("", -1); err != nil {
		t.Errorf("reads fail without a leader: %v", err)
	}
	if st := s.Status(); st.State != Follower || len(st.Members) != 0 {
		t.Errorf("Status = %+v", st)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	good := DefaultConfig()
	good.Dir, good.NodeID = "d", "n"
	if err := good.Validate(); err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	for name, mod := range map[string]func(*Config){
		"no dir":            func(c *Config) { c.Dir = "" },
		"no node id":        func(c *Config) { c.NodeID = "" },
		"zero threshold":    func(c *Config) { c.SnapshotThreshold = 0 },
		"tiny interval":     func(c *Config) { c.SnapshotInterval = time.Millisecond },
		"no apply timeout":  func(c *Config) { c.ApplyTimeout = 0 },
		"no leader timeout": func(c *Config) { c.LeaderTimeout = -1 },
	} {
		c := good
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if _, err := Open(c); err == nil {
			t.Errorf("%s: Open accepted", name)
		}
	}
}

// TestConcurrentUse runs writers, readers and a snapshot at once (meant for
// -race): every acknowledged write is then visible.
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	s := openStore(t, testConfig(t, t.TempDir()))
	const writers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers*each+1)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				m := manifest(fmt.Sprintf("w%d", w), fmt.Sprint(i), "")
				if err := s.PutManifest(ctx, m, fmt.Sprintf("t%d", i)); err != nil {
					errs <- err
				}
				if _, err := s.Tags(m.Repo, "", -1); err != nil {
					errs <- err
				}
				_ = s.Status()
			}
		})
	}
	wg.Go(func() {
		time.Sleep(20 * time.Millisecond)
		err := s.raft.Snapshot().Error()
		// On a loaded machine no write may be applied yet.
		for try := 0; errors.Is(err, raft.ErrNothingNewToSnapshot) && try < 200; try++ {
			time.Sleep(5 * time.Millisecond)
			err = s.raft.Snapshot().Error()
		}
		if err != nil {
			errs <- err
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for w := range writers {
		if tags, _ := s.Tags(fmt.Sprintf("w%d", w), "", -1); len(tags) != each {
			t.Errorf("w%d has %d tags, want %d", w, len(tags), each)
		}
	}
}

// TestOpenTimesOutWithoutLeader: a leader cannot be elected within 1ms, so
// Open fails clearly and releases everything (goleak checks the goroutines;
// reopening checks the directory locks).
func TestOpenTimesOutWithoutLeader(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, t.TempDir())
	cfg.LeaderTimeout = time.Millisecond
	if s, err := Open(cfg); !errors.Is(err, ErrNotLeader) {
		if err == nil {
			_ = s.Close()
		}
		t.Fatalf("Open with a 1ms leader timeout = %v, want ErrNotLeader", err)
	}
	cfg.LeaderTimeout = DefaultConfig().LeaderTimeout
	s := openStore(t, cfg)
	mustPut(t, s, manifest("r", "m", ""), "v1")
}
