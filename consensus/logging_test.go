package consensus

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// jsonLines decodes the JSON log lines in buf.
func jsonLines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON line: %s: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// TestHclogQuietsBenignRaftWarnings: the warnings Raft prints during a
// normal start, join and catch-up are DEBUG; the same messages in the
// situations where they mean trouble, and real warnings, stay WARN.
func TestHclogQuietsBenignRaftWarnings(t *testing.T) {
	tests := []struct {
		name string
		msg  string
		args []any
		want slog.Level
	}{
		{"no peers yet", "no known peers, aborting election", nil, slog.LevelDebug},
		{"first election", "heartbeat timeout reached, starting election",
			[]any{"last-leader-addr", raft.ServerAddress(""), "last-leader-id", raft.ServerID("")}, slog.LevelDebug},
		{"leader lost", "heartbeat timeout reached, starting election",
			[]any{"last-leader-addr", raft.ServerAddress("/ip4/10.0.0.1/tcp/4001/p2p/X"), "last-leader-id", raft.ServerID("X")}, slog.LevelWarn},
		{"joining non-voter", "heartbeat timeout reached, not part of a stable configuration or a non-voter, not triggering a leader election", nil, slog.LevelDebug},
		{"follower behind", "failed to get previous log",
			[]any{"previous-index", uint64(120), "last-index", uint64(3), "error", errors.New("log not found")}, slog.LevelDebug},
		{"hole in the log", "failed to get previous log",
			[]any{"previous-index", uint64(2), "last-index", uint64(3), "error", errors.New("log not found")}, slog.LevelWarn},
		{"leader catching a follower up", "appendEntries rejected, sending older logs", []any{"peer", raft.Server{ID: "X"}, "next", uint64(4)}, slog.LevelDebug},
		{"quorum lost", "failed to contact quorum of nodes, stepping down", nil, slog.LevelWarn},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			h := newHclog(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), "raft")
			h.Warn(tt.msg, tt.args...)
			lines := jsonLines(t, &buf)
			if len(lines) != 1 {
				t.Fatalf("wrote %d lines, want 1", len(lines))
			}
			if got := lines[0]["level"]; got != tt.want.String() {
				t.Errorf("level %v, want %v", got, tt.want)
			}
			// At the default level a quieted warning is not written at all.
			buf.Reset()
			h = newHclog(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})), "raft")
			h.Warn(tt.msg, tt.args...)
			if written := buf.Len() > 0; written != (tt.want >= slog.LevelInfo) {
				t.Errorf("at INFO written=%v, want %v: %s", written, !written, buf.String())
			}
		})
	}
}

// TestHclogRendersValuesAsText: Raft passes structs and its *Raft as
// values; JSON logs show what they print as (their String, or %+v), not
// their exported fields as a JSON object.
func TestHclogRendersValuesAsText(t *testing.T) {
	var buf bytes.Buffer
	h := newHclog(slog.New(slog.NewJSONHandler(&buf, nil)), "raft")
	r := &raft.Raft{}
	h.Info("entering follower state", "follower", r, "leader-address", raft.ServerAddress("a"), "leader-id", raft.ServerID("b"))
	h.Named("snapshots").Info("initial configuration", "servers", raft.Server{Suffrage: raft.Voter, ID: "n1", Address: "addr1"},
		"index", uint64(7), "error", errors.New("boom"), 42, "a non-string key", "odd")
	lines := jsonLines(t, &buf)
	if len(lines) != 2 {
		t.Fatalf("wrote %d lines, want 2", len(lines))
	}
	want := map[string]any{"subsystem": "raft", "follower": r.String(), "leader-address": "a", "leader-id": "b"}
	for k, v := range want {
		if lines[0][k] != v {
			t.Errorf("%s = %#v, want %#v", k, lines[0][k], v)
		}
	}
	want = map[string]any{"subsystem": "raft.snapshots", "servers": "{Suffrage:Voter ID:n1 Address:addr1}", "index": float64(7),
		"error": "boom", "42": "a non-string key", "EXTRA_VALUE_AT_END": "odd"}
	for k, v := range want {
		if lines[1][k] != v {
			t.Errorf("%s = %#v, want %#v", k, lines[1][k], v)
		}
	}
	_ = hclog.Fmt // hclog.Fmt values are formatted: see Log
}
