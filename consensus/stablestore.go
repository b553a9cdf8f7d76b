package consensus

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

// stableStore is a raft.StableStore on badger: key k is stored as s<k>,
// uint64 values big-endian. It shares the database of the log store.
type stableStore struct{ db *badger.DB }

var _ raft.StableStore = (*stableStore)(nil)

// errKeyNotFound is what Get and GetUint64 return for a missing key. raft
// recognises a missing key by this exact text, so it must not be wrapped.
var errKeyNotFound = errors.New("not found")

func (s *stableStore) Set(k, v []byte) error {
	err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(stableKey(k), v) })
	if err != nil {
		return fmt.Errorf("consensus: setting stable key %q: %w", k, err)
	}
	return nil
}

func (s *stableStore) Get(k []byte) ([]byte, error) {
	var v []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(stableKey(k))
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, errKeyNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("consensus: reading stable key %q: %w", k, err)
	}
	return v, nil
}

func (s *stableStore) SetUint64(k []byte, v uint64) error { return s.Set(k, encodeUint64(v)) }

func (s *stableStore) GetUint64(k []byte) (uint64, error) {
	v, err := s.Get(k)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("consensus: stable key %q holds %d bytes, want 8", k, len(v))
	}
	return decodeUint64(v), nil
}
