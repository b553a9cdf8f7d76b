package consensus

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"

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
