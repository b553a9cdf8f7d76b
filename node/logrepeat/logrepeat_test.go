package logrepeat

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a test clock moved by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// syncBuffer is a bytes.Buffer safe for a handler and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := strings.Split(strings.TrimSpace(s.b.String()), "\n")
	if len(out) == 1 && out[0] == "" {
		return nil
	}
	return out
}

func newTest(t *testing.T, opts Options) (*slog.Logger, *Handler, *syncBuffer, *clock) {
	t.Helper()
	buf := &syncBuffer{}
	c := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	opts.Now = c.Now
	h := New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}), opts)
	return slog.New(h), h, buf, c
}

func TestRepeatsCollapseToFirstAndOneSummaryPerInterval(t *testing.T) {
	opts := DefaultOptions()
	log, h, buf, c := newTest(t, opts)
	// What an unreachable member caused: 235 errors in 61 s, their error
	// texts and backoff times all different.
	for i := range 235 {
		log.Error("failed to heartbeat to", "subsystem", "raft", "peer", "12D3KooWpeer", "backoff time", i, "error", fmt.Sprintf("dial attempt %d failed", i))
		c.advance(260 * time.Millisecond)
	}
	lines := buf.lines()
	if len(lines) != 2 {
		t.Fatalf("235 repeats in 61 s wrote %d lines, want the first and one summary:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	if !strings.Contains(lines[0], `msg="failed to heartbeat to"`) || !strings.Contains(lines[0], `error="dial attempt 0 failed"`) {
		t.Errorf("first line is not the first record: %s", lines[0])
	}
	if !strings.Contains(lines[1], `msg="failed to heartbeat to (repeated 231 times in 1m0s)"`) || !strings.Contains(lines[1], "repeated=231") ||
		!strings.Contains(lines[1], "peer=12D3KooWpeer") {
		t.Errorf("second line is not a summary of 231 repeats: %s", lines[1])
	}
	// The three repeats since are reported when flushed.
	h.Flush(context.Background(), true)
	lines = buf.lines()
	if len(lines) != 3 || !strings.Contains(lines[2], "(repeated 3 times in 1s)") {
		t.Errorf("flush wrote %q, want a summary of 3 repeats", lines[2:])
	}
	// After a quiet interval the record is news again.
	c.advance(2 * time.Minute)
	log.Error("failed to heartbeat to", "subsystem", "raft", "peer", "12D3KooWpeer", "error", "again")
	if lines = buf.lines(); len(lines) != 4 || !strings.Contains(lines[3], `error=again`) || strings.Contains(lines[3], "repeated") {
		t.Errorf("after a quiet interval: %q, want the record itself", lines[3:])
	}
}

func TestDistinctRecordsPass(t *testing.T) {
	log, _, buf, _ := newTest(t, DefaultOptions())
	for range 3 {
		log.Error("failed to appendEntries to", "peer", "A", "error", "x")
		log.Error("failed to appendEntries to", "peer", "B", "error", "x") // another peer
		log.Error("failed to heartbeat to", "peer", "A")                   // another message
		log.Warn("failed to appendEntries to", "peer", "A")                // another level
		log.With("component", "api").Error("failed to appendEntries to", "peer", "A", "error", "x")
		log.WithGroup("g").Error("failed to appendEntries to", "peer", "A", "error", "x")
	}
	if lines := buf.lines(); len(lines) != 6 {
		t.Errorf("6 distinct records 3 times each wrote %d lines, want 6:\n%s", len(lines), strings.Join(lines, "\n"))
	}
}

func TestBelowLevelIsNeverHeldBack(t *testing.T) {
	log, _, buf, _ := newTest(t, DefaultOptions())
	for range 100 {
		log.Info("manifest pushed", "repository", "library/alpine", "reference", "latest")
		log.Debug("replica copy", "peer", "A")
	}
	if lines := buf.lines(); len(lines) != 200 {
		t.Errorf("100 INFO and 100 DEBUG records wrote %d lines, want all 200", len(lines))
	}
}

func TestMemoryIsBounded(t *testing.T) {
	opts := DefaultOptions()
	opts.MaxKeys = 8
	log, h, buf, _ := newTest(t, opts)
	log.Error("flapping", "peer", "P0")
	log.Error("flapping", "peer", "P0") // held back
	for i := range 1000 {
		log.Error("failed", "peer", fmt.Sprintf("P%d", i), "error", strings.Repeat("e", 1000))
		if n := h.tracked(); n > opts.MaxKeys {
			t.Fatalf("after %d kinds %d are tracked, want at most %d", i+1, n, opts.MaxKeys)
		}
	}
	lines := buf.lines()
	// 1 + 1000 distinct records, and the summary of P0's repeat when it
	// was forgotten.
	if len(lines) != 1002 {
		t.Fatalf("wrote %d lines, want 1002", len(lines))
	}
	summaries := 0
	for _, l := range lines {
		if strings.Contains(l, `msg="flapping (repeated 1 times in 0s)"`) {
			summaries++
		}
	}
	if summaries != 1 {
		t.Errorf("a forgotten kind's pending repeat was reported %d times, want once", summaries)
	}
	// P0 was forgotten: it passes again.
	log.Error("flapping", "peer", "P0")
	if lines := buf.lines(); !strings.Contains(lines[len(lines)-1], `msg=flapping peer=P0`) {
		t.Errorf("a forgotten kind is not written again: %s", lines[len(lines)-1])
	}
}

func TestRunWritesPendingSummaries(t *testing.T) {
	buf := &syncBuffer{}
	opts := DefaultOptions()
	opts.Interval = 50 * time.Millisecond
	h := New(slog.NewTextHandler(buf, nil), opts)
	log := slog.New(h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.Run(ctx) }()
	for range 10 {
		log.Error("member unreachable", "peer", "A")
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(buf.lines()) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	lines := buf.lines()
	if len(lines) != 2 || !strings.Contains(lines[1], "(repeated 9 times in") {
		t.Errorf("Run wrote %q, want the first record and a summary of 9 repeats", lines)
	}
	log.Error("member unreachable", "peer", "A")
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return when its context ended")
	}
	if lines := buf.lines(); len(lines) != 3 || !strings.Contains(lines[2], "(repeated 1 times in") {
		t.Errorf("Run did not flush at its end: %q", lines)
	}
}

func TestConcurrentRepeatsAreCountedOnce(t *testing.T) {
	log, h, buf, _ := newTest(t, DefaultOptions())
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 500 {
				log.Error("failed to appendEntries to", "peer", "A")
			}
		})
	}
	wg.Wait()
	h.Flush(context.Background(), true)
	lines := buf.lines()
	if len(lines) != 2 || !strings.Contains(lines[1], "(repeated 3999 times in 0s)") {
		t.Errorf("8×500 concurrent repeats wrote %q, want the first and a summary of 3999", lines)
	}
}
