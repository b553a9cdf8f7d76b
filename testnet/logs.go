package testnet

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshreg/meshreg/node"
)

// StartInProcessClusterLogged is StartInProcessCluster with node i logging
// to logs(i), so that a test can check what a node logs.
func StartInProcessClusterLogged(t testing.TB, size int, tweak func(i int, c *node.Config), logs func(i int) *slog.Logger) []*InProcessNode {
	t.Helper()
	return startInProcessCluster(t, size, tweak, logs, nil)
}

// LogLine is one record a LogRecorder kept: its time, level, message and
// attributes (the logger's own included), each value as text.
type LogLine struct {
	Time  time.Time
	Level slog.Level
	Msg   string
	Attrs map[string]string
}

func (l LogLine) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %q", l.Time.Format("15:04:05.000"), l.Level, l.Msg)
	for k, v := range l.Attrs {
		fmt.Fprintf(&b, " %s=%q", k, v)
	}
	return b.String()
}

// LogRecorder is a slog.Handler that keeps every record at its level and
// above, for a test to inspect (bounded: it keeps the first max records).
type LogRecorder struct {
	level slog.Level
	attrs []slog.Attr
	r     *recorded
}

type recorded struct {
	mu    sync.Mutex
	max   int
	lines []LogLine
}

var _ slog.Handler = (*LogRecorder)(nil)

// NewLogRecorder keeps up to max records at level and above.
func NewLogRecorder(level slog.Level, max int) *LogRecorder {
	return &LogRecorder{level: level, r: &recorded{max: max}}
}

// Enabled reports whether level is kept.
func (h *LogRecorder) Enabled(_ context.Context, level slog.Level) bool { return level >= h.level }

// Handle keeps r.
func (h *LogRecorder) Handle(_ context.Context, r slog.Record) error {
	line := LogLine{Time: r.Time, Level: r.Level, Msg: r.Message, Attrs: map[string]string{}}
	for _, a := range h.attrs {
		line.Attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool { line.Attrs[a.Key] = a.Value.String(); return true })
	h.r.mu.Lock()
	defer h.r.mu.Unlock()
	if len(h.r.lines) < h.r.max {
		h.r.lines = append(h.r.lines, line)
	}
	return nil
}

// WithAttrs returns a recorder whose records carry as.
func (h *LogRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &LogRecorder{level: h.level, attrs: append(append([]slog.Attr{}, h.attrs...), as...), r: h.r}
}

// WithGroup is not needed by meshreg's logs: attributes stay flat.
func (h *LogRecorder) WithGroup(string) slog.Handler { return h }

// Lines returns the records kept so far that match keep (all if nil).
func (h *LogRecorder) Lines(keep func(LogLine) bool) []LogLine {
	h.r.mu.Lock()
	defer h.r.mu.Unlock()
	var out []LogLine
	for _, l := range h.r.lines {
		if keep == nil || keep(l) {
			out = append(out, l)
		}
	}
	return out
}

// Tee is a slog.Handler that passes every record to each of hs.
type Tee []slog.Handler

var _ slog.Handler = Tee(nil)

// Enabled reports whether any of the handlers takes level.
func (t Tee) Enabled(ctx context.Context, level slog.Level) bool {
	for _, h := range t {
		if h.Enabled(ctx, level) {
			return true
		}
	}
	return false
}

// Handle passes r to each handler that takes its level.
func (t Tee) Handle(ctx context.Context, r slog.Record) error {
	for _, h := range t {
		if h.Enabled(ctx, r.Level) {
			_ = h.Handle(ctx, r.Clone())
		}
	}
	return nil
}

// WithAttrs adds as to every handler.
func (t Tee) WithAttrs(as []slog.Attr) slog.Handler {
	out := make(Tee, len(t))
	for i, h := range t {
		out[i] = h.WithAttrs(as)
	}
	return out
}

// WithGroup opens the group in every handler.
func (t Tee) WithGroup(name string) slog.Handler {
	out := make(Tee, len(t))
	for i, h := range t {
		out[i] = h.WithGroup(name)
	}
	return out
}
