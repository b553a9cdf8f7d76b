package consensus

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/consensus/state"
)

// applyCmd applies c as the command entry at index.
func applyCmd(t testing.TB, f *fsm, index uint64, c command) error {
	t.Helper()
	data, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	resp := f.Apply(&raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data})
	if resp == nil {
		return nil
	}
	return resp.(error)
}

func putCmd(m ManifestRecord, tag string) command {
	var tags []string
	if tag != "" {
		tags = []string{tag}
	}
	return command{Op: opPutManifest, Repo: m.Repo, Digest: m.Digest, Tags: tags, MediaType: m.MediaType,
		ArtifactType: m.ArtifactType, Subject: m.Subject, Annotations: m.Annotations, Body: m.Body}
}

func TestCommandEncodingIsDeterministic(t *testing.T) {
	t.Parallel()
	m := manifest("r", "x", digest.FromString("s"))
	m.Annotations = map[string]string{}
	for i := range 50 {
		m.Annotations[fmt.Sprintf("k%02d", i)] = "v"
	}
	c := putCmd(m, "latest")
	first, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		again, _ := c.Encode()
		if !bytes.Equal(first, again) {
			t.Fatal("the same command encoded to different bytes")
		}
	}
	back, err := decodeCommand(first)
	if err != nil || !reflect.DeepEqual(back, c) {
		t.Fatalf("decode(encode(c)) = %+v, %v; want %+v", back, err, c)
	}
}

func TestFSMReplayIsIdempotent(t *testing.T) {
	t.Parallel()
	f := openFSM(t)
	m := manifest("repo", "a", "")
	if err := applyCmd(t, f, 5, putCmd(m, "v1")); err != nil {
		t.Fatal(err)
	}
	before := dump(t, f)
	if before["c"+string(m.Digest)] != string(encodeUint64(1)) {
		t.Fatalf("reference count after one put: %q", before["c"+string(m.Digest)])
	}

	// The same entry again (a replay after restart), and an older one that
	// would change state if it were applied: both are skipped.
	if err := applyCmd(t, f, 5, putCmd(m, "v1")); err != nil {
		t.Fatal(err)
	}
	if err := applyCmd(t, f, 4, command{Op: opDeleteTag, Repo: "repo", Tag: "v1"}); err != nil {
		t.Fatalf("replayed entry returned %v", err)
	}
	if after := dump(t, f); !maps.Equal(before, after) {
		t.Fatalf("replay changed the state:\nbefore %q\nafter  %q", before, after)
	}

	// A failing command changes nothing but the applied index.
	err := applyCmd(t, f, 6, command{Op: opUnlinkBlob, Repo: "repo", Digest: m.Digest})
	wantNotFound(t, "UnlinkBlob of a blob never linked", err)
	if err := applyCmd(t, f, 7, command{Op: 99, Repo: "repo"}); err == nil {
		t.Error("an unknown command applied without error")
	}
	if err := f.Apply(&raft.Log{Index: 8, Type: raft.LogCommand, Data: []byte{1, '{'}}); err == nil {
		t.Error("a malformed command applied without error")
	}
	after := dump(t, f)
	if idx, _ := f.appliedIndex(); idx != 8 {
		t.Errorf("applied index = %d, want 8", idx)
	}
	delete(after, keyApplied)
	delete(before, keyApplied)
	if !maps.Equal(before, after) {
		t.Fatalf("failed commands changed the state:\nbefore %q\nafter  %q", before, after)
	}
}

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

func TestFSMSnapshotRestore(t *testing.T) {
	t.Parallel()
	src := openFSM(t)
	index := uint64(0)
	apply := func(c command) {
		index++
		if err := applyCmd(t, src, index, c); err != nil {
			t.Fatalf("apply %d: %v", index, err)
		}
	}
	subject := manifest("repo-0", "subject", "")
	for i := range 300 {
		repo := fmt.Sprintf("repo-%d", i%7)
		m := manifest(repo, fmt.Sprint(i%40), subject.Digest)
		apply(putCmd(m, fmt.Sprintf("t%d", i)))
		apply(command{Op: opLinkBlob, Repo: repo, Digest: digest.FromString(fmt.Sprint("blob", i)), Size: int64(i)})
	}
	apply(command{Op: opDeleteManifest, Repo: "repo-1", Digest: manifest("repo-1", "1", subject.Digest).Digest})
	apply(command{Op: state.OpPutSetting, Name: state.SettingAuthTokenKeys, Body: []byte(`{"keys":[]}`)})
	// A garbage collection: its tombstones and touches travel too.
	swept := []state.SweepBlob{
		{Digest: digest.FromString("blob0"), Repos: []string{"repo-0"}},
		{Digest: digest.FromString("blob1"), Repos: []string{"repo-1"}},
	}
	slices.SortFunc(swept, func(a, b state.SweepBlob) int { return strings.Compare(string(a.Digest), string(b.Digest)) })
	apply(command{Op: state.OpGCSweep, MarkIndex: index, Time: 2, Cutoff: 1, Sweep: swept})
	want := dump(t, src)
	if !slices.ContainsFunc(slices.Collect(maps.Keys(want)), func(k string) bool { return strings.HasPrefix(k, "x") }) {
		t.Fatal("the collection left no tombstone to snapshot")
	}
	// A follower refuses a snapshot with a key its release does not know
	// (follow.go): every key this release writes is one it knows.
	for k := range want {
		if what := state.UnknownKey([]byte(k)); what != "" {
			t.Errorf("key %q of this release's state is unknown to it: %s", k, what)
		}
	}

	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Writes after Snapshot returns are not in it.
	apply(command{Op: opLinkBlob, Repo: "late", Digest: digest.FromString("late"), Size: 1})
	var sink memSink
	if err := snap.Persist(&sink); err != nil || !sink.closed {
		t.Fatalf("Persist: %v (sink closed: %v)", err, sink.closed)
	}
	snap.Release()

	dst := openFSM(t)
	if err := applyCmd(t, dst, 1, command{Op: opLinkBlob, Repo: "stale", Digest: digest.FromString("x"), Size: 1}); err != nil {
		t.Fatal(err)
	}
	if err := dst.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if got := dump(t, dst); !maps.Equal(got, want) {
		t.Fatalf("restored state differs: %d keys, want %d", len(got), len(want))
	}
	var setting []byte
	if err := dst.view(func(r state.Reader) (err error) { setting, err = r.Setting(state.SettingAuthTokenKeys); return err }); err != nil || string(setting) != `{"keys":[]}` {
		t.Errorf("restored setting = %q, %v; want the one written before the snapshot", setting, err)
	}
	if idx, _ := dst.appliedIndex(); idx != index-1 {
		t.Errorf("restored applied index = %d, want %d", idx, index-1)
	}
}

func TestFSMRestoreRejectsCorruptStreams(t *testing.T) {
	t.Parallel()
	src := openFSM(t)
	if err := applyCmd(t, src, 1, putCmd(manifest("r", "a", ""), "v1")); err != nil {
		t.Fatal(err)
	}
	snap, _ := src.Snapshot()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	good := sink.Bytes()

	for name, b := range map[string][]byte{
		"empty":           nil,
		"bad header":      append([]byte("not-a-snapshot-at-all!!!"), good[len(snapshotMagic):]...),
		"truncated":       good[:len(good)-5],
		"no end marker":   good[:len(good)-1],
		"oversized entry": append([]byte(snapshotMagic), 0xff, 0xff, 0xff, 0xff, 0x0f),
	} {
		err := openFSM(t).Restore(io.NopCloser(bytes.NewReader(b)))
		if err == nil {
			t.Errorf("%s: Restore accepted a corrupt stream", name)
		}
	}
}

func TestFSMSnapshotOpenedBeforeRestoreRefusesToPersist(t *testing.T) {
	t.Parallel()
	f := openFSM(t)
	snap, _ := f.Snapshot()
	defer snap.Release()
	if err := f.Restore(io.NopCloser(strings.NewReader(snapshotMagic + "\x00"))); err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err == nil || !sink.cancelled {
		t.Fatalf("Persist after Restore = %v (cancelled %v), want an error and a cancelled sink", err, sink.cancelled)
	}
}

func TestFSMSkipsNonCommandEntries(t *testing.T) {
	t.Parallel()
	f := openFSM(t)
	for _, typ := range []raft.LogType{raft.LogNoop, raft.LogConfiguration, raft.LogBarrier} {
		if resp := f.Apply(&raft.Log{Index: 1, Type: typ, Data: []byte("x")}); resp != nil {
			t.Errorf("Apply(%s) = %v", typ, resp)
		}
	}
	if idx, err := f.appliedIndex(); idx != 0 || err != nil {
		t.Errorf("applied index = %d, %v; want 0", idx, err)
	}
}

// A mirrored tag travels in snapshots: a node restored from one serves the
// same digest with the same check time.
func TestFSMSnapshotKeepsMirrorTags(t *testing.T) {
	t.Parallel()
	src := openFSM(t)
	m := manifest("docker.io/library/app", "index", "")
	if err := applyCmd(t, src, 1, putCmd(m, "")); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	tagCmd := command{Op: state.OpPutMirrorTag, Upstream: "docker.io", Repo: m.Repo, Tag: "v1", Digest: m.Digest,
		MediaType: m.MediaType, Size: int64(len(m.Body)), CheckedAt: at.UnixNano()}
	if err := applyCmd(t, src, 2, tagCmd); err != nil {
		t.Fatal(err)
	}
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	dst := openFSM(t)
	if err := dst.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	var rec MirrorTag
	if err := dst.view(func(r state.Reader) (err error) { rec, err = r.MirrorTag(m.Repo, "v1"); return err }); err != nil {
		t.Fatalf("restored MirrorTag: %v", err)
	}
	if rec.Digest != m.Digest || !rec.CheckedAt.Equal(at) || rec.Upstream != "docker.io" {
		t.Fatalf("restored mirrored tag = %+v", rec)
	}
}
