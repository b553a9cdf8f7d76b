package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/node/fetch"
)

// Blobs from origins (upstream registries), fetched once per cluster: the
// glue between the node and fetch.OriginSource. A read of a mirrored
// repository that no peer can serve goes to the member rendezvous hashing
// chooses among the live members (of this region, per region); the others
// ask it over originProtocol and cut through behind it.

// originProtocol asks the member chosen for a blob to fetch it from its
// origin (a fetch.OriginRequest, JSON); the answer (originAnswer) comes
// once the first bytes arrived, or the fetch failed or did not start.
// Members only (peerGate); the request names a configured origin and a
// repository, never a URL.
const originProtocol = "/meshreg/origin-fetch/1.0.0"

// originFlowWait bounds how long the chosen member waits for the first
// bytes from the origin before it answers (within rpcTimeout, and within
// the asker's fetch.OriginConfig.DelegateTimeout).
const originFlowWait = 15 * time.Second

// originAnswer is the answer on originProtocol.
type originAnswer struct {
	OK      bool   `json:"ok"`
	Message string `json:"message,omitempty"`
}

func (n *Node) newOriginSource(peers *fetch.Peers) *fetch.OriginSource {
	return fetch.NewOriginSource(fetch.OriginConfig{
		Self: n.host.ID(), Origins: nodeOrigins{n: n}, Fetchers: n.originFetchers,
		Delegator: originDelegator{n: n}, Peers: peers, Idle: n.cfg.PeerIdleTimeout,
		DelegateTimeout: originFlowWait + 5*time.Second,
		Metrics: fetch.OriginMetrics{Blobs: n.metrics.originBlobs, Bytes: n.metrics.originBytes,
			Delegated: n.metrics.originDelegated, Fallbacks: n.metrics.originFallbacks},
		Log: n.log,
	})
}

// nodeOrigins are the node's origins, looked up at each call: those of
// Config.Origins (the upstreams; nil: none).
type nodeOrigins struct{ n *Node }

var _ fetch.RegionalOrigins = nodeOrigins{}

func (o nodeOrigins) Origin(name string) (fetch.OriginFunc, bool) {
	if o.n.cfg.Origins == nil {
		return nil, false
	}
	return o.n.cfg.Origins.Origin(name)
}

// FetchPerRegion: the origin's own setting if it has one, else
// --upstream-fetch.
func (o nodeOrigins) FetchPerRegion(name string) bool {
	if r, ok := o.n.cfg.Origins.(fetch.RegionalOrigins); ok {
		return r.FetchPerRegion(name)
	}
	return o.n.cfg.OriginFetchPerRegion
}

// originFetchers are the members that may fetch from origin name: this
// node and the live members, only those of this node's region when one
// member per region fetches from it.
func (n *Node) originFetchers(name string) []peer.ID {
	perRegion := nodeOrigins{n: n}.FetchPerRegion(name)
	out := []peer.ID{n.host.ID()}
	for _, p := range n.livePeers() {
		if perRegion && n.cfg.Region != "" && !n.peers.inRegion(p, n.cfg.Region) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// inRegion reports whether p is known to run in region.
func (b *peerBook) inRegion(p peer.ID, region string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	l, ok := b.labels[p]
	return ok && l.Region == region
}

// mirrorOrigin is the origin of repository repo: <NAME>/<rest> with NAME a
// configured origin reads from origin NAME, repository <rest>; nil for
// any other repository (pushed content, served from the cluster only).
func (n *Node) mirrorOrigin(repo string) *fetch.Origin {
	if up, rest, ok := n.mirror.Split(repo); ok {
		return &fetch.Origin{Name: up, Repo: rest} // <NS>/<repo>: NS is the upstream's name with ':' as '-'
	}
	name, rest, ok := strings.Cut(repo, "/")
	if !ok || rest == "" {
		return nil
	}
	if _, known := (nodeOrigins{n: n}).Origin(name); !known {
		return nil
	}
	return &fetch.Origin{Name: name, Repo: rest}
}

// OpenOriginBlob reads blob d of size bytes from this node's disk, else
// from peers, else from origin: fetched there by one member of the
// cluster (rendezvous hashing), the others streaming from it as its bytes
// arrive. The reader streams while the fetch goes on; its last byte comes
// only once the digest is verified. For a blob not linked in any
// repository yet (OpenBlob reads linked ones).
func (n *Node) OpenOriginBlob(ctx context.Context, d digest.Digest, size int64, origin fetch.Origin) (io.ReadSeekCloser, error) {
	if f, got, err := n.blobs.OpenVerified(d); err == nil {
		if got == size {
			n.noteRead(d, &origin)
			n.metrics.reads.WithLabelValues("local").Inc()
			return f, nil
		}
		f.Close()
	}
	return n.openFetched(ctx, d, size, &origin)
}

// serveOriginFetch is the chosen member's side of originProtocol: it
// checks the request, starts (or joins) the fetch of the blob from its
// origin, and answers once the first bytes arrived, so that the asker's
// peer fetch finds them.
func (n *Node) serveOriginFetch(ctx context.Context, from peer.ID, raw []byte) []byte {
	answer := func(err error) []byte {
		a := originAnswer{OK: err == nil}
		if err != nil {
			a.Message = err.Error()
		}
		b, _ := json.Marshal(a)
		return b
	}
	if !n.isClusterPeer(from) { // a follower asks the member the rendezvous chose
		return answer(errors.New("not a member of this cluster"))
	}
	var req fetch.OriginRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return answer(fmt.Errorf("bad origin fetch request: %w", err))
	}
	if err := req.Validate(nodeOrigins{n: n}); err != nil {
		n.log.Warn("refused an origin fetch asked for by a member", "peer", from, "err", err)
		return answer(err)
	}
	f, err := n.fetches.Start(fetch.Request{Digest: req.Digest, Size: req.Size, Delegated: true,
		Origin: &fetch.Origin{Name: req.Origin, Repo: req.Repo}})
	if err != nil {
		return answer(fmt.Errorf("cannot fetch blob %s here: %w", req.Digest, err))
	}
	wait, cancel := context.WithTimeout(ctx, originFlowWait)
	defer cancel()
	select {
	case <-wait.Done():
		return answer(fmt.Errorf("no bytes of blob %s from origin %s within %s", req.Digest, req.Origin, originFlowWait))
	case <-f.Flowing():
	}
	select {
	case <-f.Done():
		if f.Err() != nil {
			return answer(f.Err())
		}
	default:
	}
	return answer(nil)
}

// originDelegator asks members over originProtocol.
type originDelegator struct{ n *Node }

func (o originDelegator) Delegate(ctx context.Context, to peer.ID, req fetch.OriginRequest) error {
	raw, err := json.Marshal(req)
	if err != nil {
		return err
	}
	resp, err := o.n.host.Request(ctx, to, originProtocol, raw, maxControlLen)
	if err != nil {
		return err
	}
	var a originAnswer
	if err := json.Unmarshal(resp, &a); err != nil {
		return fmt.Errorf("bad answer from %s: %w", to, err)
	}
	if !a.OK {
		return fmt.Errorf("refused: %s", a.Message)
	}
	return nil
}
