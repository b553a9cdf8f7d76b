package consensus

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/consensus/state"
)

// boundsTags returns n distinct valid tags of about width characters.
func boundsTags(prefix string, n, width int) []string {
	tags := make([]string, n)
	for i := range tags {
		s := fmt.Sprintf("%s%06d", prefix, i)
		if pad := width - len(s); pad > 0 {
			s += strings.Repeat("x", pad)
		}
		tags[i] = s
	}
	return tags
}

// The tests of this file are heavy (large entries, many tags, a cluster):
// they do not run in parallel, so that they do not starve the timing-bound
// cluster tests of the package on a small machine.

// hostileCommands are commands a forged or forwarded entry could carry that
// the FSM must refuse, whoever proposed them.
func hostileCommands() map[string]command {
	m := manifest("repo", "hostile", "")
	put := func(mod func(c *command)) command { c := putCmd(m, ""); mod(&c); return c }
	html := "<html><script>alert(1)</script></html>"
	return map[string]command{
		"10,000 tags":        put(func(c *command) { c.Tags = boundsTags("t", 10000, 60) }),
		"101 tags":           put(func(c *command) { c.Tags = boundsTags("t", MaxTagsPerWrite+1, 8) }),
		"text/html manifest": put(func(c *command) { c.MediaType = "text/html"; c.Body = []byte(html); c.Digest = digest.FromString(html) }),
		"no media type":      put(func(c *command) { c.MediaType = "" }),
		"repo with dot-dot":  put(func(c *command) { c.Repo = "EVIL/../Injected" }),
		"repo upper case":    put(func(c *command) { c.Repo = "Evil" }),
		"mirror tag, clock far ahead": {Op: state.OpPutMirrorTag, Upstream: "docker.io", Repo: "docker.io/repo", Tag: "v1", Digest: m.Digest,
			MediaType: m.MediaType, CheckedAt: math.MaxInt64},
		"mirror tag, upstream a path": {Op: state.OpPutMirrorTag, Upstream: "docker.io/../x", Repo: "docker.io/repo", Tag: "v1", Digest: m.Digest,
			MediaType: m.MediaType, CheckedAt: 1_800_000_000_000_000_000},
		"mirror tag with a body": {Op: state.OpPutMirrorTag, Upstream: "docker.io", Repo: "docker.io/repo", Tag: "v1", Digest: m.Digest,
			MediaType: m.MediaType, CheckedAt: 1_800_000_000_000_000_000, Body: m.Body},
		"repo too long":         put(func(c *command) { c.Repo = strings.Repeat("a", 256) }),
		"tag with slash":        put(func(c *command) { c.Tags = []string{"a/b"} }),
		"tag too long":          put(func(c *command) { c.Tags = []string{strings.Repeat("t", 129)} }),
		"tag starting with dot": put(func(c *command) { c.Tags = []string{".x"} }),
		"body too large":        put(func(c *command) { c.Body = make([]byte, MaxManifestBytes+1); c.Digest = digest.FromBytes(c.Body) }),
		"md5 manifest digest":   put(func(c *command) { c.Digest = "md5:d41d8cd98f00b204e9800998ecf8427e" }),
		"bad artifact type":     put(func(c *command) { c.ArtifactType = "<script>" }),
		"bad subject":           put(func(c *command) { c.Subject = "sha256:nothex" }),
		"md5 subject":           put(func(c *command) { c.Subject = "md5:d41d8cd98f00b204e9800998ecf8427e" }),
		"huge annotations":      put(func(c *command) { c.Annotations = bigAnnotations(1, MaxManifestBytes) }),
		"put with a size":       put(func(c *command) { c.Size = 5 }),
		"negative blob size":    {Op: opLinkBlob, Repo: "repo", Digest: digest.FromString("b"), Size: -5},
		"absurd blob size":      {Op: opLinkBlob, Repo: "repo", Digest: digest.FromString("b"), Size: MaxBlobSize + 1},
		"link to injected repo": {Op: opLinkBlob, Repo: "EVIL/../Injected", Digest: digest.FromString("b"), Size: 1},
		"link with a body":      {Op: opLinkBlob, Repo: "repo", Digest: digest.FromString("b"), Size: 1, Body: []byte("x")},
		"delete tag bad syntax": {Op: opDeleteTag, Repo: "repo", Tag: "../x"},
		"delete tag sha digest": {Op: opDeleteTag, Repo: "repo", Tag: "sha256:abc"},
		"delete manifest md5":   {Op: opDeleteManifest, Repo: "repo", Digest: "md5:d41d8cd98f00b204e9800998ecf8427e"},
		"unlink bad repo":       {Op: opUnlinkBlob, Repo: "a//b", Digest: digest.FromString("b")},
		"unknown op":            {Op: 99, Repo: "repo"},
	}
}

func bigAnnotations(n, valueLen int) map[string]string {
	a := map[string]string{}
	for i := range n {
		a[fmt.Sprintf("k%04d", i)] = strings.Repeat("v", valueLen)
	}
	return a
}

// TestFSMRefusesHostileCommands applies each hostile command straight to
// the FSM, as a forged log entry would reach it: each must be an error
// result that changes nothing but the applied index, never a panic.
func TestFSMRefusesHostileCommands(t *testing.T) {
	f := openFSM(t)
	if err := applyCmd(t, f, 1, putCmd(manifest("repo", "base", ""), "v1")); err != nil {
		t.Fatal(err)
	}
	before := dump(t, f)
	delete(before, keyApplied)
	index := uint64(1)
	for name, c := range hostileCommands() {
		index++
		var err error
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("%s: the FSM panicked: %v", name, p)
				}
			}()
			err = applyCmd(t, f, index, c)
		}()
		if !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("%s: apply = %v, want an error wrapping ErrInvalidCommand", name, err)
		}
		if got, _ := f.appliedIndex(); got != index {
			t.Errorf("%s: applied index %d, want %d", name, got, index)
		}
	}
	after := dump(t, f)
	delete(after, keyApplied)
	if !maps.Equal(before, after) {
		t.Errorf("hostile commands changed the state: %d keys before, %d after", len(before), len(after))
	}
}

// TestFSMDeleteManifestWithManyTags: 15,000 tags (bounded writes of at
// most MaxTagsPerWrite each) on one manifest, then its delete by digest,
// which touches every tag: it must succeed within badger's transaction
// limits, not panic.
func TestFSMDeleteManifestWithManyTags(t *testing.T) {
	f := openFSM(t)
	m := manifest("repo", "tagged", "")
	other := manifest("repo", "other", "")
	index := uint64(0)
	apply := func(c command) error {
		index++
		var err error
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("entry %d (op %d): the FSM panicked: %v", index, c.Op, p)
				}
			}()
			err = applyCmd(t, f, index, c)
		}()
		return err
	}
	if err := apply(putCmd(other, "keep")); err != nil {
		t.Fatal(err)
	}
	const total = 15000
	tags := boundsTags("tag-", total, 40)
	for i := 0; i < total; i += 100 {
		c := putCmd(m, "")
		c.Tags = tags[i : i+100]
		if err := apply(c); err != nil {
			t.Fatalf("put of tags %d..%d: %v", i, i+100, err)
		}
	}
	start := time.Now()
	if err := apply(command{Op: opDeleteManifest, Repo: "repo", Digest: m.Digest}); err != nil {
		t.Fatalf("delete of a manifest with %d tags: %v", total, err)
	}
	t.Logf("deleted a manifest with %d tags in %s", total, time.Since(start))
	state := dump(t, f)
	for k := range state {
		if strings.Contains(k, string(m.Digest)) {
			t.Fatalf("key %q of the deleted manifest is still there", k)
		}
	}
	if got, _ := f.appliedIndex(); got != index {
		t.Errorf("applied index %d, want %d", got, index)
	}
	if _, ok := state[string(tagKey("repo", "keep"))]; !ok {
		t.Error("the delete removed a tag of another manifest")
	}
}

// TestClusterRefusesInjectedEntries commits hostile entries straight
// through raft.Apply on the leader of a real 3-node cluster, bypassing the
// Store's validation as a forged or buggy proposer would: each must be an
// error result on every node (not a panic), every node must advance and
// hold the same state, and the cluster must keep taking writes.
func TestClusterRefusesInjectedEntries(t *testing.T) {
	c := newCluster(t, 3, nil)
	mustPut(t, c.followers()[0], manifest("repo", "before", ""), "v1")
	// inject commits data through the leader's raft, again if leadership
	// moved meanwhile (a loaded machine), and returns the entry's result.
	inject := func(data []byte) error {
		var err error
		for range 5 {
			err = result(c.leader().raft.Apply(data, 10*time.Second))
			if !errors.Is(err, ErrNotLeader) {
				break
			}
		}
		return err
	}
	for name, cmd := range hostileCommands() {
		if len(cmd.Body) > MaxManifestBytes {
			continue // FSM-level only: a 6 MB entry is slow on a loaded machine
		}
		data, err := cmd.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if err := inject(data); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("%s: committed entry's result = %v, want ErrInvalidCommand", name, err)
		}
	}
	for _, raw := range [][]byte{nil, {byte(opPutManifest)}, {byte(opPutManifest), '['}} {
		if err := inject(raw); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("raw entry %q: result = %v, want ErrInvalidCommand", raw, err)
		}
	}
	c.converge() // every node applied them all and holds the same bytes
	for _, s := range c.live() {
		if repos, _ := s.Repositories("", -1); len(repos) != 1 || repos[0] != "repo" {
			t.Errorf("%s: repositories %q after the hostile entries, want [repo]", s.cfg.NodeID, repos)
		}
	}
	mustPut(t, c.followers()[1], manifest("repo", "after", ""), "v2")
	c.converge()
}

// TestStorageFailureStopsApplyingAndReplays: a disk failure while applying
// an entry must not panic and must not let the node run on with a state
// that skipped the entry. The FSM refuses everything after it (sticky),
// OnFatal is told once with the cause, no snapshot is taken, and a restart
// applies the entry again.
func TestStorageFailureStopsApplyingAndReplays(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	fatal := make(chan error, 2)
	cfg.OnFatal = func(err error) { fatal <- err }
	var broken atomic.Bool
	cfg.ApplyFault = func(uint64) error {
		if broken.Load() {
			return fmt.Errorf("write %s/fsm/000001.vlog: %w", dir, syscall.ENOSPC)
		}
		return nil
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := manifest("repo", "a", ""), manifest("repo", "b", ""), manifest("repo", "c", "")
	mustPut(t, s, a, "a")
	broken.Store(true)
	if err := s.PutManifest(ctx, b, "b"); !errors.Is(err, ErrStorageFailed) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write on a full disk = %v, want ErrStorageFailed naming ENOSPC", err)
	}
	select {
	case err := <-fatal:
		if !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("OnFatal(%v): the cause is missing", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("OnFatal was not called")
	}
	broken.Store(false) // the disk has space again: the FSM still refuses
	if err := s.PutManifest(ctx, c, "c"); !errors.Is(err, ErrStorageFailed) {
		t.Errorf("write after the failure = %v, want ErrStorageFailed", err)
	}
	if _, err := s.Manifest("repo", c.Digest); !errors.Is(err, ErrNotFound) {
		t.Errorf("a write after the failure was applied: %v", err)
	}
	if err := s.raft.Snapshot().Error(); err == nil {
		t.Error("a failed FSM let raft take a snapshot")
	}
	if st := s.Status(); !strings.Contains(st.StorageError, "no space left") || s.Ready() {
		t.Errorf("status after the failure: storage error %q, ready %v; want the cause and not ready", st.StorageError, s.Ready())
	}
	select {
	case err := <-fatal:
		t.Errorf("OnFatal called twice (%v)", err)
	default:
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	cfg.OnFatal, cfg.ApplyFault = nil, nil
	s = openStore(t, cfg)
	deadline := time.Now().Add(15 * time.Second)
	for _, m := range []ManifestRecord{a, b, c} {
		for {
			_, err := s.Manifest("repo", m.Digest)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after restart, manifest %s (committed before or after the failure) is missing: %v", m.Digest, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// TestManifestDeleteResumesAfterCrash: a manifest delete removes its tags
// in several transactions before the one that removes the manifest and
// records the index; if the node dies in between, applying the entry again
// finishes the job.
func TestManifestDeleteResumesAfterCrash(t *testing.T) {
	dir := t.TempDir()
	open := func() *fsm {
		db, err := openBadger(dir, false, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		return &fsm{db: db, log: testLogger(t)}
	}
	f := open()
	m := manifest("repo", "m", "")
	tags := boundsTags("t", 2500, 20)
	index := uint64(0)
	for i := 0; i < len(tags); i += MaxTagsPerWrite {
		index++
		c := putCmd(m, "")
		c.Tags = tags[i : i+MaxTagsPerWrite]
		if err := applyCmd(t, f, index, c); err != nil {
			t.Fatal(err)
		}
	}
	index++
	del := command{Op: opDeleteManifest, Repo: "repo", Digest: m.Digest}
	f.fault = func(uint64) error { return errors.New("power cut") }
	if err := applyCmd(t, f, index, del); !errors.Is(err, ErrStorageFailed) {
		t.Fatalf("delete with a failing final commit = %v, want ErrStorageFailed", err)
	}
	if _, ok := dump(t, f)[string(manifestKey("repo", m.Digest))]; !ok {
		t.Fatal("the manifest went although the final transaction failed")
	}
	if err := f.db.Close(); err != nil {
		t.Fatal(err)
	}
	f = open()
	t.Cleanup(func() { _ = f.db.Close() })
	if err := applyCmd(t, f, index, del); err != nil {
		t.Fatalf("delete replayed after the crash: %v", err)
	}
	for k := range dump(t, f) {
		if k != keyApplied {
			t.Errorf("key %q left after the replayed delete", k)
		}
	}
	if got, _ := f.appliedIndex(); got != index {
		t.Errorf("applied index %d, want %d", got, index)
	}
}

// TestLogCacheIsBounded: raft keeps recent entries in memory; with entries
// of up to several MiB (manifests) the cache must stay bounded in bytes.
// The heap growth of 200 entries of 1 MiB through the cache is compared
// with the same through the bare badger store (badger's own buffers), and
// through raft.NewLogCache(512), the cache used before, for the record.
func TestLogCacheIsBounded(t *testing.T) {
	const entries, size = 200, 1 << 20
	heap := func() int64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return int64(ms.HeapAlloc)
	}
	grow := func(wrap func(raft.LogStore) raft.LogStore) (int64, raft.LogStore) {
		db, err := openBadger(t.TempDir(), false, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		before := heap()
		store := wrap(&logStore{db: db})
		for i := uint64(1); i <= entries; i++ {
			data := bytes.Repeat([]byte{byte(i)}, size)
			switch i % 3 {
			case 0:
				data = bytes.Repeat([]byte{byte(i)}, 100) // small: cached
			case 1:
				data = data[:100] // small, but holds 1 MiB: not cached
			}
			if err := store.StoreLogs([]*raft.Log{{Index: i, Term: 1, Type: raft.LogCommand, Data: data}}); err != nil {
				t.Fatal(err)
			}
		}
		for _, i := range []uint64{entries, entries - 1, 3, 4} {
			var l raft.Log
			if err := store.GetLog(i, &l); err != nil || l.Index != i || len(l.Data) == 0 || l.Data[0] != byte(i) {
				t.Errorf("GetLog(%d) = index %d, %d bytes, %v", i, l.Index, len(l.Data), err)
			}
		}
		grown := heap() - before
		runtime.KeepAlive(store)
		return grown, store
	}
	bare, _ := grow(func(s raft.LogStore) raft.LogStore { return s })
	cached, store := grow(func(s raft.LogStore) raft.LogStore { return newLogCache(s) })
	old, _ := grow(func(s raft.LogStore) raft.LogStore {
		c, err := raft.NewLogCache(512, s)
		if err != nil {
			t.Fatal(err)
		}
		return c
	})
	held := store.(*logCache).cachedBytes()
	t.Logf("heap growth after %d entries of up to %d KiB: bare store %d MiB, bounded cache %d MiB (holding %d KiB), raft.NewLogCache(512) %d MiB",
		entries, size>>10, bare>>20, cached>>20, held>>10, old>>20)
	if held > logCacheMaxBytes {
		t.Errorf("cache holds %d bytes, above its bound %d", held, logCacheMaxBytes)
	}
	if cached-bare > 2*logCacheMaxBytes {
		t.Errorf("the cache added %d MiB of heap, above twice its bound (%d MiB)", (cached-bare)>>20, logCacheMaxBytes>>20)
	}
}

// TestReferrersArePagedAndBounded: a referrer's descriptor keeps its
// annotations only when they are small, and listings come in pages.
func TestReferrersArePagedAndBounded(t *testing.T) {
	s := openStore(t, testConfig(t, t.TempDir()))
	subject := manifest("repo", "subject", "")
	var digests []string
	for i := range 5 {
		m := manifest("repo", fmt.Sprintf("ref%d", i), subject.Digest)
		if i == 0 {
			m.Annotations = bigAnnotations(1, 1<<20) // 1 MiB: not kept in the index
		}
		if i == 1 {
			m.ArtifactType = "application/vnd.example.sig"
		}
		mustPut(t, s, m, "")
		digests = append(digests, string(m.Digest))
	}
	slices.Sort(digests)
	all, err := s.Referrers("repo", subject.Digest, "", "", -1)
	if err != nil || len(all) != 5 {
		t.Fatalf("Referrers = %d, %v; want 5", len(all), err)
	}
	for _, d := range all {
		if annotationBytes(d.Annotations) > MaxAnnotationBytes {
			t.Errorf("descriptor %s keeps %d bytes of annotations", d.Digest, annotationBytes(d.Annotations))
		}
	}
	var paged []string
	last := ""
	for range 10 {
		page, err := s.Referrers("repo", subject.Digest, "", last, 2)
		if err != nil || len(page) > 2 {
			t.Fatalf("page after %q: %d, %v", last, len(page), err)
		}
		if len(page) == 0 {
			break
		}
		for _, d := range page {
			paged = append(paged, string(d.Digest))
		}
		last = paged[len(paged)-1]
	}
	if !slices.Equal(paged, digests) {
		t.Errorf("pages gave %q, want %q", paged, digests)
	}
	if got, _ := s.Referrers("repo", subject.Digest, "application/vnd.example.sig", "", 10); len(got) != 1 {
		t.Errorf("filtered by artifact type: %d descriptors, want 1", len(got))
	}
}

// TestSnapshotLengthsAreClaimsNotAllocations: a snapshot stream (from a
// leader, or a corrupt file) that claims a 256 MiB value and sends 3 bytes
// must cost about what it sent.
func TestSnapshotLengthsAreClaimsNotAllocations(t *testing.T) {
	stream := binary.AppendUvarint(append([]byte(snapshotMagic), 1, 'k'), 256<<20)
	stream = append(stream, "abc"...)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc
	_, err := readSnapshot(bufio.NewReader(bytes.NewReader(stream)), func(k, v []byte) error { return nil })
	runtime.ReadMemStats(&ms)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated stream: %v, want ErrUnexpectedEOF", err)
	}
	if alloc := ms.TotalAlloc - before; alloc > 8<<20 {
		t.Errorf("a stream of %d bytes claiming 256 MiB allocated %d MiB", len(stream), alloc>>20)
	}
	// A real large value still reads whole.
	big := bytes.Repeat([]byte("v"), 3<<20)
	stream = binary.AppendUvarint(append([]byte(snapshotMagic), 1, 'k'), uint64(len(big)))
	stream = binary.AppendUvarint(append(stream, big...), 0)
	var got []byte
	if _, err := readSnapshot(bufio.NewReader(bytes.NewReader(stream)), func(k, v []byte) error { got = v; return nil }); err != nil || !bytes.Equal(got, big) {
		t.Errorf("a 3 MiB value: %d bytes back, %v", len(got), err)
	}
}

// TestFSMDropsLargeAnnotations: an entry whose annotations exceed what the
// index keeps (one an older version committed, or a forged one) still
// applies, the same way everywhere: the manifest without its annotations in
// the record and the referrer descriptor.
func TestFSMDropsLargeAnnotations(t *testing.T) {
	f := openFSM(t)
	m := manifest("repo", "annotated", digest.FromString("subject"))
	c := putCmd(m, "v1")
	c.Annotations = bigAnnotations(MaxAnnotations+1, 100)
	if err := applyCmd(t, f, 1, c); err != nil {
		t.Fatalf("apply: %v", err)
	}
	state := dump(t, f)
	for _, k := range [][]byte{manifestKey("repo", m.Digest), referrerKey("repo", m.Subject, m.Digest)} {
		v, ok := state[string(k)]
		if !ok {
			t.Fatalf("key %q missing", k)
		}
		if strings.Contains(v, "k0000") || len(v) > 1024 {
			t.Errorf("key %q keeps the annotations: %d bytes", k, len(v))
		}
	}
}
