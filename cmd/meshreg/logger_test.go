package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestServeLoggerCollapsesRepeats: the logger serve builds writes a
// repeating error once (its summary comes later), every INFO line, and
// the pending summary when its Run ends.
func TestServeLoggerCollapsesRepeats(t *testing.T) {
	var buf bytes.Buffer
	log, repeats := newLogger(serveConfig{LogLevel: slog.LevelInfo, LogFormat: "json"}, &buf)
	for range 100 {
		log.Error("failed to heartbeat to", "subsystem", "raft", "peer", "12D3KooWx", "error", "dial backoff")
	}
	for range 3 {
		log.Info("manifest pushed", "repository", "app", "reference", "v1")
	}
	log.Info("shutting down", "timeout", 30*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	repeats.Run(ctx) // returns at once, writing what is pending
	var msgs []string
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not JSON: %s", l)
		}
		msgs = append(msgs, m["msg"].(string))
		if m["msg"] == "shutting down" && m["timeout"] != "30s" {
			t.Errorf("a duration in JSON logs is %#v, want \"30s\"", m["timeout"])
		}
	}
	want := []string{"failed to heartbeat to", "manifest pushed", "manifest pushed", "manifest pushed", "shutting down",
		"failed to heartbeat to (repeated 99 times in 0s)"}
	if strings.Join(msgs, "|") != strings.Join(want, "|") {
		t.Errorf("logged %q, want %q", msgs, want)
	}
}
