package consensus

import (
	"context"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/consensus/state"
)

// View runs fn on the whole state pinned at one applied index (v.Index()):
// every manifest with the blobs and manifests it references, and every
// blob link, as garbage collection marks them. Writes applied meanwhile are
// not seen. fn should not take long: a snapshot restore (a follower far
// behind) waits until it returns; values it keeps must be copied (the
// View's own are).
func (s *Store) View(fn func(v *state.View) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return fmt.Errorf("consensus: %w", ErrClosed)
	}
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	return s.fsm.db.View(func(txn *badger.Txn) error {
		v, err := state.NewView(txn)
		if err != nil {
			return err
		}
		return fn(v)
	})
}

// GCSweep commits a garbage collection decision (state.OpGCSweep): the
// blobs nothing referenced at markIndex and nothing linked or referenced
// since are unlinked and tombstoned, the same on every node. start and
// cutoff are Unix nanoseconds (when the collection began; links at or
// after cutoff are kept). Validated before it is proposed.
func (s *Store) GCSweep(ctx context.Context, markIndex uint64, start, cutoff int64, blobs []state.SweepBlob) error {
	return s.write(ctx, state.Command{Op: state.OpGCSweep, MarkIndex: markIndex, Time: start, Cutoff: cutoff, Sweep: blobs})
}

// Tombstones returns up to n blobs collected by sweeps at indexes above
// after, by index.
func (s *Store) Tombstones(after uint64, n int) ([]state.Tombstone, error) {
	return read(s, func(r state.Reader) ([]state.Tombstone, error) { return r.Tombstones(after, n) })
}

// BlobGC returns the index of the latest entry that linked or referenced d
// and of the sweep that collected it (0: none).
func (s *Store) BlobGC(d digest.Digest) (touched, tomb uint64, err error) {
	err = s.view(func(r state.Reader) error {
		touched, tomb, err = r.BlobGC(d)
		return err
	})
	return touched, tomb, err
}
