package consensus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

// logStore is a raft.LogStore on badger: entry i is the key l<i> (uint64
// big-endian, so byte order is index order) holding encodeLog(entry).
//
// Raft calls it from several goroutines (the main loop appends, the snapshot
// goroutine deletes old ranges, replication reads); badger transactions make
// each call atomic. Durability comes from the database's SyncWrites.
type logStore struct{ db *badger.DB }

var _ raft.LogStore = (*logStore)(nil)

func (s *logStore) FirstIndex() (uint64, error) { return s.edgeIndex(false) }

func (s *logStore) LastIndex() (uint64, error) { return s.edgeIndex(true) }

// edgeIndex returns the first (or, when last, the last) stored index, 0 when
// the log is empty.
func (s *logStore) edgeIndex(last bool) (uint64, error) {
	var idx uint64
	err := s.db.View(func(txn *badger.Txn) error {
		opts := badger.IteratorOptions{Prefix: []byte{prefixLog}, Reverse: last}
		it := txn.NewIterator(opts)
		defer it.Close()
		if last {
			it.Seek(logKey(^uint64(0)))
		} else {
			it.Seek([]byte{prefixLog})
		}
		if it.Valid() {
			idx = binary.BigEndian.Uint64(it.Item().Key()[1:])
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("consensus: reading log bounds: %w", err)
	}
	return idx, nil
}

func (s *logStore) GetLog(index uint64, l *raft.Log) error {
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(logKey(index))
		if err != nil {
			return err
		}
		err = item.Value(func(v []byte) error { return decodeLog(v, l) })
		if err == nil && l.Index != index {
			err = fmt.Errorf("%w: key %d holds entry %d", errCorruptLog, index, l.Index)
		}
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return raft.ErrLogNotFound
	}
	if err != nil {
		return fmt.Errorf("consensus: reading log entry %d: %w", index, err)
	}
	return nil
}

func (s *logStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// StoreLogs writes the entries in one batch; badger splits it into several
// transactions when it is too large for one.
func (s *logStore) StoreLogs(logs []*raft.Log) error {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, l := range logs {
		if err := wb.Set(logKey(l.Index), encodeLog(l)); err != nil {
			return fmt.Errorf("consensus: storing log entry %d: %w", l.Index, err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("consensus: storing %d log entries: %w", len(logs), err)
	}
	return nil
}

// DeleteRange deletes the entries min..max inclusive.
func (s *logStore) DeleteRange(min, max uint64) error {
	if min > max {
		return nil
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixLog}})
		defer it.Close()
		end := logKey(max)
		for it.Seek(logKey(min)); it.Valid(); it.Next() {
			k := it.Item().KeyCopy(nil)
			if string(k) > string(end) {
				break
			}
			if err := wb.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = wb.Flush()
	}
	if err != nil {
		return fmt.Errorf("consensus: deleting log entries %d..%d: %w", min, max, err)
	}
	return nil
}

// Log entry encoding, version 1 (uvarint unless noted):
//
//	byte 1 | type byte | index | term | len data, data | len ext, ext | appendedAt (varint unix ns, 0 = zero time)
const logEncodingV1 = 1

func encodeLog(l *raft.Log) []byte {
	b := make([]byte, 0, 2+4*binary.MaxVarintLen64+len(l.Data)+len(l.Extensions))
	b = append(b, logEncodingV1, byte(l.Type))
	b = binary.AppendUvarint(b, l.Index)
	b = binary.AppendUvarint(b, l.Term)
	b = binary.AppendUvarint(b, uint64(len(l.Data)))
	b = append(b, l.Data...)
	b = binary.AppendUvarint(b, uint64(len(l.Extensions)))
	b = append(b, l.Extensions...)
	var at int64
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UnixNano()
	}
	return binary.AppendVarint(b, at)
}

var errCorruptLog = errors.New("consensus: corrupt log entry")

// decodeLog fills l from b; the byte slices it sets are copies, so b may be
// reused by the caller.
func decodeLog(b []byte, l *raft.Log) error {
	if len(b) < 2 || b[0] != logEncodingV1 {
		return errCorruptLog
	}
	d := decoder{b: b[2:]}
	*l = raft.Log{Type: raft.LogType(b[1])}
	l.Index = d.uvarint()
	l.Term = d.uvarint()
	l.Data = d.bytes()
	l.Extensions = d.bytes()
	if at := d.varint(); at != 0 {
		l.AppendedAt = time.Unix(0, at)
	}
	if d.bad || len(d.b) != 0 {
		return errCorruptLog
	}
	return nil
}

// decoder reads varints and length-prefixed byte strings, remembering the
// first failure.
type decoder struct {
	b   []byte
	bad bool
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.bad = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.bad = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.bad || n > uint64(len(d.b)) {
		d.bad = true
		return nil
	}
	if n == 0 {
		return nil
	}
	out := append([]byte(nil), d.b[:n]...)
	d.b = d.b[n:]
	return out
}
