// Package logrepeat keeps one failing thing from flooding the log: a
// slog.Handler wrapper that writes the first record of a kind (its level,
// message, the logger's attributes and a few key attributes such as the
// peer) and then, while that record keeps repeating, at most one summary
// line per interval ("… (repeated 234 times in 1m0s)") instead of every
// repeat.
//
// A member that went away makes Raft, libp2p and the node's own loops log
// the same error for it several times a second; with this wrapper an
// operator reads one line when it starts and one a minute while it lasts.
// Records below the limited level (INFO: one line per accepted write) are
// never held back.
package logrepeat

import (
	"container/list"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// Options configure a Handler.
type Options struct {
	// Interval is the most often one kind of record is written: its first
	// occurrence passes, its repeats are counted, and one summary line per
	// Interval reports them.
	Interval time.Duration
	// MaxKeys bounds the kinds of records remembered. When a new one
	// arrives with MaxKeys remembered, the least recently seen is forgotten
	// (its pending count written as a summary first).
	MaxKeys int
	// Level is the lowest level limited; records below it all pass.
	Level slog.Level
	// KeyAttrs name the record attributes whose values tell records with
	// the same message apart: the same error about two peers is two kinds.
	// Other attributes (an error text, a backoff time) are not part of the
	// kind, so repeats that differ only there are counted together.
	KeyAttrs []string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Default values of Options.
const (
	DefaultInterval = time.Minute
	DefaultMaxKeys  = 1024
	// maxKeyPart bounds each part of a key (a message, an attribute value),
	// so that MaxKeys bounds the memory held, not only the count.
	maxKeyPart = 256
)

// DefaultKeyAttrs are the attributes meshreg's and Raft's logs name a
// peer, a member or a join target with, the subsystem (raft, badger) that
// logged, the blob a failure is about and the OCI error code of a failed
// request: the same failure about another peer or blob is news, not a
// repeat.
var DefaultKeyAttrs = []string{"peer", "server-id", "member", "target", "via", "from", "subsystem", "component", "digest", "code"}

// DefaultOptions limits WARN and ERROR records to one summary a minute per
// kind, remembering at most DefaultMaxKeys kinds.
func DefaultOptions() Options {
	return Options{Interval: DefaultInterval, MaxKeys: DefaultMaxKeys, Level: slog.LevelWarn, KeyAttrs: DefaultKeyAttrs}
}

// Handler is the wrapper. Handlers made by WithAttrs and WithGroup share
// their parent's memory of what was seen.
type Handler struct {
	next  slog.Handler
	scope string // the attributes and groups added by With*, as text
	s     *state
}

var _ slog.Handler = (*Handler)(nil)

// New wraps next. Zero fields of opts take their DefaultOptions values
// (Level's zero is INFO, so set it explicitly; DefaultOptions does).
// Call Run to have pending summaries written when a record stops
// repeating.
func New(next slog.Handler, opts Options) *Handler {
	def := DefaultOptions()
	if opts.Interval <= 0 {
		opts.Interval = def.Interval
	}
	if opts.MaxKeys <= 0 {
		opts.MaxKeys = def.MaxKeys
	}
	if opts.KeyAttrs == nil {
		opts.KeyAttrs = def.KeyAttrs
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Handler{next: next, s: &state{opts: opts, entries: map[string]*list.Element{}, order: list.New()}}
}

// state is what the handlers of one New remember: a bounded LRU of kinds.
type state struct {
	opts Options

	mu      sync.Mutex
	entries map[string]*list.Element // of *entry
	order   *list.List               // front: most recently seen
}

// entry is one kind of record.
type entry struct {
	key   string
	start time.Time   // when the current window began
	count int         // repeats held back in the window
	last  slog.Record // the last repeat held back (for the summary)
	next  slog.Handler
}

// Enabled reports whether next takes records at level.
func (h *Handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// WithAttrs returns a Handler whose records carry as; they are part of
// the kind of its records.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.scope)
	for _, a := range as {
		b.WriteString(clip(a.String()))
		b.WriteByte(' ')
	}
	return &Handler{next: h.next.WithAttrs(as), scope: b.String(), s: h.s}
}

// WithGroup returns a Handler that nests the attributes that follow in name.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name), scope: h.scope + clip(name) + "{ ", s: h.s}
}

// Handle writes r, or counts it as a repeat of a record written less than
// Interval ago.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < h.s.opts.Level {
		return h.next.Handle(ctx, r)
	}
	key := h.key(r)
	now := h.s.opts.Now()
	s := h.s
	s.mu.Lock()
	el, ok := s.entries[key]
	if !ok {
		evicted := s.add(&entry{key: key, start: now, next: h.next})
		s.mu.Unlock()
		if evicted != nil {
			_ = evicted.next.Handle(ctx, summary(evicted.last, evicted.count, now.Sub(evicted.start), now))
		}
		return h.next.Handle(ctx, r)
	}
	s.order.MoveToFront(el)
	e := el.Value.(*entry)
	since := now.Sub(e.start)
	if since < s.opts.Interval {
		e.count++
		e.last = r.Clone()
		e.next = h.next
		s.mu.Unlock()
		return nil
	}
	// The window is over: this record starts the next one. Written as a
	// summary of the repeats held back (itself included), or as itself
	// after a quiet window.
	count := e.count
	e.start, e.count, e.last = now, 0, slog.Record{}
	s.mu.Unlock()
	if count == 0 {
		return h.next.Handle(ctx, r)
	}
	return h.next.Handle(ctx, summary(r, count+1, since, now))
}

// add remembers e, forgetting the least recently seen kind when full; it
// returns the forgotten entry if it had repeats not yet reported. The
// caller holds mu.
func (s *state) add(e *entry) *entry {
	var evicted *entry
	if s.order.Len() >= s.opts.MaxKeys {
		old := s.order.Back()
		s.order.Remove(old)
		oe := old.Value.(*entry)
		delete(s.entries, oe.key)
		if oe.count > 0 {
			evicted = oe
		}
	}
	s.entries[e.key] = s.order.PushFront(e)
	return evicted
}

// key is the kind of r: the level, the message, the handler's attributes
// and the values of the KeyAttrs r carries.
func (h *Handler) key(r slog.Record) string {
	var b strings.Builder
	b.WriteString(r.Level.String())
	b.WriteByte(0)
	b.WriteString(clip(r.Message))
	b.WriteByte(0)
	b.WriteString(h.scope)
	r.Attrs(func(a slog.Attr) bool {
		if slices.Contains(h.s.opts.KeyAttrs, a.Key) {
			b.WriteByte(0)
			b.WriteString(a.Key)
			b.WriteByte('=')
			b.WriteString(clip(a.Value.String()))
		}
		return true
	})
	return b.String()
}

func clip(s string) string {
	if len(s) > maxKeyPart {
		return s[:maxKeyPart]
	}
	return s
}

// summary is the line that reports count occurrences of r's kind over
// since: r's message and attributes with "(repeated N times in D)".
func summary(r slog.Record, count int, since time.Duration, now time.Time) slog.Record {
	msg := fmt.Sprintf("%s (repeated %d times in %s)", r.Message, count, since.Round(time.Second))
	out := slog.NewRecord(now, r.Level, msg, r.PC)
	r.Attrs(func(a slog.Attr) bool { out.AddAttrs(a); return true })
	out.AddAttrs(slog.Int("repeated", count), slog.Duration("repeated_over", since.Round(time.Millisecond)))
	return out
}

// Flush writes a summary of every kind whose repeats were held back for
// at least Interval (all of them if all is set) and starts its next
// window.
func (h *Handler) Flush(ctx context.Context, all bool) {
	now := h.s.opts.Now()
	type pending struct {
		next  slog.Handler
		r     slog.Record
		count int
		since time.Duration
	}
	var out []pending
	h.s.mu.Lock()
	for el := h.s.order.Front(); el != nil; el = el.Next() {
		e := el.Value.(*entry)
		since := now.Sub(e.start)
		if e.count == 0 || (!all && since < h.s.opts.Interval) {
			continue
		}
		out = append(out, pending{e.next, e.last, e.count, since})
		e.start, e.count, e.last = now, 0, slog.Record{}
	}
	h.s.mu.Unlock()
	for _, p := range out {
		_ = p.next.Handle(ctx, summary(p.r, p.count, p.since, now))
	}
}

// Run writes the summaries of kinds that stopped repeating, every
// Interval, until ctx ends; then it writes those still pending.
func (h *Handler) Run(ctx context.Context) {
	t := time.NewTicker(h.s.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			h.Flush(context.Background(), true)
			return
		case <-t.C:
			h.Flush(ctx, false)
		}
	}
}

// tracked is how many kinds are remembered (for tests).
func (h *Handler) tracked() int {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	return len(h.s.entries)
}
