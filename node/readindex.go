package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshreg/meshreg/api/oci"
	"github.com/meshreg/meshreg/consensus"
)

// Reads are local. A read that finds nothing must not answer 404 from a
// state that lags: a tag acknowledged by the leader a moment ago, or just
// before the leader died, may not be applied here yet, and a 404 is final
// to kubelet and containerd. So a miss first catches up (catchUp): it asks
// the leader for its read index (consensus.Store.ReadIndex: confirmed
// leadership, every acknowledged write below it) and waits until this node
// applied that far; only then is a miss a 404. While no leader answers
// (an election), it retries until readCatchUpTimeout and then answers 503
// with Retry-After, never 404. Hits never leave the node.
//
// The queries are coalesced: misses that arrive while one is in flight
// share the next one (not the one in flight, which may have left before
// their write was acknowledged), so a burst of misses costs the leader two
// queries, and at most maxCatchUpWaiters reads wait at once.

const (
	// readCatchUpTimeout bounds the catch-up of a read that found nothing:
	// long enough for a new leader to be elected on loopback and LANs
	// (an election timeout of 0.5-1 s after a heartbeat timeout of 0.5 s).
	readCatchUpTimeout = 3 * time.Second
	// readIndexTimeout bounds one query to the leader (a leader cut off
	// mid-query).
	readIndexTimeout = time.Second
	// maxCatchUpWaiters bounds the reads waiting to catch up on a node.
	maxCatchUpWaiters = 4096
	// catchUpRetryAfter is the Retry-After of a read that could not catch up.
	catchUpRetryAfter = time.Second
)

// errTooManyWaiters refuses a read when maxCatchUpWaiters wait already.
var errTooManyWaiters = errors.New("node: too many reads waiting for the leader's index")

// readIndexes coalesces the queries for the leader's read index.
type readIndexes struct {
	query func(ctx context.Context) (uint64, error) // one query
	work  *workers                                  // owns the goroutine running the queries

	mu      sync.Mutex
	running *readFlight // in flight
	next    *readFlight // starts when running ends; new waiters join it
	waiting int
}

type readFlight struct {
	done  chan struct{} // closed once index and err are set
	index uint64
	err   error
}

// get returns a read index obtained by a query that started after the
// call, or the query's error, or ctx's.
func (r *readIndexes) get(ctx context.Context) (uint64, error) {
	r.mu.Lock()
	if r.waiting >= maxCatchUpWaiters {
		r.mu.Unlock()
		return 0, errTooManyWaiters
	}
	r.waiting++
	f := r.next
	switch {
	case r.running == nil:
		f = &readFlight{done: make(chan struct{})}
		r.running = f
		r.start(f)
	case f == nil:
		f = &readFlight{done: make(chan struct{})}
		r.next = f
	}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.waiting--
		r.mu.Unlock()
	}()
	select {
	case <-f.done:
		return f.index, f.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// start runs f, then the flights queued behind it, on one goroutine owned
// by r.work; callers hold r.mu.
func (r *readIndexes) start(f *readFlight) {
	ok := r.work.Go(func() {
		for f != nil {
			ctx, cancel := context.WithTimeout(r.work.Context(), readIndexTimeout)
			f.index, f.err = r.query(ctx)
			cancel()
			close(f.done)
			r.mu.Lock()
			f, r.running, r.next = r.next, r.next, nil
			r.mu.Unlock()
		}
	})
	if !ok { // the node is closing
		f.err = errShuttingDown
		close(f.done)
		r.running = nil
	}
}

// queryReadIndex asks the leader for its read index: this node's metadata
// store when it leads, else the leader over indexProtocol.
func (n *Node) queryReadIndex(ctx context.Context) (uint64, error) {
	n.metrics.indexQueries.Inc()
	st := n.meta.Status()
	switch {
	case st.State == consensus.Leader:
		return n.meta.ReadIndex(ctx)
	case st.LeaderID == "":
		return 0, fmt.Errorf("no leader known (this node is %s): %w", st.State, consensus.ErrNotLeader)
	}
	id, err := peerOf(n.host, consensus.Server{ID: st.LeaderID, Address: st.LeaderAddress})
	if err != nil {
		return 0, err
	}
	resp, err := n.host.Request(ctx, id, indexProtocol, nil, maxControlLen)
	if err != nil {
		return 0, fmt.Errorf("asking leader %s for its index: %w", id, err)
	}
	var res indexResult
	if err := json.Unmarshal(resp, &res); err != nil {
		return 0, fmt.Errorf("asking leader %s for its index: bad answer: %w", id, err)
	}
	if res.Error != "" {
		return 0, fmt.Errorf("asking leader %s for its index: %s: %w", id, res.Error, consensus.ErrNotLeader)
	}
	return res.Index, nil
}

// indexResult is the answer of indexProtocol.
type indexResult struct {
	Index uint64 `json:"index,omitempty"`
	Error string `json:"error,omitempty"`
}

// indexProtocol asks the leader for its read index: a node that waits
// until it has applied as far has seen every write acknowledged before it
// asked (a read barrier). The request is empty, the answer an indexResult.
const indexProtocol = "/meshreg/index/1.0.0"

func (n *Node) serveIndex(ctx context.Context, from peer.ID, _ []byte) []byte {
	ctx, cancel := context.WithTimeout(ctx, readIndexTimeout)
	defer cancel()
	var res indexResult
	idx, err := n.meta.ReadIndex(ctx)
	if err != nil {
		res.Error = err.Error()
	} else {
		res.Index = idx
	}
	out, _ := json.Marshal(res)
	return out
}

// Barrier waits until this node's state holds every write acknowledged
// before the call (reads with ?consistent=1).
func (n *Node) Barrier(ctx context.Context) error { return n.catchUp(ctx) }

// catchUp waits until this node has applied every write acknowledged
// before the call, on the leader as elsewhere, retrying while no leader
// answers, for at most readCatchUpTimeout. It fails with an UNAVAILABLE
// OCI error (503, Retry-After) that wraps consensus.ErrNotLeader.
func (n *Node) catchUp(ctx context.Context) error {
	if rev := n.revokedSelf(); rev != nil {
		// No member answers it any more (revoke.go): say so at once.
		return oci.Wrap(oci.Unavailable, errRevoked, rev.problem())
	}
	ctx, cancel := context.WithTimeout(ctx, readCatchUpTimeout)
	defer cancel()
	backoff := 10 * time.Millisecond
	for {
		idx, err := n.readIndexes.get(ctx)
		if err == nil {
			if err = n.meta.WaitApplied(ctx, idx); err == nil {
				n.metrics.catchUps.WithLabelValues("caught_up").Inc()
				return nil
			}
			err = fmt.Errorf("waiting to apply the leader's index %d (this node applied %d): %w", idx, n.meta.AppliedIndex(), err)
		}
		if errors.Is(err, errTooManyWaiters) {
			n.metrics.catchUps.WithLabelValues("unavailable").Inc()
			return oci.Wrap(oci.Unavailable, err, "too many reads are waiting for the cluster's leader on this node: retry shortly").
				WithRetryAfter(catchUpRetryAfter)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			n.log.Debug("a read that missed could not catch up with the leader", "err", err)
			n.metrics.catchUps.WithLabelValues("unavailable").Inc()
			return oci.Wrap(oci.Unavailable, fmt.Errorf("%w: %w", consensus.ErrNotLeader, err),
				"this node cannot tell yet whether it lacks the content: no Raft leader answered within "+readCatchUpTimeout.String()+
					" (an election may be under way); retry shortly").WithRetryAfter(catchUpRetryAfter)
		case <-t.C:
		}
		backoff = min(2*backoff, 50*time.Millisecond)
	}
}
