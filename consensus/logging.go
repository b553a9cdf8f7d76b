package consensus

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/go-hclog"
)

// openBadger opens (creating if needed) a badger database in dir whose log
// goes to logger at warning level and above. sync makes every commit durable
// before it returns.
func openBadger(dir string, sync bool, logger *slog.Logger) (*badger.DB, error) {
	opts := badger.DefaultOptions(dir).
		WithSyncWrites(sync).
		WithLogger(badgerLogger{logger}).
		WithNumCompactors(2).
		// Registry metadata is small (manifests are at most a few MiB, and
		// most entries are tens of bytes), while badger's defaults are sized
		// for large stores: 64 MiB memtables, five of them, a 256 MiB block
		// cache. Smaller ones keep an idle node's memory low; compaction
		// and reads stay fast at this scale.
		WithMemTableSize(16 << 20).
		WithNumMemtables(2).
		WithBlockCacheSize(16 << 20).
		WithIndexCacheSize(8 << 20).
		WithValueLogFileSize(256 << 20).
		// One writer per database (raft's goroutines for the log, the FSM
		// goroutine for the state), so conflict detection buys nothing.
		WithDetectConflicts(false)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("consensus: opening badger in %s: %w", dir, err)
	}
	return db, nil
}

// badgerLogger routes badger's warnings and errors to slog; its info and
// debug chatter is dropped.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	b.l.Error(strings.TrimSpace(fmt.Sprintf(f, a...)), "subsystem", "badger")
}

func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Warn(strings.TrimSpace(fmt.Sprintf(f, a...)), "subsystem", "badger")
}
func (badgerLogger) Infof(string, ...any)  {}
func (badgerLogger) Debugf(string, ...any) {}

// hclogAdapter is an hclog.Logger that writes to slog, so raft's logs join
// the node's, with the logger's name as the subsystem attribute. hclog's
// key/value arguments become slog attributes rendered as text (see
// renderValue); levels map one to one (Trace becomes Debug-4), except the
// benign warnings of quietWarnings, which are DEBUG.
type hclogAdapter struct {
	l    *slog.Logger
	name string
	args []any
}

var _ hclog.Logger = (*hclogAdapter)(nil)

func newHclog(l *slog.Logger, name string) *hclogAdapter {
	return &hclogAdapter{l: l, name: name}
}

func slogLevel(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

func (h *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.Off {
		return
	}
	lv := slogLevel(level)
	if lv == slog.LevelWarn && quietWarning(msg, args) {
		lv = slog.LevelDebug
	}
	ctx := context.Background()
	if !h.l.Enabled(ctx, lv) {
		return
	}
	attrs := make([]slog.Attr, 0, 1+(len(h.args)+len(args)+1)/2)
	attrs = append(attrs, slog.String("subsystem", h.name))
	attrs = appendArgs(attrs, h.args)
	attrs = appendArgs(attrs, args)
	h.l.LogAttrs(ctx, lv, msg, attrs...)
}

// appendArgs appends hclog's key/value arguments as slog attributes: a
// key that is not a string is printed (slog would write !BADKEY), a
// value left without a key is EXTRA_VALUE_AT_END (as hclog does), and
// every value goes through renderValue.
func appendArgs(attrs []slog.Attr, args []any) []slog.Attr {
	for i := 0; i < len(args); i += 2 {
		if i+1 == len(args) {
			attrs = append(attrs, slog.Any("EXTRA_VALUE_AT_END", renderValue(args[i])))
			break
		}
		key, ok := args[i].(string)
		if !ok {
			key = fmt.Sprint(args[i])
		}
		attrs = append(attrs, slog.Any(key, renderValue(args[i+1])))
	}
	return attrs
}

// renderValue turns a value raft logs into one that reads the same in text
// and JSON logs: numbers, booleans, strings, durations and times stay as
// they are; an hclog.Fmt is formatted; an error is its text; anything else
// (raft's *Raft, Server, ServerAddress, ...) is its String() or %+v.
// slog's JSON handler would otherwise marshal a struct's exported fields:
// raft's node printed as {"RestoreCommittedLogs":false}.
func renderValue(v any) any {
	switch x := v.(type) {
	case nil, string, bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64,
		float32, float64, time.Duration, time.Time:
		return v
	case hclog.Format:
		if len(x) > 0 {
			if format, ok := x[0].(string); ok {
				return fmt.Sprintf(format, x[1:]...)
			}
		}
		return fmt.Sprint([]any(x)...)
	case error:
		return x.Error()
	case fmt.Stringer:
		return x.String()
	}
	return fmt.Sprintf("%+v", v)
}

// quietWarnings are the warnings raft prints in the normal course of a
// start, a join or a follower's catch-up. They are written at DEBUG, so
// that a healthy cluster's start-up shows no WARN, while the same message
// in a situation that means trouble (when is set and says no) stays WARN.
var quietWarnings = []struct {
	prefix string
	when   func(args []any) bool // nil: always
	why    string
}{
	{"no known peers, aborting election", nil,
		"a node started without a cluster waits to be bootstrapped or to join; the node logs that wait itself"},
	{"heartbeat timeout reached, not part of a stable configuration or a non-voter", nil,
		"a node that just joined is a non-voter until promoted: it has no election to start"},
	{"heartbeat timeout reached, starting election", noLastLeader,
		"the first election of a starting cluster: there was no leader to lose (with one, it stays WARN)"},
	{"failed to get previous log", followerBehind,
		"a new or restarted follower lacks the leader's recent entries; the leader sends older ones next " +
			"(a missing entry below the follower's last index is a hole in its log and stays WARN)"},
	{"appendEntries rejected, sending older logs", nil,
		"the leader's side of a follower's catch-up, the step after the one above"},
}

func quietWarning(msg string, args []any) bool {
	for _, q := range quietWarnings {
		if strings.HasPrefix(msg, q.prefix) {
			return q.when == nil || q.when(args)
		}
	}
	return false
}

// argValue is the value of key in hclog's key/value args, or nil.
func argValue(args []any, key string) any {
	for i := 0; i+1 < len(args); i += 2 {
		if k, ok := args[i].(string); ok && k == key {
			return args[i+1]
		}
	}
	return nil
}

func noLastLeader(args []any) bool {
	v := argValue(args, "last-leader-addr")
	return v == nil || fmt.Sprint(v) == ""
}

func followerBehind(args []any) bool {
	prev, ok1 := argValue(args, "previous-index").(uint64)
	last, ok2 := argValue(args, "last-index").(uint64)
	return ok1 && ok2 && prev > last
}

func (h *hclogAdapter) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *hclogAdapter) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *hclogAdapter) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *hclogAdapter) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *hclogAdapter) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }

func (h *hclogAdapter) enabled(level hclog.Level) bool {
	return h.l.Enabled(context.Background(), slogLevel(level))
}
func (h *hclogAdapter) IsTrace() bool { return h.enabled(hclog.Trace) }
func (h *hclogAdapter) IsDebug() bool { return h.enabled(hclog.Debug) }
func (h *hclogAdapter) IsInfo() bool  { return h.enabled(hclog.Info) }
func (h *hclogAdapter) IsWarn() bool  { return h.enabled(hclog.Warn) }
func (h *hclogAdapter) IsError() bool { return h.enabled(hclog.Error) }

func (h *hclogAdapter) ImpliedArgs() []any { return h.args }

func (h *hclogAdapter) With(args ...any) hclog.Logger {
	return &hclogAdapter{l: h.l, name: h.name, args: append(append([]any{}, h.args...), args...)}
}

func (h *hclogAdapter) Name() string { return h.name }

func (h *hclogAdapter) Named(name string) hclog.Logger {
	if h.name != "" {
		name = h.name + "." + name
	}
	return &hclogAdapter{l: h.l, name: name, args: h.args}
}

func (h *hclogAdapter) ResetNamed(name string) hclog.Logger {
	return &hclogAdapter{l: h.l, name: name, args: h.args}
}

// SetLevel does nothing: the slog handler decides what is written.
func (h *hclogAdapter) SetLevel(hclog.Level) {}

func (h *hclogAdapter) GetLevel() hclog.Level {
	for _, lv := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn} {
		if h.enabled(lv) {
			return lv
		}
	}
	return hclog.Error
}

func (h *hclogAdapter) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return slog.NewLogLogger(h.l.With("subsystem", h.name).Handler(), slog.LevelInfo)
}

func (h *hclogAdapter) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	return h.StandardLogger(opts).Writer()
}
