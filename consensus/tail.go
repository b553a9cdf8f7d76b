package consensus

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/raft"
)

// The server side of a metadata follower's tail (follow.go has the
// follower, tailwire.go the frames). A member streams its committed log
// to the follower: entries from the follower's index on, read from its
// Raft log store; the newest snapshot (raft's own, on disk) when the log
// no longer holds them; the leader it knows whenever that changes; a
// heartbeat when it has had nothing else to send for a while. It wakes on
// the applied and cluster events (watch.go), with a slow ticker, every
// half heartbeat, for the heartbeat and for the entries that publish no
// event (barriers, a new leader's no-op): those carry no state, so nothing
// waits for them.
//
// The ticker was every 250 ms: four wake-ups a second for each follower a
// member serves, a cost that grew with the followers per member (99 of them
// for each of 10 members in a cluster of 1,000 nodes). At half the
// heartbeat (1 s by default) it is one, and a barrier's index reaches the
// follower within a second of its commit; every write's entry still goes
// out at once, on its applied event.

// tailRequestTimeout bounds the wait for the follower's request.
const tailRequestTimeout = 10 * time.Second

// ServeTail serves one follower on conn until ctx ends, the stream breaks
// or the store closes; it closes conn. The node calls it from its libp2p
// stream handler after its own admission check. A store that follows
// refuses (ErrFollowing): followers do not relay.
//
// sent, if not nil, is told the index the follower applied through when
// its request arrives, then the index sent through after each batch of
// entries or snapshot (the follower applies them in order): the node's
// view of the followers it serves. It runs on ServeTail's goroutine and
// must not block.
func (s *Store) ServeTail(ctx context.Context, conn io.ReadWriteCloser, sent func(through uint64)) error {
	defer conn.Close()
	if s.Following() {
		return fmt.Errorf("consensus: serving a tail: %w", ErrFollowing)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Closing the stream unblocks a read or write in flight.
	defer context.AfterFunc(ctx, func() { _ = conn.Close() })()
	go func() { // ends with ctx, at the latest when ServeTail returns
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()

	timer := time.AfterFunc(tailRequestTimeout, func() { _ = conn.Close() })
	req, err := readTailRequest(conn)
	timer.Stop()
	if err != nil {
		return fmt.Errorf("consensus: serving a tail: %w", err)
	}
	// The follower sends nothing more: a read that returns means it
	// closed the stream (or broke the protocol). Ends when conn closes.
	go func() {
		var b [1]byte
		_, _ = conn.Read(b[:])
		cancel()
	}()
	if sent == nil {
		sent = func(uint64) {}
	}
	sent(req.After)
	t := &tailServer{s: s, w: bufio.NewWriterSize(conn, 64<<10), next: req.After + 1, hb: req.Heartbeat, sent: sent}
	err = t.run(ctx)
	if ctx.Err() != nil {
		return nil // the follower left, or the store closed
	}
	return fmt.Errorf("consensus: serving a tail from index %d: %w", req.After+1, err)
}

// tailServer is one follower's stream.
type tailServer struct {
	s        *Store
	w        *bufio.Writer
	next     uint64 // the index the follower needs next
	hb       time.Duration
	lastSent time.Time
	leader   tailLeader
	sent     func(through uint64) // see ServeTail
}

func (t *tailServer) run(ctx context.Context) error {
	st, changes := t.s.Watch(ctx)
	_, applied := t.s.WatchApplied(ctx)
	poll := time.NewTicker(t.hb / 2)
	defer poll.Stop()
	for {
		if err := t.sendLeader(st); err != nil {
			return err
		}
		if err := t.catchUp(ctx); err != nil {
			return err
		}
		if time.Since(t.lastSent) >= t.hb {
			if err := t.send(frameHeartbeat, nil); err != nil {
				return err
			}
		}
		if err := t.w.Flush(); err != nil {
			return err
		}
		var open bool
		select {
		case <-ctx.Done():
			return ctx.Err()
		case st, open = <-changes:
		case _, open = <-applied:
		case <-poll.C:
			open = true
		}
		if !open {
			return fmt.Errorf("consensus: %w", ErrClosed)
		}
	}
}

func (t *tailServer) send(typ byte, payload []byte) error {
	t.lastSent = time.Now()
	return writeFrame(t.w, typ, payload)
}

// sendLeader sends the leader of st if it is not the one sent last. A
// leader raft does not know (this store follows) is the tail's.
func (t *tailServer) sendLeader(st State) error {
	l := tailLeader{ID: st.LeaderID, Address: st.LeaderAddress, Term: st.Term}
	if l == t.leader && !t.lastSent.IsZero() {
		return nil
	}
	t.leader = l
	t.lastSent = time.Now()
	return writeJSONFrame(t.w, frameLeader, l)
}

// catchUp sends what is committed (raft's applied index) from t.next on:
// entries while the log holds them, else the newest snapshot.
func (t *tailServer) catchUp(ctx context.Context) error {
	for ctx.Err() == nil {
		limit := t.s.raft.AppliedIndex()
		if t.next > limit {
			return nil
		}
		es, err := t.s.readEntries(t.next, limit)
		switch {
		case errors.Is(err, errCompacted):
			if err := t.sendSnapshot(); err != nil {
				return err
			}
			continue
		case err != nil:
			return err
		}
		if err := t.send(frameEntries, encodeEntries(es)); err != nil {
			return err
		}
		t.next = es[len(es)-1].Index + 1
		t.sent(t.next - 1)
	}
	return nil
}

// errCompacted: the log no longer holds the entry asked for.
var errCompacted = errors.New("log compacted")

// readEntries reads a batch of entries from next to at most limit,
// bounded by tailBatchCount and tailBatchBytes (one entry at least).
// Entries other than commands and configurations travel without data:
// the follower only needs their index. errCompacted if next is gone.
func (s *Store) readEntries(next, limit uint64) ([]tailEntry, error) {
	s.mu.RLock() // Close waits before it closes the log's database
	defer s.mu.RUnlock()
	if s.closed {
		return nil, fmt.Errorf("consensus: %w", ErrClosed)
	}
	first, err := s.logs.FirstIndex()
	if err != nil {
		return nil, err
	}
	if first == 0 || next < first {
		return nil, errCompacted
	}
	var es []tailEntry
	size := 0
	for i := next; i <= limit && len(es) < tailBatchCount && (len(es) == 0 || size < tailBatchBytes); i++ {
		var l raft.Log
		err := s.logs.GetLog(i, &l)
		if errors.Is(err, raft.ErrLogNotFound) && i == next {
			return nil, errCompacted // compacted since FirstIndex
		}
		if err != nil {
			return nil, fmt.Errorf("consensus: reading log entry %d for a tail: %w", i, err)
		}
		e := tailEntry{Index: l.Index, Term: l.Term, Type: l.Type}
		if l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			e.Data = l.Data
		}
		if len(e.Data) > maxTailEntry {
			return nil, fmt.Errorf("consensus: log entry %d is %d bytes, above the tail's bound %d", i, len(e.Data), maxTailEntry)
		}
		size += len(e.Data) + 32
		if size > maxEntriesFrame-64 && len(es) > 0 {
			break
		}
		es = append(es, e)
	}
	return es, nil
}

// sendSnapshot sends raft's newest snapshot (fsm.go's stream, as raft
// persisted it), with the index it covers and the current configuration.
func (t *tailServer) sendSnapshot() error {
	metas, err := t.s.snaps.List()
	if err != nil {
		return fmt.Errorf("consensus: listing snapshots for a tail: %w", err)
	}
	if len(metas) == 0 {
		return fmt.Errorf("consensus: entry %d is compacted but there is no snapshot", t.next)
	}
	meta, rc, err := t.s.snaps.Open(metas[0].ID)
	if err != nil {
		return fmt.Errorf("consensus: opening snapshot %s for a tail: %w", metas[0].ID, err)
	}
	defer rc.Close()
	if meta.Index < t.next {
		return fmt.Errorf("consensus: entry %d is compacted but the newest snapshot is at %d", t.next, meta.Index)
	}
	members := []Member{}
	if f := t.s.raft.GetConfiguration(); f.Error() == nil {
		members = membersOf(f.Configuration())
	}
	if err := writeJSONFrame(t.w, frameSnapshot, tailSnapshot{Index: meta.Index, Term: meta.Term, Members: members}); err != nil {
		return err
	}
	buf := make([]byte, tailChunk)
	var total uint64
	for {
		n, err := io.ReadFull(rc, buf)
		if n > 0 {
			total += uint64(n)
			if err := t.send(frameChunk, buf[:n]); err != nil {
				return err
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("consensus: reading snapshot %s for a tail: %w", meta.ID, err)
		}
	}
	if err := t.send(frameSnapshotEnd, binary.BigEndian.AppendUint64(nil, total)); err != nil {
		return err
	}
	t.s.log.Info("sent a snapshot to a metadata follower", "index", meta.Index, "bytes", total)
	t.next = meta.Index + 1
	t.sent(meta.Index)
	return nil
}

// RefuseTail turns a follower away on conn with reason (at most
// maxTailRefusal bytes are sent), then closes conn: the follower tails
// another member. The node calls it when it serves all the followers it
// may. It reads the request first, so that the follower, which writes it
// before it reads, always gets the reason.
func RefuseTail(conn io.ReadWriteCloser, reason string) error {
	defer conn.Close()
	timer := time.AfterFunc(tailRequestTimeout, func() { _ = conn.Close() })
	defer timer.Stop()
	if _, err := readTailRequest(conn); err != nil {
		return fmt.Errorf("consensus: refusing a tail: %w", err)
	}
	if len(reason) > maxTailRefusal {
		reason = reason[:maxTailRefusal]
	}
	if err := writeFrame(conn, frameRefused, []byte(reason)); err != nil {
		return fmt.Errorf("consensus: refusing a tail: %w", err)
	}
	return nil
}
