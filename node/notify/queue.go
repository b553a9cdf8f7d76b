package notify

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// queue is one endpoint's undelivered events, oldest first, kept on disk
// so they survive a restart:
//
//	<data dir>/notifications/<endpoint name>/
//	├── events.log   one record a line, {"seq":N,"event":{…}}, appended and fsynced per event
//	└── acked        the highest seq delivered or dropped, replaced atomically (rename)
//
// Records at or below acked are dead: skipped when the log is read, and
// dropped from the file when it is emptied (nothing pending) or rewritten
// (dead records are most of it). A crash in the middle of an append
// leaves a torn last line, cut off when the queue is opened again.
//
// At most max events are pending; pushing one more drops the oldest. Its
// methods may be called concurrently.
type queue struct {
	dir string

	mu      sync.Mutex
	max     int
	f       *os.File // events.log, append only
	size    int64    // of events.log, to undo a failed append
	pending []record
	acked   uint64 // highest seq delivered or dropped
	next    uint64 // seq of the next event pushed
	dead    int    // records in events.log at or below acked
	compact int    // dead records that make a rewrite (compactAfter; tests lower it)
	wake    chan struct{}
}

type record struct {
	Seq   uint64          `json:"seq"`
	Event json.RawMessage `json:"event"`
}

const (
	logName   = "events.log"
	ackedName = "acked"
	// maxRecord bounds one line read back (events are a few hundred
	// bytes; fields a client chooses are clipped to maxField).
	maxRecord = 64 << 10
	// compactAfter is how many dead records a log keeps at least before
	// it is rewritten without them.
	compactAfter = 4096
	// maxSeq bounds sequence numbers read back: a damaged file must not
	// make the next one wrap around (a million events a second take
	// 146,000 years to reach it).
	maxSeq = 1 << 62
)

// openQueue opens (or creates) the queue in dir, keeping at most max
// events. It returns how many unreadable records it skipped (a damaged
// file; a torn last line is not counted) and how many old events it
// dropped to fit max.
func openQueue(dir string, max int) (q *queue, skipped, dropped int, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, 0, 0, fmt.Errorf("creating the notification queue %s: %w", dir, err)
	}
	q = &queue{dir: dir, max: max, wake: make(chan struct{}, 1), compact: compactAfter}
	if b, err := os.ReadFile(filepath.Join(dir, ackedName)); err == nil {
		if q.acked, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && q.acked >= maxSeq {
			err = errors.New("sequence number out of range")
		}
		if err != nil {
			return nil, 0, 0, fmt.Errorf("notification queue %s: %s is damaged (%v): delete it to send every queued event again", dir, ackedName, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, 0, 0, fmt.Errorf("reading the notification queue %s: %w", dir, err)
	}
	q.next = q.acked + 1
	path := filepath.Join(dir, logName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600) // appends land at the end, after a Truncate too
	if err != nil {
		return nil, 0, 0, fmt.Errorf("opening the notification queue %s: %w", path, err)
	}
	good, skipped, err := q.load(f)
	if err == nil {
		err = f.Truncate(good) // a torn last line
	}
	if err != nil {
		f.Close()
		return nil, 0, 0, fmt.Errorf("reading the notification queue %s: %w", path, err)
	}
	q.f, q.size = f, good
	dropped, err = q.trim()
	if err != nil {
		f.Close()
		return nil, 0, 0, err
	}
	return q, skipped, dropped, nil
}

// load reads the log, keeping records above acked, and returns the
// length of its complete lines.
func (q *queue) load(f *os.File) (good int64, skipped int, err error) {
	r := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) { // longer than any record we write: skip it
			for errors.Is(err, bufio.ErrBufferFull) {
				good += int64(len(line))
				line, err = r.ReadSlice('\n')
			}
			if err != nil {
				return good, skipped, nil // and torn as well
			}
			good += int64(len(line))
			skipped++
			continue
		}
		if errors.Is(err, io.EOF) {
			return good, skipped, nil // a torn last line (or none) is cut off
		}
		if err != nil {
			return good, skipped, err
		}
		good += int64(len(line))
		var rec record
		if json.Unmarshal(line, &rec) != nil || rec.Seq == 0 || rec.Seq >= maxSeq || len(rec.Event) == 0 || len(line) > maxRecord {
			skipped++
			continue
		}
		if rec.Seq >= q.next {
			q.next = rec.Seq + 1
		}
		if rec.Seq <= q.acked || (len(q.pending) > 0 && rec.Seq <= q.pending[len(q.pending)-1].Seq) {
			q.dead++
			continue
		}
		rec.Event = bytes.Clone(rec.Event)
		q.pending = append(q.pending, rec)
	}
}

// push appends one event (its JSON) and returns how many old events it
// dropped to stay within max. It returns once the event is on disk.
func (q *queue) push(event json.RawMessage) (dropped int, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.f == nil {
		return 0, errors.New("the notification queue is closed")
	}
	rec := record{Seq: q.next, Event: event}
	line, err := json.Marshal(rec)
	if err != nil {
		return 0, fmt.Errorf("encoding an event: %w", err)
	}
	line = append(line, '\n')
	if _, err := q.f.Write(line); err != nil {
		_ = q.f.Truncate(q.size)
		return 0, fmt.Errorf("appending to the notification queue %s: %w", q.dir, err)
	}
	if err := q.f.Sync(); err != nil {
		_ = q.f.Truncate(q.size)
		return 0, fmt.Errorf("syncing the notification queue %s: %w", q.dir, err)
	}
	q.size += int64(len(line))
	q.next++
	q.pending = append(q.pending, rec)
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return q.trim()
}

// trim drops the oldest pending events past max. q.mu is held (or q not
// shared yet).
func (q *queue) trim() (int, error) {
	over := len(q.pending) - q.max
	if over <= 0 {
		return 0, nil
	}
	return over, q.ackLocked(q.pending[over-1].Seq)
}

// setMax changes the bound (a reloaded file); it applies at the next push.
func (q *queue) setMax(max int) {
	q.mu.Lock()
	q.max = max
	q.mu.Unlock()
}

// peek returns up to n of the oldest pending records (not copied: they
// are never changed).
func (q *queue) peek(n int) []record {
	q.mu.Lock()
	defer q.mu.Unlock()
	n = min(n, len(q.pending))
	return q.pending[:n:n]
}

// len is how many events are pending.
func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pending)
}

// ack marks every event up to seq delivered: they are never sent again,
// after a restart either.
func (q *queue) ack(seq uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.ackLocked(seq)
}

func (q *queue) ackLocked(seq uint64) error {
	if seq <= q.acked {
		return nil
	}
	if q.f == nil {
		return errors.New("the notification queue is closed")
	}
	if err := writeFileAtomic(filepath.Join(q.dir, ackedName), []byte(strconv.FormatUint(seq, 10)+"\n")); err != nil {
		return fmt.Errorf("recording delivered notifications in %s: %w", q.dir, err)
	}
	q.acked = seq
	i := 0
	for i < len(q.pending) && q.pending[i].Seq <= seq {
		i++
	}
	q.pending = q.pending[i:]
	q.dead += i
	switch {
	case len(q.pending) == 0:
		if err := q.f.Truncate(0); err != nil {
			return fmt.Errorf("emptying the notification queue %s: %w", q.dir, err)
		}
		q.size, q.dead = 0, 0
	case q.dead >= q.compact && q.dead > len(q.pending):
		return q.rewrite()
	}
	return nil
}

// rewrite replaces the log with its pending records.
func (q *queue) rewrite() error {
	var buf bytes.Buffer
	for _, rec := range q.pending {
		line, err := json.Marshal(rec)
		if err != nil {
			return fmt.Errorf("encoding an event: %w", err)
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	path := filepath.Join(q.dir, logName)
	if err := writeFileAtomic(path, buf.Bytes()); err != nil {
		return fmt.Errorf("compacting the notification queue %s: %w", q.dir, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("reopening the notification queue %s: %w", path, err)
	}
	_ = q.f.Close()
	q.f, q.size, q.dead = f, int64(buf.Len()), 0
	return nil
}

// close closes the log; the queue takes no more events.
func (q *queue) close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.f == nil {
		return nil
	}
	err := q.f.Close()
	q.f = nil
	return err
}

// writeFileAtomic replaces path with data: a temporary file, fsynced,
// renamed over it, and the directory fsynced.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
