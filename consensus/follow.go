package consensus

import (
	"bufio"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/meshreg/meshreg/consensus/state"
)

// A metadata follower is a node that is not in the Raft configuration but
// keeps the same state: it tails the committed log of one member over a
// stream (tail.go serves it, tailwire.go frames it), applies each command
// entry with the FSM's Apply and restores the member's snapshot when it is
// too far behind. Its reads are local; its writes are forwarded to the
// leader the tail names, through Config.Forwarder, as a Raft follower's
// are. The leader's cost then depends on the members only.
//
// The follower owns one goroutine (follower.run), started by Follow and
// stopped by StopFollowing or Close. Raft runs on a follower too, but with
// this node in no configuration it applies nothing: only the tail does,
// and StopFollowing waits for it to stop before the node becomes a member
// (the FSM's applyMu keeps the two apart even if they overlapped).

// TailDialer opens a tail stream to a member (the node implements it over
// libp2p). The stream is closed by the follower.
type TailDialer interface {
	DialTail(ctx context.Context, member Server) (io.ReadWriteCloser, error)
}

// TailStatus is what a follower knows of its tail.
type TailStatus struct {
	// Source is the id of the member tailed from ("" between streams).
	Source string `json:"source,omitempty"`
	// Applied is the last Raft index received and applied through the
	// tail (command or not).
	Applied uint64 `json:"applied"`
	// LeaderID, LeaderAddress and Term are the leader as the source last
	// named it ("" while it knows none).
	LeaderID      string `json:"leader_id,omitempty"`
	LeaderAddress string `json:"leader_address,omitempty"`
	Term          uint64 `json:"term,omitempty"`
	// LastMessage is when the source last sent anything.
	LastMessage time.Time `json:"last_message,omitzero"`
	// Reconnects counts streams that ended with an error; Snapshots the
	// snapshots restored from sources.
	Reconnects uint64 `json:"reconnects"`
	Snapshots  uint64 `json:"snapshots"`
	// Stopped, when set, says why the tail stopped for good: this node
	// met an entry newer than its release applies (ErrOlderThanCluster).
	// Its state stays at Applied until it is upgraded and restarted.
	Stopped string `json:"stopped,omitempty"`
}

var (
	// ErrMember: Follow was called on a node that is in its own Raft
	// configuration (a member never follows).
	ErrMember = errors.New("this node is a raft member")
	// ErrNoTailSource: Follow was given no member and none was learned
	// before.
	ErrNoTailSource = errors.New("no member to tail from")
	// ErrFollowing: ServeTail was called on a follower (followers do not
	// relay to followers).
	ErrFollowing = errors.New("this node follows the metadata, it is not a member")
	// ErrOlderThanCluster: a follower met a committed entry of an op, or
	// a setting, newer than its release applies. Applying it would fail
	// here and succeed on the members (an invalid command leaves no trace
	// but the applied index), and this node's state would part from the
	// cluster's for good; so the tail stops before it (TailStatus.Stopped).
	ErrOlderThanCluster = errors.New("this node is older than the cluster")
	// errOffLeader ends a stream from the leader to tail another member.
	errOffLeader = errors.New("the source is the leader: moving to another member")
	// errBecameMember ends the tail: a configuration names this node,
	// so raft replicates to it now (see learn).
	errBecameMember = errors.New("this node is in the configuration it learned: raft takes over")
)

// Timing of the follower's reconnections and dials.
const (
	minTailBackoff  = 100 * time.Millisecond
	maxTailBackoff  = 5 * time.Second
	tailDialTimeout = 10 * time.Second
)

// keyTailConfig is the stable-store key of the configuration a follower
// learned (a tailRecord, JSON), so that a restarted follower knows whom to
// tail without asking anyone. It lives in the Raft database, not the
// FSM's: a snapshot restore drops the FSM's.
var keyTailConfig = []byte("meshreg-tail-configuration")

// tailRecord is the learned configuration and the raft index it is from.
type tailRecord struct {
	Index   uint64   `json:"index"`
	Members []Member `json:"members"`
}

// follower is the state of a tail while the store follows.
type follower struct {
	s      *Store
	dialer TailDialer
	hb     time.Duration // heartbeat asked of servers
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns

	// applied is the raft index applied through; movedOff tells that the
	// tail left the leader for another member (see run). Only run's
	// goroutine touches them.
	applied  uint64
	movedOff bool

	mu      sync.Mutex // guards what follows
	given   []Member   // from Follow
	learned []Member   // the latest configuration learned, nil if none
	status  TailStatus
}

// Follow starts following: tails from one of members (or, when members is
// empty, from the configuration learned and persisted earlier),
// reconnecting to another member on error with bounded backoff, until
// StopFollowing or Close. Errors if raft on this node is a member of its
// own configuration (a member never follows: ErrMember), if there is no
// member to tail from (ErrNoTailSource), or if the store has no
// Config.TailDialer. Called while following, it replaces the members
// given before and returns nil.
func (s *Store) Follow(members []Server) error {
	s.tailMu.Lock()
	defer s.tailMu.Unlock()
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return fmt.Errorf("consensus: follow: %w", ErrClosed)
	}
	if _, ok, err := s.member(s.cfg.NodeID); err != nil || ok {
		return fmt.Errorf("consensus: follow: %w", cmp.Or(err, ErrMember))
	}
	if s.cfg.TailDialer == nil {
		return errors.New("consensus: follow: the store has no TailDialer")
	}
	rec, err := s.loadTailRecord()
	if err != nil {
		return err
	}
	var given []Member
	for _, m := range members {
		if m.ID != s.cfg.NodeID {
			given = append(given, Member{ID: m.ID, Address: m.Address})
		}
	}
	if f := s.tail; f != nil {
		f.mu.Lock()
		f.given = given
		f.mu.Unlock()
		return nil
	}
	var learned []Member
	if rec != nil {
		learned = rec.Members
	}
	if len(candidates(s.cfg.NodeID, learned, given)) == 0 {
		return fmt.Errorf("consensus: follow: %w (none given, none learned before)", ErrNoTailSource)
	}
	applied, err := s.fsm.appliedIndex()
	if err != nil {
		return fmt.Errorf("consensus: follow: reading the applied index: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	hb := cmp.Or(s.cfg.tailHeartbeat, tailHeartbeat)
	f := &follower{s: s, dialer: s.cfg.TailDialer, hb: hb, cancel: cancel, done: make(chan struct{}),
		applied: applied, given: given, learned: learned, status: TailStatus{Applied: applied}}
	s.tail = f
	s.tails.Add(1)
	go func() {
		defer s.tails.Done()
		f.run(ctx)
	}()
	return nil
}

// StopFollowing stops the tail and waits until no entry is being applied
// (before this node becomes a Raft member: raft's FSM goroutine and the
// tail must never apply at the same time). A no-op when not following.
func (s *Store) StopFollowing() {
	s.tailMu.Lock()
	f := s.tail
	s.tail = nil
	s.tailMu.Unlock()
	if f == nil {
		return
	}
	f.cancel()
	<-f.done
	s.refresh() // the leader is raft's again
}

// Following reports whether the store follows the metadata (not a member).
func (s *Store) Following() bool {
	s.tailMu.Lock()
	defer s.tailMu.Unlock()
	return s.tail != nil
}

// FollowedBefore reports whether a configuration learned through a tail
// is stored and this node is not a member of its own Raft configuration:
// a restarted follower then calls Follow(nil).
func (s *Store) FollowedBefore() bool {
	rec, err := s.loadTailRecord()
	if err != nil || rec == nil || len(rec.Members) == 0 {
		return false
	}
	_, ok, err := s.member(s.cfg.NodeID)
	return err == nil && !ok
}

// TailStatus reports the tail: source member id, last index applied,
// leader known, last message time, reconnects, snapshots restored. Zero
// when not following.
func (s *Store) TailStatus() TailStatus {
	f := s.follower()
	if f == nil {
		return TailStatus{}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}

// TailConfiguration returns the members as learned through the tail (nil
// when not following or never learned).
func (s *Store) TailConfiguration() []Member {
	f := s.follower()
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.learned)
}

func (s *Store) follower() *follower {
	s.tailMu.Lock()
	defer s.tailMu.Unlock()
	return s.tail
}

// tailLeader is the leader the tail knows, ok false when not following or
// none is known.
func (s *Store) tailLeader() (l tailLeader, ok bool) {
	st := s.TailStatus()
	return tailLeader{ID: st.LeaderID, Address: st.LeaderAddress, Term: st.Term}, st.LeaderID != ""
}

// loadTailRecord returns the configuration learned before, nil if none.
func (s *Store) loadTailRecord() (*tailRecord, error) {
	b, err := (&stableStore{db: s.raftDB}).Get(keyTailConfig)
	if errors.Is(err, errKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rec tailRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("consensus: reading the learned configuration: %w", err)
	}
	return &rec, nil
}

// candidates are the members to tail from, in the default order:
// learned and given merged by id (learned first), without this node.
func candidates(self string, learned, given []Member) []Member {
	var out []Member
	seen := map[string]bool{self: true}
	for _, m := range slices.Concat(learned, given) {
		if !seen[m.ID] {
			seen[m.ID] = true
			out = append(out, m)
		}
	}
	return out
}

// defaultTailOrder puts non-voters first, then members of unknown
// suffrage (given, not learned), then voters, and the leader last: the
// leader's cost is the one to keep flat.
func defaultTailOrder(ms []Member, leader string) []Member {
	rank := func(m Member) int {
		switch {
		case m.ID == leader:
			return 3
		case m.Suffrage == Nonvoter:
			return 0
		case m.Suffrage == "":
			return 1
		}
		return 2
	}
	slices.SortStableFunc(ms, func(a, b Member) int { return cmp.Compare(rank(a), rank(b)) })
	return ms
}

// order returns the candidates in the order to try them.
func (f *follower) order() []Member {
	f.mu.Lock()
	ms := candidates(f.s.cfg.NodeID, f.learned, f.given)
	leader := f.status.LeaderID
	f.mu.Unlock()
	if f.s.cfg.TailPrefer != nil {
		ms = f.s.cfg.TailPrefer(ms)
		return slices.DeleteFunc(ms, func(m Member) bool { return m.ID == f.s.cfg.NodeID })
	}
	return defaultTailOrder(ms, leader)
}

// run tails until ctx ends: one stream at a time, the next member after a
// stream ends, waiting a backoff that doubles (up to maxTailBackoff) while
// streams bring nothing.
//
// A follower that finds itself tailing the leader (it knew no leader when
// it chose, or the source won an election) moves to another member at
// once, but only once until a stream from a non-leader brings something:
// when the others cannot serve, it stays on the leader.
func (f *follower) run(ctx context.Context) {
	defer close(f.done)
	backoff := minTailBackoff
	for attempt := 0; ; attempt++ {
		var progress bool
		var err error
		if ms := f.order(); len(ms) == 0 {
			err = ErrNoTailSource
		} else {
			m := ms[attempt%len(ms)]
			progress, err = f.session(ctx, m)
			if progress && f.leaderID() != m.ID {
				f.movedOff = false
			}
			if err != nil {
				err = fmt.Errorf("tailing %s: %w", m.ID, err)
			}
		}
		if ctx.Err() != nil {
			return
		}
		if ferr := f.s.fsm.failure(); ferr != nil {
			f.s.log.Error("metadata tail stopped: the FSM failed", "err", ferr)
			return
		}
		if older := (*olderError)(nil); errors.As(err, &older) {
			// Stays the store's tail: Following and TailStatus tell
			// why reads stop at the applied index.
			f.s.log.Error(older.msg, "applied", f.applied)
			f.mu.Lock()
			f.status.Stopped = older.msg
			f.status.Source = ""
			f.mu.Unlock()
			return
		}
		if errors.Is(err, errBecameMember) {
			f.s.log.Info("metadata tail stops: this node became a raft member", "applied", f.applied)
			f.s.tailMu.Lock()
			if f.s.tail == f {
				f.s.tail = nil
			}
			f.s.tailMu.Unlock()
			f.cancel()
			f.s.refresh()
			return
		}
		if errors.Is(err, errOffLeader) {
			f.s.log.Debug("metadata tail moves off the leader")
			attempt = -1 // the first in order: the leader is last now
			continue
		}
		f.mu.Lock()
		f.status.Reconnects++
		f.status.Source = ""
		f.mu.Unlock()
		if progress {
			backoff = minTailBackoff
		} else {
			backoff = min(2*backoff, maxTailBackoff)
		}
		f.s.log.Warn("metadata tail interrupted; reconnecting", "err", err, "applied", f.applied, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
}

// session runs one stream from m until it breaks, the source breaks the
// protocol, or ctx ends. progress tells whether it applied anything.
func (f *follower) session(ctx context.Context, m Member) (progress bool, err error) {
	dctx, cancel := context.WithTimeout(ctx, tailDialTimeout)
	conn, err := f.dialer.DialTail(dctx, Server{ID: m.ID, Address: m.Address})
	cancel()
	if err != nil {
		return false, fmt.Errorf("dialing: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	// A source silent for tailSilence heartbeats is taken for dead.
	silence := tailSilence * f.hb
	var silent atomic.Bool
	watchdog := time.AfterFunc(silence, func() { silent.Store(true); _ = conn.Close() })
	defer watchdog.Stop()
	defer func() {
		if silent.Load() {
			err = fmt.Errorf("no message for %s: %w", silence, err)
		}
	}()

	if err := writeTailRequest(conn, tailRequest{After: f.applied, Heartbeat: f.hb}); err != nil {
		return false, fmt.Errorf("sending the request: %w", err)
	}
	f.mu.Lock()
	f.status.Source = m.ID
	f.mu.Unlock()
	r := bufio.NewReaderSize(conn, 64<<10)
	for {
		t, payload, err := readFrame(r)
		if err != nil {
			return progress, err
		}
		if !watchdog.Reset(silence) {
			return progress, errors.New("stream closed")
		}
		f.heard()
		switch t {
		case frameLeader:
			var l tailLeader
			if err := json.Unmarshal(payload, &l); err != nil || len(l.ID) > maxTailName || len(l.Address) > maxTailName {
				return progress, fmt.Errorf("%w: bad leader message", errTailProtocol)
			}
			f.setLeader(l)
			if l.ID == m.ID && !f.movedOff && len(f.order()) > 1 {
				f.movedOff = true
				return progress, errOffLeader
			}
		case frameEntries:
			es, err := decodeEntries(payload)
			if err != nil {
				return progress, err
			}
			for _, e := range es {
				if err := f.apply(e); err != nil {
					return progress, err
				}
				progress = true
			}
		case frameSnapshot:
			var h tailSnapshot
			if err := json.Unmarshal(payload, &h); err != nil {
				return progress, fmt.Errorf("%w: bad snapshot header", errTailProtocol)
			}
			if err := f.restore(r, h, watchdog, silence); err != nil {
				return progress, err
			}
			progress = true
		case frameHeartbeat:
		case frameRefused:
			return progress, fmt.Errorf("the member refused to serve this follower: %q", payload)
		default:
			return progress, fmt.Errorf("%w: frame type %d outside a snapshot", errTailProtocol, t)
		}
	}
}

func (f *follower) leaderID() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status.LeaderID
}

// heard records that the source sent something.
func (f *follower) heard() {
	f.mu.Lock()
	f.status.LastMessage = time.Now()
	f.mu.Unlock()
}

// setLeader records the leader the source names and tells watchers.
// A view of an older term is ignored: a source that missed an election
// (it lags, or was cut off) must not take the follower back to the
// leader before it.
func (f *follower) setLeader(l tailLeader) {
	f.mu.Lock()
	if l.Term < f.status.Term {
		f.mu.Unlock()
		return
	}
	changed := f.status.LeaderID != l.ID || f.status.LeaderAddress != l.Address || f.status.Term != l.Term
	f.status.LeaderID, f.status.LeaderAddress, f.status.Term = l.ID, l.Address, l.Term
	f.mu.Unlock()
	if changed {
		f.s.refresh()
	}
}

// apply applies one entry, which must be the next: a gap (or a repeat)
// ends the stream, and the next one asks from the applied index.
func (f *follower) apply(e tailEntry) error {
	if e.Index != f.applied+1 {
		return fmt.Errorf("%w: entry %d after %d", errTailProtocol, e.Index, f.applied)
	}
	switch e.Type {
	case raft.LogCommand:
		if err := f.s.knows(e.Index, e.Data); err != nil {
			return err
		}
		// Idempotent by index; the response is the command's own result,
		// the same on every node.
		f.s.fsm.Apply(&raft.Log{Index: e.Index, Term: e.Term, Type: e.Type, Data: e.Data})
		if err := f.s.fsm.failure(); err != nil {
			return err
		}
	case raft.LogConfiguration:
		conf, ms, err := decodeConfiguration(e.Data)
		if err != nil {
			return err
		}
		if err := f.learn(e.Index, ms); err != nil {
			return err
		}
		f.s.fsm.StoreConfiguration(e.Index, conf)
	}
	f.applied = e.Index
	f.mu.Lock()
	f.status.Applied = e.Index
	f.mu.Unlock()
	return nil
}

// knows returns nil when this release applies the command data of entry
// index as every node does, and otherwise an error wrapping
// ErrOlderThanCluster: its op is newer than state.LastOp, or it writes a
// setting this release does not know. Members refuse both at propose, so
// such an entry was proposed by a newer release (the upgrade gate,
// node/features.go, waits for every follower it knows; one it did not
// know, or a follower that was rolled back, stops here). Data that does
// not decode is left to Apply: invalid on every node alike.
func (s *Store) knows(index uint64, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	op := state.Op(data[0])
	newer := ""
	switch {
	case op > state.LastOp:
		newer = fmt.Sprintf("op %d it does not know (it applies ops 1 to %d)", op, state.LastOp)
	case op == state.OpPutSetting:
		c, err := state.DecodeCommand(data)
		if err == nil && !state.KnownSetting(c.Name) {
			newer = fmt.Sprintf("a write of the setting %q it does not know", truncateName(c.Name))
		}
	}
	if newer == "" {
		return nil
	}
	return &olderError{fmt.Sprintf("this node (version %s) is older than the cluster: entry %d has %s; upgrade it",
		cmp.Or(s.cfg.Version, "unknown"), index, newer)}
}

// olderError is ErrOlderThanCluster with what the entry was.
type olderError struct{ msg string }

func (e *olderError) Error() string        { return e.msg }
func (e *olderError) Is(target error) bool { return target == ErrOlderThanCluster }

// truncateName bounds a name a hostile or newer peer chose, for messages.
func truncateName(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// learn records and persists a configuration. One that names this node
// ends the tail (errBecameMember): the leader replicates to it through
// raft from now on, and two appliers must never run at once (the node
// should have called StopFollowing before it asked to be added; this is
// the safety net).
func (f *follower) learn(index uint64, ms []Member) error {
	b, err := json.Marshal(tailRecord{Index: index, Members: ms})
	if err != nil {
		return err
	}
	if err := (&stableStore{db: f.s.raftDB}).Set(keyTailConfig, b); err != nil {
		return err
	}
	f.mu.Lock()
	f.learned = ms
	f.mu.Unlock()
	if slices.ContainsFunc(ms, func(m Member) bool { return m.ID == f.s.cfg.NodeID }) {
		return errBecameMember
	}
	return nil
}

// restore receives a snapshot into a file beside the state, checks it
// whole (format, bounds, no rollback) and only then replaces the state
// with it: a source that stops or lies mid-way leaves the state as it was.
func (f *follower) restore(r io.Reader, h tailSnapshot, watchdog *time.Timer, silence time.Duration) error {
	if h.Index <= f.applied {
		return fmt.Errorf("%w: a snapshot at index %d, this node applied %d (a rollback)", errTailProtocol, h.Index, f.applied)
	}
	if err := checkMembers(h.Members); err != nil {
		return err
	}
	path := filepath.Join(f.s.cfg.Dir, "tail-snapshot.tmp")
	file, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("consensus: spooling a snapshot: %w", err)
	}
	defer os.Remove(path)
	defer file.Close()
	if err := receiveSnapshot(r, file, func() bool { f.heard(); return watchdog.Reset(silence) }); err != nil {
		return err
	}
	if _, err := file.Seek(0, io.SeekStart); err != nil {
		return err
	}
	stateIdx, unknown, err := snapshotApplied(file)
	if err != nil {
		return fmt.Errorf("%w: snapshot at %d: %w", errTailProtocol, h.Index, err)
	}
	if unknown != "" {
		// As for an entry (knows): restoring it would keep records this
		// release applies no rules to, and part its state from the
		// cluster's.
		return &olderError{fmt.Sprintf("this node (version %s) is older than the cluster: the snapshot at index %d holds %s it does not know; upgrade it",
			cmp.Or(f.s.cfg.Version, "unknown"), h.Index, unknown)}
	}
	cur, err := f.s.fsm.appliedIndex()
	if err != nil {
		return err
	}
	if stateIdx > h.Index || stateIdx < cur {
		return fmt.Errorf("%w: snapshot at %d holds a state applied through %d, this node's is at %d", errTailProtocol, h.Index, stateIdx, cur)
	}
	if _, err := file.Seek(0, io.SeekStart); err != nil {
		return err
	}
	watchdog.Stop() // the source waits while the state loads
	defer watchdog.Reset(silence)
	if err := f.s.fsm.Restore(io.NopCloser(file)); err != nil {
		// Restore dropped the state first: it cannot go on from here.
		return f.s.fsm.fail(h.Index, err)
	}
	f.applied = h.Index
	f.mu.Lock()
	f.status.Applied = h.Index
	f.status.Snapshots++
	f.mu.Unlock()
	f.s.log.Info("metadata tail restored a snapshot", "index", h.Index, "state_index", stateIdx)
	return f.learn(h.Index, h.Members)
}

// receiveSnapshot copies the chunks of a snapshot to w until its end
// frame, which must give the length received; alive is called after
// each frame and false means the stream was closed meanwhile.
func receiveSnapshot(r io.Reader, w io.Writer, alive func() bool) error {
	var total uint64
	for {
		t, p, err := readFrame(r)
		if err != nil {
			return fmt.Errorf("receiving a snapshot: %w", err)
		}
		if !alive() {
			return errors.New("receiving a snapshot: stream closed")
		}
		switch t {
		case frameChunk:
			total += uint64(len(p))
			if total > maxTailSnapshot {
				return fmt.Errorf("%w: snapshot above %d bytes", errTailProtocol, uint64(maxTailSnapshot))
			}
			if _, err := w.Write(p); err != nil {
				return fmt.Errorf("consensus: spooling a snapshot: %w", err)
			}
		case frameSnapshotEnd:
			if len(p) != 8 || binary.BigEndian.Uint64(p) != total {
				return fmt.Errorf("%w: snapshot end does not match the %d bytes sent", errTailProtocol, total)
			}
			return nil
		case frameHeartbeat:
		default:
			return fmt.Errorf("%w: frame type %d inside a snapshot", errTailProtocol, t)
		}
	}
}

// snapshotApplied reads a whole snapshot stream (fsm.go's format, with its
// bounds) and returns the applied index of the state it holds, and the
// first of its keys this release does not know (state.UnknownKey; "" if
// none).
func snapshotApplied(r io.Reader) (idx uint64, unknown string, err error) {
	_, err = readSnapshot(bufio.NewReaderSize(r, 1<<20), func(k, v []byte) error {
		if string(k) == state.KeyApplied {
			idx = state.DecodeUint64(v)
		}
		if unknown == "" {
			unknown = state.UnknownKey(k)
		}
		return nil
	})
	return idx, unknown, err
}
