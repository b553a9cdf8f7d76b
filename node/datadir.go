package node

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/meshreg/meshreg/node/datadir"
)

// claimDataDir is the first thing Open does: it creates the data dir if
// needed, takes its exclusive lock (a second process on it stops here,
// before any store touches a file, and is told who holds it), and checks
// that this binary understands the layouts recorded in FORMAT. The caller
// releases the lock with Close when it is done with the data dir.
func claimDataDir(dir, version string, log *slog.Logger) (*datadir.Lock, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("node: creating data dir %s: %w (check the path and its permissions, or pass another --data-dir)", dir, err)
	}
	lock, err := datadir.Acquire(dir)
	if err != nil {
		return nil, err
	}
	f, err := datadir.CheckFormat(dir, version)
	if errors.Is(err, datadir.ErrNotRecorded) {
		log.Warn("could not record the data dir's format; its layouts are unchanged, so the node starts", "data_dir", dir, "err", err)
	} else if err != nil {
		_ = lock.Close()
		return nil, err
	}
	log.Info("data dir locked", "data_dir", dir, "blobstore_layout", f.Blobstore, "metadata_layout", f.Metadata)
	return lock, nil
}
