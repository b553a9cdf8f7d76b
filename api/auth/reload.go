package auth

import (
	"crypto/sha256"
	"os"
	"sync"
	"time"
)

// ReloadInterval is how often a Watched file is checked for changes, at
// most: a change is in effect within this long (plus the request that
// notices it).
const ReloadInterval = time.Second

// settleTime is how old a file's modification must be before it is read:
// a file rewritten in place (truncated, then written) may be caught empty
// or half written, which for an htpasswd file means locking users out
// until the next check. A younger file is looked at again by the next
// request instead.
const settleTime = 50 * time.Millisecond

// Watched holds the value parsed from a file and parses it again when the
// file's contents change. Reading it from concurrent requests is safe; the
// file is read at most once per ReloadInterval. Contents, not the
// modification time and size, say whether it changed: two writes of the
// same size within one tick of the file system's clock (a few
// milliseconds) leave both alike.
//
// A file that changes into something that does not parse keeps the last
// good value in effect, and OnReload is told the error (so a typo in the
// file does not lock everyone out, or let everyone in); a change applied
// is told to OnReload with a nil error.
type Watched[T any] struct {
	path     string
	parse    func(data []byte) (T, error)
	OnReload func(err error)

	mu  sync.Mutex
	val T
	sum [sha256.Size]byte // of the contents val was parsed from
	// mod and size are the file's as last read, at readAt: while they
	// stay the same and mod was well before readAt, the contents did not
	// change (a later write would have a later modification time), and
	// the file is not read again.
	mod     time.Time
	size    int64
	readAt  time.Time
	checked time.Time
	lastErr string // the error last told to OnReload, "" after a good reload
	now     func() time.Time
}

// Watch parses path now (an error is returned as is) and keeps watching it.
func Watch[T any](path string, parse func(data []byte) (T, error)) (*Watched[T], error) {
	w := &Watched[T]{path: path, parse: parse, now: time.Now}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	v, err := parse(data)
	if err != nil {
		return nil, err
	}
	w.val, w.sum = v, sha256.Sum256(data)
	w.mod, w.size, w.readAt, w.checked = fi.ModTime(), fi.Size(), w.now(), w.now()
	return w, nil
}

// Get returns the current value, reloading the file first if it changed.
func (w *Watched[T]) Get() T {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	if now.Sub(w.checked) < ReloadInterval {
		return w.val
	}
	fi, err := os.Stat(w.path)
	if err != nil {
		w.checked = now
		w.fail(err)
		return w.val
	}
	if age := now.Sub(fi.ModTime()); age >= 0 && age < settleTime {
		return w.val // being written, perhaps: the next request looks again
	}
	w.checked = now
	if fi.ModTime().Equal(w.mod) && fi.Size() == w.size && w.readAt.Sub(w.mod) > ReloadInterval {
		return w.val
	}
	data, err := os.ReadFile(w.path)
	if err != nil {
		w.fail(err)
		return w.val
	}
	w.mod, w.size, w.readAt = fi.ModTime(), fi.Size(), now
	sum := sha256.Sum256(data)
	if sum == w.sum {
		return w.val
	}
	v, err := w.parse(data)
	if err != nil {
		w.fail(err)
		return w.val
	}
	w.val, w.sum = v, sum
	w.fail(nil)
	return w.val
}

// fail tells OnReload how a reload went (nil: applied). A file that stays
// broken is told once, not once per check: again only when the error
// changes or after a good version.
func (w *Watched[T]) fail(err error) {
	if err != nil {
		if err.Error() == w.lastErr {
			return
		}
		w.lastErr = err.Error()
	} else {
		w.lastErr = ""
	}
	if w.OnReload != nil {
		w.OnReload(err)
	}
}
