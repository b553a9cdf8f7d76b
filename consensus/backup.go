package consensus

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"github.com/meshreg/meshreg/consensus/state"
)

// Backup is the metadata at one applied index, for `meshreg backup`: the
// FSM snapshot stream (the one Raft persists) and a View of the same
// state, both read through one badger transaction.
type Backup struct {
	// Index and Term are the Raft index of the last entry the state holds
	// and that entry's term.
	Index, Term uint64
	snap        *fsmSnapshot
	f           *fsm
}

// Backup runs fn on the state pinned at the index applied now. fn may
// take long (it streams blobs): the view holds no lock between calls, and
// a snapshot restore meanwhile (a follower far behind) makes WriteState
// fail rather than mix two states.
func (s *Store) Backup(fn func(b *Backup) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return fmt.Errorf("consensus: %w", ErrClosed)
	}
	snap, err := s.fsm.Snapshot()
	if err != nil {
		return err
	}
	defer snap.Release()
	fs := snap.(*fsmSnapshot)
	b := &Backup{snap: fs, f: s.fsm}
	err = b.View(func(v *state.View) error {
		b.Index = v.Index()
		return nil
	})
	if err != nil {
		return err
	}
	b.Term = s.termOf(b.Index)
	return fn(b)
}

// View runs fn on the pinned state.
func (b *Backup) View(fn func(v *state.View) error) error {
	b.f.mu.RLock()
	defer b.f.mu.RUnlock()
	if b.snap.gen != b.f.gen {
		return errors.New("consensus: the FSM was restored from a snapshot during the backup: run it again")
	}
	v, err := state.NewView(b.snap.txn)
	if err != nil {
		return err
	}
	return fn(v)
}

// WriteState writes the FSM snapshot stream of the pinned state to w; the
// same bytes on every call. RestoreBackup reads it back.
func (b *Backup) WriteState(w io.Writer) error {
	if err := b.snap.write(w); err != nil {
		return fmt.Errorf("consensus: writing the metadata snapshot: %w", err)
	}
	return nil
}

// StateSize returns the size and hex sha256 of WriteState's stream,
// reading the state once without keeping it.
func (b *Backup) StateSize() (int64, string, error) {
	h := sha256.New()
	cw := &countWriter{w: h}
	if err := b.WriteState(cw); err != nil {
		return 0, "", err
	}
	return cw.n, hex.EncodeToString(h.Sum(nil)), nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// termOf is the term of the entry at index: from the log, or the newest
// snapshot's if the log was compacted past it, or else the current term
// (an upper bound, as good for restoring: terms only need to grow).
func (s *Store) termOf(index uint64) uint64 {
	var l raft.Log
	if err := (&logStore{db: s.raftDB}).GetLog(index, &l); err == nil {
		return l.Term
	}
	st := s.raft.Stats()
	if si, _ := strconv.ParseUint(st["last_snapshot_index"], 10, 64); si == index {
		if t, err := strconv.ParseUint(st["last_snapshot_term"], 10, 64); err == nil && t > 0 {
			return t
		}
	}
	t, _ := strconv.ParseUint(st["term"], 10, 64)
	return max(t, 1)
}

// RestoreBackup builds the Raft state of a one-node cluster of cfg.NodeID
// in cfg.Dir, which must hold none, from a metadata snapshot stream (as
// Backup.WriteState wrote it) of the state at index in term: the stream
// becomes the FSM's state and a Raft snapshot at index, and then the
// configuration is rewritten to this node alone exactly as Recover does
// (recoverStopped). address is the node's Raft address; the node records
// its real one when it starts (a lone leader updates its own).
//
// A stream that is truncated or corrupt, or whose state is not at index,
// is an error; the caller then removes cfg.Dir.
func RestoreBackup(cfg Config, snapshot io.Reader, index, term uint64, address string) (err error) {
	if cfg.Dir == "" || cfg.NodeID == "" || index == 0 {
		return errors.New("consensus: restoring a backup needs the meta dir, the node id and the backup's index")
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, "raft")); err == nil {
		return fmt.Errorf("consensus: %s already holds Raft state: restore into an empty data dir", cfg.Dir)
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return fmt.Errorf("consensus: creating %s: %w", cfg.Dir, err)
	}
	st, err := openStopped(cfg)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, st.close()) }()
	term = max(term, 1)
	conf := raft.Configuration{Servers: []raft.Server{{ID: raft.ServerID(cfg.NodeID), Address: raft.ServerAddress(address), Suffrage: raft.Voter}}}
	_, trans := raft.NewInmemTransport(raft.ServerAddress(address))
	defer trans.Close()

	// The stream goes into the FSM (which checks it to its end marker)
	// and, as it is read, into a Raft snapshot at index: the Raft state
	// that Recover needs to start from.
	sink, err := st.snaps.Create(raft.SnapshotVersionMax, index, term, conf, index, trans)
	if err != nil {
		return fmt.Errorf("consensus: creating a snapshot in %s: %w", cfg.Dir, err)
	}
	if err := st.fsm.Restore(io.NopCloser(io.TeeReader(snapshot, sink))); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("consensus: the backup's metadata: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("consensus: writing the snapshot in %s: %w", cfg.Dir, err)
	}
	applied, err := st.fsm.appliedIndex()
	if err != nil {
		return err
	}
	if applied != index {
		return fmt.Errorf("consensus: the backup's metadata is at Raft index %d, its manifest says %d: the archive is inconsistent", applied, index)
	}
	// Raft terms only grow: the node's first election must come after the
	// term of the entries the snapshot holds.
	if err := st.stable.SetUint64([]byte("CurrentTerm"), term); err != nil {
		return fmt.Errorf("consensus: writing the current term: %w", err)
	}
	return st.recoverCluster(cfg, conf, address)
}

// stopped is a stopped node's Raft stores, opened by the offline tools
// (Recover, RestoreBackup).
type stopped struct {
	raftDB, fsmDB *badger.DB
	snaps         raft.SnapshotStore
	logs          *logStore
	stable        *stableStore
	fsm           *fsm
	hlog          *hclogAdapter
	log           *slog.Logger
}

// openStopped opens the badger stores and snapshots in cfg.Dir.
func openStopped(cfg Config) (*stopped, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	raftDB, err := openBadger(filepath.Join(cfg.Dir, "raft"), true, log)
	if err != nil {
		return nil, fmt.Errorf("%w (is the node still running? stop it first)", err)
	}
	fsmDB, err := openBadger(filepath.Join(cfg.Dir, "fsm"), false, log)
	if err != nil {
		_ = raftDB.Close()
		return nil, fmt.Errorf("%w (is the node still running? stop it first)", err)
	}
	hlog := newHclog(log, "raft")
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, hlog.Named("snapshots"))
	if err != nil {
		_ = fsmDB.Close()
		_ = raftDB.Close()
		return nil, fmt.Errorf("consensus: opening snapshot store in %s: %w", cfg.Dir, err)
	}
	return &stopped{raftDB: raftDB, fsmDB: fsmDB, snaps: snaps, logs: &logStore{db: raftDB}, stable: &stableStore{db: raftDB},
		fsm: &fsm{db: fsmDB, log: log}, hlog: hlog, log: log}, nil
}

func (st *stopped) close() error {
	return errors.Join(st.fsmDB.Close(), st.raftDB.Close())
}

// recoverCluster makes conf the node's configuration over its stores, with
// every entry its log holds applied: hashicorp/raft's RecoverCluster.
func (st *stopped) recoverCluster(cfg Config, conf raft.Configuration, self string) error {
	// Only the ids and the snapshot format matter to RecoverCluster; the
	// timing is the default, valid whatever the caller's cfg holds.
	rcfg := DefaultConfig()
	rcfg.NodeID = cfg.NodeID
	rc := raftConfig(rcfg, st.hlog)
	_, trans := raft.NewInmemTransport(raft.ServerAddress(self))
	defer trans.Close()
	if err := raft.RecoverCluster(rc, st.fsm, st.logs, st.stable, st.snaps, trans, conf); err != nil {
		return fmt.Errorf("consensus: recovering the Raft configuration in %s: %w", cfg.Dir, err)
	}
	return nil
}
