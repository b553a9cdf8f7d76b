package consensus

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/meshreg/meshreg/consensus/state"
)

// TestTailStopsAtAnEntryNewerThanItsRelease: a follower that meets a
// committed entry of an op, or a setting, its release does not know
// applies nothing more: it does not skip the entry (its state would part
// from the cluster's), it says why in its tail status, and it tails no
// other member to get past it.
func TestTailStopsAtAnEntryNewerThanItsRelease(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, nil)
	h := newTailHarness(t, c)
	putN(t, c.leader(), "r", 0, 3)

	newerSetting, err := state.Command{Op: state.OpPutSetting, Name: "from.the.future", Body: []byte("x")}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"newer op", append([]byte{byte(state.LastOp + 1)}, "{}"...), fmt.Sprintf("op %d it does not know", state.LastOp+1)},
		{"newer setting", newerSetting, `setting "from.the.future" it does not know`},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var at uint64
			d := &hostileDialer{h: h, behave: func(w io.Writer, req tailRequest) error {
				at = req.After + 1
				return writeFrame(w, frameEntries, encodeEntries([]tailEntry{{Index: req.After + 1, Term: 1, Type: raft.LogCommand, Data: tc.data}}))
			}}
			f, before := stoppedOldFollower(t, c, h, fmt.Sprintf("old%d", i), d)
			st := f.TailStatus()
			for _, w := range []string{"this node (version v0.9.0) is older than the cluster", fmt.Sprintf("entry %d has", before+1), tc.want, "upgrade it"} {
				if !strings.Contains(st.Stopped, w) {
					t.Errorf("stopped = %q, want it to say %q", st.Stopped, w)
				}
			}
			if at != before+1 {
				t.Errorf("the newer entry was sent at %d, the follower had applied %d", at, before)
			}
			// The cluster goes on; the old follower applies nothing of
			// it and dials nobody.
			putN(t, c.leader(), "r", 100*(i+1), 2)
			d.mu.Lock()
			dials := d.dials
			d.mu.Unlock()
			time.Sleep(500 * time.Millisecond)
			d.mu.Lock()
			later := d.dials
			d.mu.Unlock()
			if got := f.AppliedIndex(); got != before || !f.Following() || later != dials {
				t.Errorf("after stopping: applied %d (want %d), following %v, dials %d then %d", got, before, f.Following(), dials, later)
			}
			if _, err := f.ResolveTag("r", fmt.Sprintf("v%d", 100*(i+1))); err == nil {
				t.Error("the follower applied a write after the entry it cannot apply")
			}
		})
	}
}

// refusingDialer connects to a server that turns every follower away.
type refusingDialer struct{ reason string }

func (d refusingDialer) DialTail(ctx context.Context, member Server) (io.ReadWriteCloser, error) {
	server, client := net.Pipe()
	go func() { _ = RefuseTail(server, d.reason) }()
	return client, nil
}

// TestTailRefusal: a member that serves all the followers it may says so,
// and the follower's session ends with its reason (it then tails another
// member); a reason longer than the bound is cut.
func TestTailRefusal(t *testing.T) {
	t.Parallel()
	s := openStore(t, testConfig(t, t.TempDir()))
	for _, reason := range []string{"this member serves 1024 followers, its most", strings.Repeat("x", 2*maxTailRefusal)} {
		f := &follower{s: s, dialer: refusingDialer{reason}, hb: testHeartbeat}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		progress, err := f.session(ctx, Member{ID: "m", Address: "m"})
		cancel()
		want := reason[:min(len(reason), maxTailRefusal)]
		if progress || err == nil || !strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), want) ||
			strings.Contains(err.Error(), want+"x") {
			t.Errorf("session with a refusing member: progress %v, err %v", progress, err)
		}
	}
}

// TestTailStopsAtASnapshotNewerThanItsRelease: a snapshot sent to catch a
// follower up is checked like an entry. One whose state holds a setting,
// or records of a kind, the follower's release does not know was written
// by a newer release: the follower restores nothing of it, says why, and
// stops (its state stays what it had applied).
func TestTailStopsAtASnapshotNewerThanItsRelease(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, nil)
	h := newTailHarness(t, c)
	putN(t, c.leader(), "r", 0, 3)

	// A snapshot stream of a state at index 5000 (ahead of the
	// follower), with one more pair before its end marker (the stream
	// ends with uvarint(0)).
	withPair := func(key, value string) []byte {
		s := snapshotOf(t, 5000)
		s = s[:len(s)-1]
		s = binary.AppendUvarint(s, uint64(len(key)))
		s = append(s, key...)
		s = binary.AppendUvarint(s, uint64(len(value)))
		s = append(s, value...)
		return binary.AppendUvarint(s, 0)
	}
	cases := []struct {
		name     string
		snapshot []byte
		want     string
	}{
		{"newer setting", withPair("sfrom.the.future", "x"), `the setting "from.the.future"`},
		{"newer kind of record", withPair("Zrepo\x00thing", "x"), `records of kind "Z"`},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := &hostileDialer{h: h, behave: func(w io.Writer, req tailRequest) error {
				return writeSnapshotFrames(w, tailSnapshot{Index: req.After + 5000, Term: 1}, tc.snapshot, uint64(len(tc.snapshot)))
			}}
			f, before := stoppedOldFollower(t, c, h, fmt.Sprintf("oldsnap%d", i), d)
			st := f.TailStatus()
			for _, w := range []string{"this node (version v0.9.0) is older than the cluster", "the snapshot at index", tc.want, "upgrade it"} {
				if !strings.Contains(st.Stopped, w) {
					t.Errorf("stopped = %q, want it to say %q", st.Stopped, w)
				}
			}
			if got := f.AppliedIndex(); got != before || st.Snapshots != 0 {
				t.Errorf("after the newer snapshot: applied %d (want %d, unchanged), %d snapshots restored (want 0)", got, before, st.Snapshots)
			}
			if _, err := f.ResolveTag("evil", "pwned"); err == nil {
				t.Error("the follower restored the newer snapshot")
			}
		})
	}
}

// stoppedOldFollower opens a follower of release v0.9.0, lets it catch up
// from the members, then has it tail d first (evilFirst), and waits until
// its tail stops; before is what it had applied then.
func stoppedOldFollower(t *testing.T, c *testCluster, h *tailHarness, id string, d TailDialer) (f *Store, before uint64) {
	t.Helper()
	f = h.open(id, func(cfg *Config) { cfg.TailDialer, cfg.TailPrefer, cfg.Version = d, evilFirst, "v0.9.0" })
	t.Cleanup(func() { h.stop(id) })
	if err := f.Follow(h.members()); err != nil {
		t.Fatal(err)
	}
	h.caughtUp(f)
	f.StopFollowing()
	before = f.AppliedIndex()
	if err := f.Follow(append([]Server{{ID: "evil", Address: "evil"}}, h.members()...)); err != nil {
		t.Fatal(err)
	}
	c.eventually(10*time.Second, "the tail stops", func() bool { return f.TailStatus().Stopped != "" })
	return f, before
}
