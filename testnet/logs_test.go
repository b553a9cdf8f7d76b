package testnet_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/node/logrepeat"
	"github.com/meshreg/meshreg/testnet"
	"github.com/meshreg/meshreg/testnet/tlog"
)

// TestUnreachableMemberLogsAFewErrors stops one member of three and counts
// the ERROR lines the two others write about it over 20 s, before and
// after the repeat limiter serve puts in front of every log (here with a
// 10 s interval instead of a minute): Raft alone writes dozens, the
// limiter lets a handful through.
func TestUnreachableMemberLogsAFewErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	const interval = 10 * time.Second
	var raw, limited []*testnet.LogRecorder
	var repeats []*logrepeat.Handler
	logs := func(i int) *slog.Logger {
		r := testnet.NewLogRecorder(slog.LevelError, 100000)
		l := testnet.NewLogRecorder(slog.LevelWarn, 100000)
		opts := logrepeat.DefaultOptions()
		opts.Interval = interval
		rep := logrepeat.New(testnet.Tee{l, slog.NewTextHandler(tlog.Writer{T: t}, &slog.HandlerOptions{Level: slog.LevelWarn})}, opts)
		raw, limited, repeats = append(raw, r), append(limited, l), append(repeats, rep)
		return slog.New(testnet.Tee{r, rep})
	}
	nodes := testnet.StartInProcessClusterLogged(t, 3, nil, logs)
	ctx := t.Context()
	// Stop a member that is not the leader (the survivors keep a leader,
	// which keeps trying to reach the member).
	victim := -1
	for i, n := range nodes {
		if st, err := n.Status(ctx); err == nil && st.Raft.State != "Leader" {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatal("no follower found")
	}
	nodes[victim].Stop()
	stopped := time.Now()
	const window = 20 * time.Second
	select {
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	case <-time.After(window):
	}
	end := time.Now()
	inWindow := func(l testnet.LogLine) bool {
		return l.Level >= slog.LevelError && !l.Time.Before(stopped) && l.Time.Before(end)
	}
	var rawCount, limitedCount int
	var shown []string
	for i := range nodes {
		if i == victim {
			continue
		}
		rawCount += len(raw[i].Lines(inWindow))
		for _, l := range limited[i].Lines(inWindow) {
			limitedCount++
			shown = append(shown, l.String())
		}
	}
	t.Logf("ERROR lines in %s after a member stopped: %d written by the nodes, %d after the repeat limiter (interval %s)",
		window, rawCount, limitedCount, interval)
	if rawCount < 20 {
		t.Errorf("only %d ERROR lines before the limiter: the flood this test guards against did not happen", rawCount)
	}
	// Each kind of error: its first line, then one summary per interval.
	if limitedCount > 12 {
		t.Errorf("%d ERROR lines in %s after the limiter, want at most 12:\n%s", limitedCount, window, strings.Join(shown, "\n"))
	}
	// Nothing is dropped uncounted: once the nodes stopped and the
	// pending summaries are written, the lines after the limiter (a
	// summary counting its repeats) add up to every ERROR written.
	for i, n := range nodes {
		n.Stop()
		repeats[i].Flush(context.Background(), true)
	}
	errors := func(l testnet.LogLine) bool { return l.Level >= slog.LevelError }
	for i := range nodes {
		written, counted := len(raw[i].Lines(errors)), 0
		for _, l := range limited[i].Lines(errors) {
			n, err := strconv.Atoi(l.Attrs["repeated"])
			if err != nil {
				n = 1
			}
			counted += n
		}
		if counted != written {
			t.Errorf("node %d: %d ERROR records written, the limiter's lines account for %d", i, written, counted)
		}
	}
}

// TestReplicaCopiesLogApartFromClientPulls: the copy a node makes for
// --replicas logs "replica copy" at DEBUG (naming the peer, the digest and
// the bytes), not the INFO line of a blob fetched for a client, which a
// client pull from a node without the blob still writes.
func TestReplicaCopiesLogApartFromClientPulls(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	var recs []*testnet.LogRecorder
	logs := func(i int) *slog.Logger {
		r := testnet.NewLogRecorder(slog.LevelDebug, 100000)
		recs = append(recs, r)
		return slog.New(testnet.Tee{r, slog.NewTextHandler(tlog.Writer{T: t}, &slog.HandlerOptions{Level: slog.LevelWarn})})
	}
	nodes := testnet.StartInProcessClusterLogged(t, 3, nil, logs)
	ctx := t.Context()
	const repo = "e2e/replicalog"
	c0 := testnet.NewClient(nodes[0].URL())
	layer := make([]byte, 64<<10)
	for i := range layer {
		layer[i] = byte(i * 7)
	}
	ld, err := c0.PushBytes(ctx, repo, layer)
	if err != nil {
		t.Fatal(err)
	}
	manifest := smallImage(t, c0, repo)
	var m ocispec.Manifest
	if err := json.Unmarshal(manifest("v1"), &m); err != nil {
		t.Fatal(err)
	}
	m.Layers = []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayer, Digest: ld, Size: int64(len(layer))}}
	mb, _ := json.Marshal(m)
	if _, err := c0.PutManifest(ctx, repo, "v1", ocispec.MediaTypeImageManifest, mb); err != nil {
		t.Fatal(err)
	}
	about := func(msg string, level slog.Level) func(testnet.LogLine) bool {
		return func(l testnet.LogLine) bool {
			return l.Msg == msg && l.Level == level && l.Attrs["digest"] == ld.String()
		}
	}
	replica, other := -1, -1
	for i := 1; i < 3; i++ {
		if len(recs[i].Lines(about("replica copy", slog.LevelDebug))) > 0 {
			replica = i
		} else {
			other = i
		}
	}
	if replica < 0 || other < 0 {
		for i := 1; i < 3; i++ {
			for _, l := range recs[i].Lines(func(l testnet.LogLine) bool { return l.Attrs["digest"] == ld.String() }) {
				t.Logf("node %d: %s", i, l)
			}
		}
		t.Fatalf("want exactly one node to log a DEBUG \"replica copy\" of the layer (replica %d, other %d)", replica, other)
	}
	line := recs[replica].Lines(about("replica copy", slog.LevelDebug))[0]
	if line.Attrs["peer"] != nodes[0].PeerID().String() || line.Attrs["bytes"] != "65536" {
		t.Errorf("replica copy line %s: want peer=%s bytes=65536", line, nodes[0].PeerID())
	}
	if got := recs[replica].Lines(func(l testnet.LogLine) bool { return l.Level >= slog.LevelInfo && l.Attrs["digest"] == ld.String() }); len(got) > 0 {
		t.Errorf("the replica copy also logged at INFO: %v", got)
	}
	// A client pull from the node without the blob: an INFO line.
	if err := testnet.NewClient(nodes[other].URL()).VerifyBlob(ctx, repo, ld, int64(len(layer))); err != nil {
		t.Fatal(err)
	}
	if !testnet.Eventually(5*time.Second, func() bool {
		return len(recs[other].Lines(about("fetched blob", slog.LevelInfo))) == 1
	}) {
		t.Errorf("a client pull through node %d logged no INFO \"fetched blob\": %v", other,
			recs[other].Lines(func(l testnet.LogLine) bool { return l.Attrs["digest"] == ld.String() }))
	}
	if got := recs[other].Lines(about("replica copy", slog.LevelDebug)); len(got) > 0 {
		t.Errorf("a client pull logged as a replica copy: %v", got)
	}
}

// TestClusterStartAndJoinLogNoRaftWarnings: one node bootstraps, two join
// and catch up: Raft's messages for those normal steps ("heartbeat timeout
// reached" before the first leader, "failed to get previous log" and
// "appendEntries rejected" while a new member catches up) are DEBUG, so a
// healthy start shows no WARN from Raft.
func TestClusterStartAndJoinLogNoRaftWarnings(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	var recs []*testnet.LogRecorder
	logs := func(i int) *slog.Logger {
		r := testnet.NewLogRecorder(slog.LevelDebug, 100000)
		recs = append(recs, r)
		return slog.New(testnet.Tee{r, slog.NewTextHandler(tlog.Writer{T: t}, &slog.HandlerOptions{Level: slog.LevelWarn})})
	}
	testnet.StartInProcessClusterLogged(t, 3, nil, logs)
	quieted := 0
	for i, r := range recs {
		for _, l := range r.Lines(func(l testnet.LogLine) bool { return l.Attrs["subsystem"] == "raft" }) {
			switch {
			case l.Level >= slog.LevelWarn:
				t.Errorf("node %d: %s", i, l)
			case strings.HasPrefix(l.Msg, "appendEntries rejected") || strings.HasPrefix(l.Msg, "failed to get previous log"):
				quieted++
			}
		}
	}
	// The joiners did catch up through the quieted path: the test saw
	// what it is about.
	if quieted == 0 {
		t.Error("no catch-up message at DEBUG: the joiners did not go through the path this test checks")
	}
}
