package node

import (
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/p2p"
)

// servePerBlob is how many peers this node sends one blob to at a time.
// A further peer is redirected to those already fetching it, which serve it
// on as it arrives: simultaneous first pulls form a chain instead of all
// pulling from the one node that has the blob.
const servePerBlob = 1

// serveBlob is this node's side of p2p.BlobProtocol: it serves a complete
// blob from disk, or the part of a blob it is itself fetching.
func (n *Node) serveBlob(ctx context.Context, from peer.ID, req p2p.BlobRequest) (p2p.BlobAnswer, io.ReadCloser) {
	if !n.isClusterPeer(from) { // members and admitted followers
		return p2p.BlobAnswer{Status: p2p.BlobRefused, Message: "not a member of this cluster"}, nil
	}
	d := req.Digest
	if d.Validate() != nil || req.Offset < 0 {
		return p2p.BlobAnswer{Status: p2p.BlobRefused, Message: "bad digest or offset"}, nil
	}
	// The slot is taken before the blob is opened (which may hash it
	// whole first, see openForPeer): askers arriving together at the start
	// of a fan-out would otherwise all find it free and all be served,
	// instead of forming a chain.
	stop, others := n.claimServing(d, from, !req.NoRedirect)
	if stop == nil {
		return p2p.BlobAnswer{Status: p2p.BlobBusy, Redirect: others}, nil
	}
	var (
		body  io.ReadSeekCloser
		size  int64
		depth int
	)
	if file, sz, err := n.openForPeer(ctx, d); err == nil {
		body, size = file, sz
	} else if r, sz, dep := n.inFlight(d, from, req.CompleteOnly); r != nil {
		body, size, depth = r, sz, dep
	} else {
		stop()
		return p2p.BlobAnswer{Status: p2p.BlobNotFound}, nil
	}
	if req.Offset > size {
		stop()
		body.Close()
		return p2p.BlobAnswer{Status: p2p.BlobRefused, Message: "offset past the end"}, nil
	}
	if _, err := body.Seek(req.Offset, io.SeekStart); err != nil {
		stop()
		body.Close()
		return p2p.BlobAnswer{Status: p2p.BlobNotFound, Message: err.Error()}, nil
	}
	// Pinned while it streams, so garbage collection keeps it (a file it
	// deletes between the open and the pin is still read whole: the open
	// file keeps its inode).
	unpin := n.pinBlob(d)
	n.noteRead(d, nil)
	release := func() { stop(); unpin() }
	var r io.Reader = body
	if n.opts.serveFault != nil {
		r = n.opts.serveFault(d, r)
	}
	return p2p.BlobAnswer{Status: p2p.BlobOK, Size: size, Depth: depth},
		&servedBlob{Reader: r, c: body, n: n, release: release, d: d, to: from}
}

// peerVerifyFirst is the largest blob not verified since the start that is
// hashed whole before a peer gets its first byte (a few seconds at most,
// within the fetcher's answer timeout); a larger one is verified as it
// streams.
const peerVerifyFirst = 1 << 30

// openForPeer opens a complete blob to send to a peer. A copy verified
// since the start (and unchanged) is the file itself. Another one up to
// peerVerifyFirst is hashed whole first: a rotten copy is quarantined and
// the peer told this node does not hold it, so the peer never takes part
// of a rotten copy and blames the honest peer it resumes from. A larger
// one is verified as it streams: a mismatch resets the stream before the
// last byte, and the fetcher's digest check drops what it received.
func (n *Node) openForPeer(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, int64, error) {
	file, size, err := n.blobs.OpenVerified(d)
	if err != nil {
		return nil, 0, err
	}
	if _, plain := file.(*os.File); plain || size > peerVerifyFirst {
		return file, size, nil
	}
	file.Close()
	if err := n.blobs.Verify(ctx, d, false, nil); err != nil {
		return nil, 0, err
	}
	return n.blobs.OpenVerified(d)
}

// inFlight returns a reader of the part of d this node is fetching, when
// it can serve it: it has a source already (so a depth), that source is not
// the asker (two nodes must not wait on each other), and the asker takes
// partial copies.
func (n *Node) inFlight(d digest.Digest, from peer.ID, completeOnly bool) (io.ReadSeekCloser, int64, int) {
	if completeOnly {
		return nil, 0, 0
	}
	return n.fetches.Reader(d, from)
}

// claimServing records that this node serves d to asker, unless limit is
// set and it already serves d to servePerBlob other peers, or sent it
// whole to others within servedLately: then it returns a nil release and
// those peers (for a redirect). The check and the record are one step, so
// concurrent askers cannot all pass the check.
//
// The peers served lately matter in a fan-out: the first copy from the
// pusher ends before most askers come to it, and each one that found it
// idle would get a copy of its own, from the one node that had the blob,
// while peers that hold it complete now are idle. Only those not known to
// be in another zone than the asker are named: the asker chose this node
// as its nearest holder.
func (n *Node) claimServing(d digest.Digest, asker peer.ID, limit bool) (release func(), others []string) {
	n.fetchMu.Lock()
	defer n.fetchMu.Unlock()
	if limit {
		for p := range n.serving[d] {
			if p != asker {
				others = append(others, p.String())
			}
		}
		if len(others) < servePerBlob {
			now := time.Now()
			for _, s := range n.served[d] {
				if s.to != asker && now.Sub(s.at) < servedLately && !slices.Contains(others, s.to.String()) &&
					(n.peers == nil || !n.peers.apart(s.to, asker)) {
					others = append(others, s.to.String())
				}
			}
		}
		if len(others) >= servePerBlob {
			return nil, others
		}
	}
	return n.startServingLocked(d, asker), nil
}

// servedTo is a peer this node sent a blob to, whole, and when.
type servedTo struct {
	to peer.ID
	at time.Time
}

const (
	// servedLately is how long a peer sent a whole blob is named in
	// redirects (claimServing): long enough for a fan-out to find it, short
	// enough that a peer that dropped the blob since is rarely named.
	servedLately = 30 * time.Second
	// maxServedPeers bounds the peers remembered per blob, maxServedBlobs
	// the blobs (past it, all are forgotten).
	maxServedPeers = 4
	maxServedBlobs = 1024
)

// noteServed remembers that this node sent d whole to p (see
// claimServing).
func (n *Node) noteServed(d digest.Digest, p peer.ID) {
	n.fetchMu.Lock()
	defer n.fetchMu.Unlock()
	if n.served == nil || len(n.served) >= maxServedBlobs {
		n.served = map[digest.Digest][]servedTo{}
	}
	now := time.Now()
	kept := slices.DeleteFunc(n.served[d], func(s servedTo) bool { return s.to == p || now.Sub(s.at) >= servedLately })
	if len(kept) >= maxServedPeers {
		kept = kept[1:]
	}
	n.served[d] = append(kept, servedTo{to: p, at: now})
}

// startServingLocked records that this node serves d to to, until the
// release; n.fetchMu is held.
func (n *Node) startServingLocked(d digest.Digest, to peer.ID) (release func()) {
	if n.serving[d] == nil {
		n.serving[d] = map[peer.ID]int{}
	}
	n.serving[d][to]++
	return func() {
		n.fetchMu.Lock()
		defer n.fetchMu.Unlock()
		if n.serving[d][to]--; n.serving[d][to] == 0 {
			delete(n.serving[d], to)
		}
		if len(n.serving[d]) == 0 {
			delete(n.serving, d)
		}
	}
}

// servedBlob counts the bytes sent and ends the serving record on Close.
type servedBlob struct {
	io.Reader
	c       io.Closer
	n       *Node
	release func()
	// d and to name the transfer; whole is set once the reader reached
	// its end (the peer was sent every byte: noteServed).
	d     digest.Digest
	to    peer.ID
	whole bool
}

func (s *servedBlob) Read(p []byte) (int, error) {
	m, err := s.Reader.Read(p)
	s.n.metrics.bytesServed.Add(float64(m))
	s.n.load.add(m, time.Now())
	if errors.Is(err, io.EOF) {
		s.whole = true
	}
	return m, err
}

func (s *servedBlob) Close() error {
	if s.whole {
		s.n.noteServed(s.d, s.to)
	}
	s.release()
	err := s.c.Close()
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}
