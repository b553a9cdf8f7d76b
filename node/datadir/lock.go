package datadir

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// LockFile is the name of the lock file inside a data dir.
const LockFile = "LOCK"

// ErrInUse is wrapped by Lock's error when another process holds the data
// dir.
var ErrInUse = errors.New("data dir in use")

// Holder says which process holds a data dir; it is written into the lock
// file so that a second process can name it.
type Holder struct {
	PID      int       `json:"pid"`
	Hostname string    `json:"hostname,omitempty"`
	Started  time.Time `json:"started"`
}

// String describes the holder for an error message.
func (h Holder) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "pid %d", h.PID)
	if h.Hostname != "" {
		fmt.Fprintf(&b, " on %s", h.Hostname)
	}
	if !h.Started.IsZero() {
		fmt.Fprintf(&b, ", started %s", h.Started.UTC().Format(time.RFC3339))
	}
	return b.String()
}

// Lock is an exclusive hold on a data dir, taken with flock(2) on
// <dir>/LOCK. The kernel drops it when the process exits, however it
// exits, so a crash leaves no stale lock behind. Close releases it.
type Lock struct {
	f    *os.File
	path string
}

// Acquire takes the exclusive lock of dir, which must exist, without
// waiting. When another process (or another open Lock in this process)
// holds it, the error wraps ErrInUse and names the holder. On success the
// lock file records this process as the holder, as far as the disk allows:
// the record only serves error messages, so a full disk that keeps it from
// being written does not keep the node from starting.
func Acquire(dir string) (*Lock, error) {
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("data dir %s: opening its lock file: %w (check that the directory exists and is writable)", dir, err)
	}
	if err := flock(f); err != nil {
		holder := readHolder(f)
		_ = f.Close()
		if errors.Is(err, errLocked) {
			return nil, fmt.Errorf("data dir %s is in use by another meshreg (%s): stop it or pass another --data-dir: %w", dir, holder, ErrInUse)
		}
		return nil, fmt.Errorf("data dir %s: locking %s: %w", dir, path, err)
	}
	host, _ := os.Hostname()
	me, _ := json.Marshal(Holder{PID: os.Getpid(), Hostname: host, Started: time.Now().UTC().Truncate(time.Second)})
	_ = rewrite(f, append(me, '\n')) // best effort, see above
	return &Lock{f: f, path: path}, nil
}

// readHolder reads who holds the lock from its file; a holder that has not
// written itself yet (it is between flock and write) is "holder unknown".
func readHolder(f *os.File) string {
	b := make([]byte, 4096)
	n, _ := f.ReadAt(b, 0)
	var h Holder
	if err := json.Unmarshal(b[:n], &h); err != nil || h.PID == 0 {
		return "holder unknown"
	}
	return h.String()
}

func rewrite(f *os.File, b []byte) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		return err
	}
	return nil
}

// Close empties the lock file and releases the lock. The file stays: a
// process that opened it meanwhile may still lock it. Calling Close again
// does nothing.
func (l *Lock) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	f := l.f
	l.f = nil
	terr := f.Truncate(0)
	uerr := funlock(f)
	cerr := f.Close()
	if err := errors.Join(terr, uerr, cerr); err != nil {
		return fmt.Errorf("releasing %s: %w", l.path, err)
	}
	return nil
}
