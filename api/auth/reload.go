package auth

import (
	"os"
	"sync"
	"time"
)

// ReloadInterval is how often a Watched file is checked for changes, at
// most: a change is in effect within this long (plus the request that
// notices it).
const ReloadInterval = time.Second

// Watched holds the value parsed from a file and parses it again when the
// file's modification time or size changes. Reading it from concurrent
// requests is safe; a stat runs at most once per ReloadInterval.
//
// A file that changes into something that does not parse keeps the last
// good value in effect, and OnReload is told the error (so a typo in the
// file does not lock everyone out, or let everyone in); a change applied
// is told to OnReload with a nil error.
type Watched[T any] struct {
	path     string
	parse    func(data []byte) (T, error)
	OnReload func(err error)

	mu      sync.Mutex
	val     T
	mod     time.Time
	size    int64
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
	w.val, w.mod, w.size, w.checked = v, fi.ModTime(), fi.Size(), w.now()
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
	w.checked = now
	fi, err := os.Stat(w.path)
	if err != nil {
		w.fail(err)
		return w.val
	}
	if fi.ModTime().Equal(w.mod) && fi.Size() == w.size {
		return w.val
	}
	data, err := os.ReadFile(w.path)
	if err != nil {
		w.fail(err)
		return w.val
	}
	v, err := w.parse(data)
	if err != nil {
		w.fail(err)
		return w.val
	}
	w.val, w.mod, w.size = v, fi.ModTime(), fi.Size()
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
