package consensus

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/meshreg/meshreg/consensus/state"
)

// TestBackupRestore: the snapshot a backup takes, restored as another
// node's state, is a one-node cluster of that node that holds every tag and
// blob link at the backup's index, leads itself and takes new writes.
func TestBackupRestore(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.SnapshotThreshold, cfg.TrailingLogs = 4, 2 // the backup's index may be in a compacted log
	src := openStore(t, cfg)
	ctx := context.Background()
	for i := range 10 {
		mustPut(t, src, manifest("app", fmt.Sprint(i), ""), fmt.Sprintf("v%d", i))
	}
	m := manifest("app", "last", "")
	if err := src.LinkBlob(ctx, "app", m.Digest, 123); err != nil {
		t.Fatal(err)
	}

	var stream bytes.Buffer
	var index, term uint64
	var links int
	err := src.Backup(func(b *Backup) error {
		index, term = b.Index, b.Term
		size, sum, err := b.StateSize()
		if err != nil {
			return err
		}
		// Writes after the backup began are not in it.
		mustPut(t, src, manifest("app", "after", ""), "after")
		if err := b.WriteState(&stream); err != nil {
			return err
		}
		if int64(stream.Len()) != size || sum == "" {
			t.Errorf("StateSize = %d, WriteState wrote %d", size, stream.Len())
		}
		return b.View(func(v *state.View) error {
			return v.BlobLinks(func(state.BlobLinkRef) error { links++; return nil })
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if index == 0 || term == 0 || links != 1 {
		t.Fatalf("backup at index %d term %d with %d blob links", index, term, links)
	}

	// A truncated stream is refused, whatever the cut.
	for _, n := range []int{0, 10, stream.Len() / 2, stream.Len() - 1} {
		err := RestoreBackup(Config{Dir: t.TempDir(), NodeID: "node-2"}, bytes.NewReader(stream.Bytes()[:n]), index, term, "node-2")
		if err == nil {
			t.Errorf("restore of %d of %d bytes succeeded", n, stream.Len())
		}
	}
	// A stream whose state is not at the announced index is refused.
	if err := RestoreBackup(Config{Dir: t.TempDir(), NodeID: "node-2"}, bytes.NewReader(stream.Bytes()), index+5, term, "node-2"); err == nil ||
		!strings.Contains(err.Error(), "inconsistent") {
		t.Errorf("restore at the wrong index: %v", err)
	}

	dir := t.TempDir()
	if err := RestoreBackup(Config{Dir: dir, NodeID: "node-2", Logger: testLogger(t)}, bytes.NewReader(stream.Bytes()), index, term, "node-2"); err != nil {
		t.Fatal(err)
	}
	if err := RestoreBackup(Config{Dir: dir, NodeID: "node-2"}, bytes.NewReader(stream.Bytes()), index, term, "node-2"); err == nil {
		t.Error("a second restore over Raft state succeeded")
	}
	rcfg := testConfig(t, dir)
	rcfg.NodeID = "node-2"
	dst := openStore(t, rcfg)
	if st := dst.raft.State(); st != raft.Leader {
		t.Fatalf("restored node is %s, want the leader of itself", st)
	}
	members, err := dst.Members()
	if err != nil || len(members) != 1 || members[0].ID != "node-2" {
		t.Fatalf("members = %v, %v; want node-2 alone", members, err)
	}
	for i := range 10 {
		if _, err := dst.ResolveTag("app", fmt.Sprintf("v%d", i)); err != nil {
			t.Errorf("tag v%d: %v", i, err)
		}
	}
	if _, err := dst.ResolveTag("app", "after"); err == nil {
		t.Error("a tag written after the backup began is in it")
	}
	if size, err := dst.BlobLink("app", m.Digest); err != nil || size != 123 {
		t.Errorf("blob link = %d, %v", size, err)
	}
	mustPut(t, dst, manifest("app", "new", ""), "new")
	if got := dst.AppliedIndex(); got <= index {
		t.Errorf("applied index %d after a new write, backup was at %d", got, index)
	}
	if dst.Status().Term < term {
		t.Errorf("restored node's term %d is below the backup's %d", dst.Status().Term, term)
	}
}
