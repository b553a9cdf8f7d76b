package consensus

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"github.com/meshreg/meshreg/consensus/state"
)

// fsm is the registry metadata as a raft.FSM over a badger database (see
// consensus/state for the apply and the layout).
//
// Concurrency: raft calls Apply, Snapshot and Restore from its FSM goroutine,
// one at a time. Persist and Release of a snapshot run on raft's snapshot
// goroutine, concurrently with Apply. Readers (the Store's read methods) run
// on any goroutine, concurrently with all of these; badger transactions give
// them consistent views.
type fsm struct {
	db  *badger.DB
	log *slog.Logger
	// onFatal is Config.OnFatal; fault is Config.ApplyFault (tests only).
	onFatal func(error)
	fault   func(index uint64) error
	// onApplied and onConfig, when set, hear of each entry applied (and
	// each restore) and of each configuration committed (watch.go). They
	// run on raft's FSM goroutine and must not block.
	onApplied func(Applied)
	onConfig  func()
	// policies caches the parsed content policy for apply and for the
	// store's checks before proposing (state.PolicyCache).
	policies state.PolicyCache
	// configIndex is the Raft index of the latest configuration committed
	// (or of the state restored from a snapshot, which carries one).
	configIndex atomic.Uint64
	// failed holds the storage error that stopped the FSM for good (see
	// Apply); nil while it works.
	failed atomic.Pointer[error]

	// applyMu keeps Apply and Restore one at a time. Raft calls them from
	// one goroutine; a metadata follower's tail (follow.go) calls them
	// from its own, and must never overlap raft's should this node become
	// a member while it still tails.
	applyMu sync.Mutex

	// mu keeps readers and snapshot writers out while Restore drops and
	// reloads the database: they hold it shared, Restore exclusively.
	mu sync.RWMutex
	// gen counts restores (guarded by mu), so that a snapshot opened before
	// a restore refuses to persist a view the restore dropped.
	gen uint64
}

var (
	_ raft.FSM                = (*fsm)(nil)
	_ raft.ConfigurationStore = (*fsm)(nil)
)

// StoreConfiguration is raft's word that a membership configuration was
// committed. The state keeps none (raft has it in its log and snapshots);
// the store's watchers hear of it.
func (f *fsm) StoreConfiguration(index uint64, _ raft.Configuration) {
	f.configIndex.Store(index)
	if f.onConfig != nil {
		f.onConfig()
	}
}

// Apply applies a committed log entry with state.Apply, which is
// deterministic (the same entries in the same order leave every node with
// the same bytes) and idempotent (replaying the log after a restart changes
// nothing); see there.
//
// The response is the command's error or nil: ErrNotFound, or
// ErrInvalidCommand for an entry outside the bounds of state/limits.go (whoever
// proposed it). A failing command leaves no trace but the applied index.
//
// Apply never panics. A storage failure leaves the applied index where it
// was and stops the FSM for good (sticky): every later entry, snapshot and
// restore is refused with ErrStorageFailed, since the state can no longer
// follow the log; OnFatal tells the node to stop, and a restart replays the
// entry that failed.
func (f *fsm) Apply(l *raft.Log) (result any) {
	if l.Type != raft.LogCommand {
		return nil
	}
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	if err := f.failure(); err != nil {
		return fmt.Errorf("consensus: entry %d not applied: %w", l.Index, err)
	}
	// Last resort: a panic below (a bug, or badger's) is taken as a
	// storage failure, which stops this node cleanly instead of crashing
	// it; the entry is applied again at restart.
	defer func() {
		if p := recover(); p != nil {
			result = f.fail(l.Index, fmt.Errorf("panic: %v", p))
		}
	}()
	a, ok, resp, err := state.ApplyCached(f.db, l.Index, l.Data, f.fault, &f.policies)
	if err != nil {
		return f.fail(l.Index, err)
	}
	if ok && f.onApplied != nil {
		f.onApplied(a)
	}
	return resp
}

// failure is the storage error that stopped the FSM, nil while it works.
func (f *fsm) failure() error {
	if p := f.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// fail records a storage failure for good, logs it once and calls OnFatal
// on a goroutine of its own (it may close the store, which waits for the
// FSM goroutine this runs on).
func (f *fsm) fail(index uint64, cause error) error {
	err := fmt.Errorf("consensus: %w: applying raft entry %d: %w", ErrStorageFailed, index, cause)
	if !f.failed.CompareAndSwap(nil, &err) {
		return f.failure()
	}
	f.log.Error("the metadata database failed: this node applies no more writes and stops. "+
		"Check the disk under the data directory (free space, I/O errors in the kernel log), then restart the node: "+
		"it applies the entry again and catches up with the cluster", "index", index, "err", cause)
	if f.onFatal != nil {
		go f.onFatal(err)
	}
	return err
}

// appliedIndex is the index of the last command entry applied (0 if none).
func (f *fsm) appliedIndex() (uint64, error) {
	var idx uint64
	err := f.view(func(r state.Reader) (err error) {
		idx, err = r.AppliedIndex()
		return err
	})
	return idx, err
}

// view runs fn in a read-only transaction, excluded from Restore.
func (f *fsm) view(fn func(r state.Reader) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.db.View(func(txn *badger.Txn) error { return fn(state.NewReader(txn)) })
}

// Snapshot opens a read-only transaction (a consistent view of the state as
// of the last applied entry) and returns at once; Persist does the I/O.
//
// A failed FSM refuses: its state may lack an entry raft counts as applied,
// and a snapshot would make that loss permanent.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	if err := f.failure(); err != nil {
		return nil, fmt.Errorf("consensus: no snapshot: %w", err)
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	return &fsmSnapshot{f: f, gen: f.gen, txn: f.db.NewTransaction(false)}, nil
}

// Snapshot stream: snapshotMagic, then for each key in byte order
// uvarint(len key), key, uvarint(len value), value; then uvarint(0). Keys are
// never empty, so the zero marks the end and a truncated stream is detected.
const (
	snapshotMagic    = "meshreg-fsm-snapshot-v1\n"
	maxSnapshotKey   = 1 << 16
	maxSnapshotValue = 1 << 30
	// snapshotDirectRead is the largest length read with one allocation.
	snapshotDirectRead = 1 << 20
)

// fsmSnapshot streams the view it holds. Persist runs on raft's snapshot
// goroutine, concurrently with Apply; raft always calls Release.
type fsmSnapshot struct {
	f    *fsm
	gen  uint64
	txn  *badger.Txn
	once sync.Once
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.write(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("consensus: persisting FSM snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) write(w io.Writer) error {
	s.f.mu.RLock()
	defer s.f.mu.RUnlock()
	if s.gen != s.f.gen {
		return errors.New("the FSM was restored after this snapshot began")
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	if _, err := bw.WriteString(snapshotMagic); err != nil {
		return err
	}
	var lenBuf [binary.MaxVarintLen64]byte
	writeBytes := func(b []byte) error {
		if _, err := bw.Write(binary.AppendUvarint(lenBuf[:0], uint64(len(b)))); err != nil {
			return err
		}
		_, err := bw.Write(b)
		return err
	}
	// Values are read one at a time (no prefetch): manifests can be large.
	it := s.txn.NewIterator(badger.IteratorOptions{})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		if err := writeBytes(item.Key()); err != nil {
			return err
		}
		if err := item.Value(writeBytes); err != nil {
			return err
		}
	}
	if err := writeBytes(nil); err != nil {
		return err
	}
	return bw.Flush()
}

func (s *fsmSnapshot) Release() { s.once.Do(s.txn.Discard) }

// Restore replaces the whole state with a snapshot stream. It runs on the FSM
// goroutine with no Apply in flight; readers wait until it is done. The
// stream is loaded in batches, never whole into memory.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := f.failure(); err != nil {
		return fmt.Errorf("consensus: no restore: %w", err)
	}
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gen++
	if err := f.db.DropAll(); err != nil {
		return fmt.Errorf("consensus: dropping FSM state before restore: %w", err)
	}
	wb := f.db.NewWriteBatch()
	defer wb.Cancel()
	n, err := readSnapshot(bufio.NewReaderSize(rc, 1<<20), wb.Set)
	if err == nil {
		err = wb.Flush()
	}
	if err != nil {
		return fmt.Errorf("consensus: restoring FSM snapshot (after %d keys): %w", n, err)
	}
	f.log.Info("restored FSM from snapshot", "keys", n)
	var idx uint64
	err = f.db.View(func(txn *badger.Txn) (err error) {
		idx, err = state.NewReader(txn).AppliedIndex()
		return err
	})
	if err != nil {
		return fmt.Errorf("consensus: reading the applied index after a restore: %w", err)
	}
	// The snapshot's configuration is at most as new as the snapshot; its
	// own index is not given to the FSM, so the state's stands in for it.
	if idx > f.configIndex.Load() {
		f.configIndex.Store(idx)
	}
	if f.onApplied != nil {
		f.onApplied(Applied{Index: idx, Kind: KindRestore})
	}
	if f.onConfig != nil {
		f.onConfig() // the snapshot carries a configuration too
	}
	return nil
}

// readSnapshot reads a snapshot stream, calling set for each pair with
// freshly allocated slices.
func readSnapshot(r *bufio.Reader, set func(k, v []byte) error) (n int, err error) {
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(r, magic); err != nil {
		return 0, fmt.Errorf("reading snapshot header: %w", unexpectedEOF(err))
	}
	if string(magic) != snapshotMagic {
		return 0, fmt.Errorf("not a meshreg FSM snapshot: header %q", magic)
	}
	readBytes := func(limit uint64) ([]byte, error) {
		l, err := binary.ReadUvarint(r)
		if err != nil {
			return nil, unexpectedEOF(err)
		}
		if l > limit {
			return nil, fmt.Errorf("length %d above limit %d: corrupt snapshot", l, limit)
		}
		if l <= snapshotDirectRead {
			b := make([]byte, l)
			_, err = io.ReadFull(r, b)
			return b, unexpectedEOF(err)
		}
		// A large length is only a claim: read it in growing steps, so
		// that a stream which stops short costs what it sent, not what it
		// claimed.
		var buf bytes.Buffer
		buf.Grow(snapshotDirectRead)
		n, err := io.CopyN(&buf, r, int64(l))
		if err == nil && uint64(n) != l {
			err = io.ErrUnexpectedEOF
		}
		return buf.Bytes(), unexpectedEOF(err)
	}
	for {
		k, err := readBytes(maxSnapshotKey)
		if err != nil {
			return n, err
		}
		if len(k) == 0 {
			return n, nil
		}
		v, err := readBytes(maxSnapshotValue)
		if err != nil {
			return n, err
		}
		if err := set(k, v); err != nil {
			return n, err
		}
		n++
	}
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
