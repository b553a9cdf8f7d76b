package testnet_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

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
		repeats[i].Flush(context.Background(), true)
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
}
