package consensus

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"runtime"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/consensus/state"
)

// cmdSep separates the commands of one FuzzFSMApply input: each input is a
// short sequence of entries applied in order, so that a crasher replays the
// whole story (three puts, then the delete that breaks).
var cmdSep = []byte("\n\xff\n")

// maxFuzzCommands bounds the entries of one input.
const maxFuzzCommands = 8

// fuzzCommands joins encoded commands into one FuzzFSMApply input.
func fuzzCommands(f *testing.F, cmds ...command) []byte {
	f.Helper()
	var parts [][]byte
	for _, c := range cmds {
		b, err := c.Encode()
		if err != nil {
			f.Fatal(err)
		}
		parts = append(parts, b)
	}
	return bytes.Join(parts, cmdSep)
}

// manyTags returns n distinct tags of about size bytes.
func manyTags(prefix string, n, size int) []string {
	tags := make([]string, n)
	pad := strings.Repeat("x", max(size-len(prefix)-6, 0))
	for i := range tags {
		tags[i] = fmt.Sprintf("%s%s%06d", prefix, pad, i)
	}
	return tags
}

// FuzzFSMApply decodes and applies sequences of commands on a real badger
// FSM, as raft would after a commit. Whatever the entry: Apply never
// panics; an entry that does not decode, or that validate() refuses, leaves
// the state as it was (but for the applied index); and applying an entry
// again (a replay) changes nothing.
func FuzzFSMApply(f *testing.F) {
	m := manifest("team/app", "base", "")
	ref := manifest("team/app", "sig", m.Digest)
	f.Add(fuzzCommands(f, putCmd(manifest("team/app", "a", ""), "v1")))
	f.Add(fuzzCommands(f, command{Op: opPutManifest, Repo: m.Repo, Digest: m.Digest, Tags: []string{"v2", "v3"}, MediaType: m.MediaType, Body: m.Body}))
	f.Add(fuzzCommands(f, putCmd(ref, "")))
	f.Add(fuzzCommands(f, command{Op: opDeleteTag, Repo: "team/app", Tag: "latest"}))
	f.Add(fuzzCommands(f, command{Op: opDeleteManifest, Repo: "team/app", Digest: m.Digest}))
	f.Add(fuzzCommands(f, command{Op: opLinkBlob, Repo: "team/app", Digest: digest.FromString("layer"), Size: 4096}))
	f.Add(fuzzCommands(f, command{Op: opUnlinkBlob, Repo: "team/app", Digest: digest.FromString("layer")}))
	f.Add(fuzzCommands(f, command{Op: opLinkBlob, Repo: "team/app", Digest: digest.FromString("layer"), Size: -5}))
	f.Add(fuzzCommands(f, command{Op: opLinkBlob, Repo: "EVIL/../Injected", Digest: digest.FromString("x"), Size: 1 << 40}))
	f.Add(fuzzCommands(f, command{Op: opPutManifest, Repo: "team/app", Digest: digest.FromString("<script>"), Tags: []string{"v1"}, MediaType: "text/html", Body: []byte("<script>")}))
	f.Add(fuzzCommands(f, command{Op: 99, Repo: "team/app"}))
	f.Add(fuzzCommands(f, command{Op: state.OpPutSetting, Name: state.SettingAuthTokenKeys, Body: []byte(`{"keys":[]}`)}))
	f.Add(fuzzCommands(f, command{Op: state.OpPutSetting, Name: "retention", Body: []byte("x")}))
	f.Add(fuzzCommands(f, putCmd(manifest("docker.io/library/app", "m", ""), ""),
		command{Op: state.OpPutMirrorTag, Upstream: "docker.io", Repo: "docker.io/library/app", Tag: "v1", Digest: manifest("docker.io/library/app", "m", "").Digest,
			MediaType: m.MediaType, Size: 10, CheckedAt: 1_800_000_000_000_000_000}))
	f.Add(fuzzCommands(f, command{Op: state.OpPutMirrorTag, Upstream: "evil/x", Repo: "app", Tag: "v1", Digest: m.Digest, CheckedAt: -1}))
	f.Add([]byte{byte(opPutManifest), '{'})
	f.Add([]byte{})
	// Issue 9, finding 1: ~10,000 tags of 60 characters in one PUT.
	f.Add(fuzzCommands(f, command{Op: opPutManifest, Repo: m.Repo, Digest: m.Digest, Tags: manyTags("t", 10000, 60), MediaType: m.MediaType, Body: m.Body}))
	// ... and three PUTs of 5,000 short tags, then a DELETE by digest.
	f.Add(fuzzCommands(f,
		command{Op: opPutManifest, Repo: m.Repo, Digest: m.Digest, Tags: manyTags("a", 5000, 8), MediaType: m.MediaType, Body: m.Body},
		command{Op: opPutManifest, Repo: m.Repo, Digest: m.Digest, Tags: manyTags("b", 5000, 8), MediaType: m.MediaType, Body: m.Body},
		command{Op: opPutManifest, Repo: m.Repo, Digest: m.Digest, Tags: manyTags("c", 5000, 8), MediaType: m.MediaType, Body: m.Body},
		command{Op: opDeleteManifest, Repo: m.Repo, Digest: m.Digest},
	))

	// Garbage collection: a sweep of the base state's layer, then a put
	// checked before it; a sweep marked in its future.
	layer := []state.SweepBlob{{Digest: digest.FromString("layer"), Repos: []string{"team/app"}}}
	f.Add(fuzzCommands(f,
		command{Op: state.OpGCSweep, MarkIndex: 3, Time: 10, Cutoff: 10, Sweep: layer},
		command{Op: opPutManifest, Repo: m.Repo, Digest: m.Digest, MediaType: m.MediaType, Body: m.Body, CheckIndex: 2}))
	f.Add(fuzzCommands(f, command{Op: state.OpGCSweep, MarkIndex: 1 << 40, Time: 10, Cutoff: 10, Sweep: layer}))

	fsm := openFSM(f)
	base := []command{putCmd(m, "latest"), putCmd(ref, "sig"), {Op: opLinkBlob, Repo: m.Repo, Digest: digest.FromString("layer"), Size: 4096}}
	f.Fuzz(func(t *testing.T, data []byte) {
		resetFSM(t, fsm)
		index := uint64(1)
		for _, c := range base {
			if err := applyCmd(t, fsm, index, c); err != nil {
				t.Fatalf("base state: %v", err)
			}
			index++
		}
		for i, entry := range bytes.Split(data, cmdSep) {
			if i == maxFuzzCommands {
				break
			}
			before := dump(t, fsm)
			log := &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: entry}
			resp := applyNoPanic(t, fsm, log, i)
			after := dump(t, fsm)
			if resp != nil && !sameState(before, after) {
				t.Fatalf("entry %d (%.200q) failed (%v) but changed the state:\n%s", i, entry, resp, stateDiff(before, after))
			}
			c, derr := decodeCommand(entry)
			refused := derr != nil
			var verr error
			if !refused {
				verr = c.Validate()
				refused = verr != nil
			}
			if refused && !sameState(before, after) {
				t.Fatalf("entry %d (%.200q), refused by the proposer (decode: %v, validate: %v), changed the state:\n%s",
					i, entry, derr, verr, stateDiff(before, after))
			}
			applyNoPanic(t, fsm, log, i) // a replay
			if again := dump(t, fsm); !maps.Equal(after, again) {
				t.Fatalf("entry %d (%.200q) applied twice changed the state again:\n%s", i, entry, stateDiff(after, again))
			}
			index++
		}
	})
}

// applyNoPanic applies log, failing the test (not the whole test binary,
// as the seeds run with the other tests) if Apply panics.
func applyNoPanic(t *testing.T, f *fsm, log *raft.Log, i int) (resp any) {
	t.Helper()
	defer func() {
		if v := recover(); v != nil {
			t.Fatalf("entry %d (%.200q): Apply panicked: %v", i, log.Data, v)
		}
	}()
	return f.Apply(log)
}

// sameState compares two dumps, ignoring the applied index.
func sameState(a, b map[string]string) bool {
	a, b = maps.Clone(a), maps.Clone(b)
	delete(a, keyApplied)
	delete(b, keyApplied)
	return maps.Equal(a, b)
}

// stateDiff describes at most a few keys that differ between two dumps.
func stateDiff(before, after map[string]string) string {
	var sb strings.Builder
	n := 0
	for k, v := range after {
		if k == keyApplied {
			continue
		}
		if old, ok := before[k]; !ok || old != v {
			if n++; n <= 5 {
				fmt.Fprintf(&sb, "  set %.120q = %.120q\n", k, v)
			}
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok && k != keyApplied {
			if n++; n <= 5 {
				fmt.Fprintf(&sb, "  deleted %.120q\n", k)
			}
		}
	}
	fmt.Fprintf(&sb, "  (%d keys differ)", n)
	return sb.String()
}

// resetFSM empties the FSM's database between inputs.
func resetFSM(t *testing.T, f *fsm) {
	t.Helper()
	if err := f.db.DropAll(); err != nil {
		t.Fatal(err)
	}
	err := f.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		if it.Rewind(); it.Valid() {
			return fmt.Errorf("key %q left after DropAll", it.Item().Key())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// FuzzReadSnapshot reads arbitrary bytes as a snapshot stream: never a
// panic, every pair it hands on has a non-empty key, an accepted stream
// encodes back to the bytes read, and the memory it takes is bounded by
// what the stream holds, not by the lengths it claims.
func FuzzReadSnapshot(f *testing.F) {
	src := openFSM(f)
	m := manifest("team/app", "a", "")
	for i, c := range []command{putCmd(m, "v1"), putCmd(manifest("team/app", "sig", m.Digest), "sig"),
		{Op: opLinkBlob, Repo: "team/app", Digest: digest.FromString("layer"), Size: 4096}} {
		if err := applyCmd(f, src, uint64(i+1), c); err != nil {
			f.Fatal(err)
		}
	}
	snap, _ := src.Snapshot()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		f.Fatal(err)
	}
	snap.Release()
	good := sink.Bytes()
	f.Add(good)
	f.Add([]byte(snapshotMagic + "\x00"))
	f.Add(good[:len(good)-5])
	f.Add([]byte(snapshotMagic))
	f.Add(append([]byte(snapshotMagic), 0xff, 0xff, 0xff, 0xff, 0x0f))
	// A stream from a peer that claims a 256 MiB value and sends 3 bytes.
	f.Add(binary.AppendUvarint(append([]byte(snapshotMagic), 1, 'k'), 256<<20))

	f.Fuzz(func(t *testing.T, b []byte) {
		var keys, values [][]byte
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		allocBefore := ms.TotalAlloc
		n, err := readSnapshot(bufio.NewReader(bytes.NewReader(b)), func(k, v []byte) error {
			keys, values = append(keys, k), append(values, v)
			return nil
		})
		runtime.ReadMemStats(&ms)
		if alloc := ms.TotalAlloc - allocBefore; alloc > 16<<20+64*uint64(len(b)) {
			t.Fatalf("reading a snapshot of %d bytes allocated %d bytes (err %v)", len(b), alloc, err)
		}
		if n != len(keys) {
			t.Fatalf("readSnapshot counted %d pairs, handed on %d", n, len(keys))
		}
		for _, k := range keys {
			if len(k) == 0 {
				t.Fatal("readSnapshot handed on an empty key")
			}
		}
		if err != nil {
			return
		}
		var enc []byte
		enc = append(enc, snapshotMagic...)
		for i := range keys {
			enc = binary.AppendUvarint(enc, uint64(len(keys[i])))
			enc = append(enc, keys[i]...)
			enc = binary.AppendUvarint(enc, uint64(len(values[i])))
			enc = append(enc, values[i]...)
		}
		enc = binary.AppendUvarint(enc, 0)
		if !bytes.HasPrefix(b, enc) && !equivalentVarints(b, enc) {
			t.Fatalf("accepted stream %.200q re-encodes as %.200q", b, enc)
		}
	})
}

// equivalentVarints reports whether b reads as enc with lengths written in
// a non-minimal uvarint form (0x80 0x00 for 0), which binary.ReadUvarint
// accepts: both streams then carry the same pairs.
func equivalentVarints(b, enc []byte) bool {
	rb, re := bufio.NewReader(bytes.NewReader(b)), bufio.NewReader(bytes.NewReader(enc))
	var pb, pe [][]byte
	set := func(out *[][]byte) func(k, v []byte) error {
		return func(k, v []byte) error { *out = append(*out, k, v); return nil }
	}
	if _, err := readSnapshot(rb, set(&pb)); err != nil {
		return false
	}
	if _, err := readSnapshot(re, set(&pe)); err != nil || len(pb) != len(pe) {
		return false
	}
	for i := range pb {
		if !bytes.Equal(pb[i], pe[i]) {
			return false
		}
	}
	return true
}

// FuzzTailFrames reads what a hostile tail source may send: frames and
// the entries and configurations in them. Nothing panics, nothing past a
// frame's bound is read, and entries hold no more than their payload.
func FuzzTailFrames(f *testing.F) {
	conf := raft.Configuration{Servers: []raft.Server{{ID: "n1", Address: "n1", Suffrage: raft.Voter}}}
	var seed bytes.Buffer
	_ = writeJSONFrame(&seed, frameLeader, tailLeader{ID: "n1", Address: "n1", Term: 2})
	_ = writeFrame(&seed, frameEntries, encodeEntries([]tailEntry{
		{Index: 1, Term: 1, Type: raft.LogConfiguration, Data: raft.EncodeConfiguration(conf)},
		{Index: 2, Term: 1, Type: raft.LogCommand, Data: []byte("cmd")},
		{Index: 3, Term: 2, Type: raft.LogNoop},
	}))
	_ = writeFrame(&seed, frameHeartbeat, nil)
	f.Add(seed.Bytes())
	f.Add([]byte{frameEntries, 0, 0, 0, 3, 0xff, 0xff, 0x7f})
	f.Add([]byte{frameEntries, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		for {
			typ, payload, err := readFrame(r)
			if err != nil {
				return
			}
			if len(payload) > maxFrame(typ) {
				t.Fatalf("frame %d of %d bytes read, bound %d", typ, len(payload), maxFrame(typ))
			}
			if typ != frameEntries {
				continue
			}
			es, err := decodeEntries(payload)
			if err != nil {
				continue
			}
			size := 0
			for _, e := range es {
				size += 17 + len(e.Data)
				if e.Type == raft.LogConfiguration {
					_, _, _ = decodeConfiguration(e.Data)
				}
			}
			if size > len(payload) {
				t.Fatalf("%d entries of %d bytes from a payload of %d", len(es), size, len(payload))
			}
		}
	})
}
