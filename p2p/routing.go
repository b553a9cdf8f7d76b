package p2p

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"time"

	"github.com/ipfs/go-cid"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multihash"
	"github.com/opencontainers/go-digest"
)

// DHTProtocolPrefix keeps meshreg's Kademlia DHT apart from the public IPFS
// one: peers speak /meshreg/kad/1.0.0, so a meshreg node never answers or
// pollutes the Amino DHT even on a public network.
const DHTProtocolPrefix = "/meshreg"

// Routing finds which peers hold a blob: a Kademlia DHT (go-libp2p-kad-dht)
// in server mode whose keys are blob digests as CIDs. Every node is a DHT
// server: the cluster is small and its members are reachable, so each one
// stores a share of the provider records.
//
// The routing table fills by itself: the DHT adds every connected peer that
// speaks its protocol, and cluster members are connected (Raft, the
// node's connect loop).
type Routing struct {
	dht    *dht.IpfsDHT
	log    *slog.Logger
	accept func(peer.ID) bool
}

// DHTProtocol is the Kademlia protocol id under DHTProtocolPrefix, the
// protocol the authorizer is asked about for DHT streams and for the
// routing table.
const DHTProtocol = DHTProtocolPrefix + "/kad/1.0.0"

// NewRouting starts the DHT on h. Close it before the host.
//
// Only peers h's authorizer accepts for DHTProtocol take part: the DHT's
// inbound streams go through the authorizer (a refused peer can neither
// store provider records here nor look any up), and its routing table
// keeps only accepted peers, so lookups never ask a refused peer and
// cannot be steered by one. Callers still check that the providers a
// lookup returns are members before fetching from them: a record names a
// peer, it does not prove that the peer is one of ours.
func NewRouting(h *Host, log *slog.Logger) (*Routing, error) {
	accept := func(p peer.ID) bool { return p == h.ID() || h.authorized(p, DHTProtocol) }
	d, err := dht.New(gatedHost{Host: h.h, gate: h},
		dht.Mode(dht.ModeServer),
		dht.ProtocolPrefix(DHTProtocolPrefix),
		dht.RoutingTableFilter(func(_ any, p peer.ID) bool { return accept(p) }),
		dht.QueryFilter(func(_ any, ai peer.AddrInfo) bool { return accept(ai.ID) }),
	)
	if err != nil {
		return nil, fmt.Errorf("p2p: start the DHT: %w", err)
	}
	return &Routing{dht: d, log: log, accept: accept}, nil
}

// AddPeer puts p, a peer the authorizer accepts, in the routing table. The
// DHT adds peers only when it meets them (a new connection, identify): a
// node that connected to its peers before it knew they were members
// refused them then, and would keep an empty table while connected to
// every one of them. The caller (the node's mesh loop) calls it for each
// member it is connected to.
func (r *Routing) AddPeer(p peer.ID) {
	if !r.accept(p) {
		return
	}
	if _, err := r.dht.RoutingTable().TryAddPeer(p, true, false); err != nil {
		r.log.Debug("p2p: adding a member to the DHT routing table", "peer", p, "err", err)
	}
}

// DigestCID is the DHT key of a blob: a CIDv1 (raw codec) wrapping the
// digest's own multihash, so nothing is hashed again.
func DigestCID(d digest.Digest) (cid.Cid, error) {
	var code uint64
	switch d.Algorithm() {
	case digest.SHA256:
		code = multihash.SHA2_256
	case digest.SHA512:
		code = multihash.SHA2_512
	default:
		return cid.Undef, fmt.Errorf("p2p: no multihash for digest algorithm %q", d.Algorithm())
	}
	raw, err := hex.DecodeString(d.Encoded())
	if err != nil {
		return cid.Undef, fmt.Errorf("p2p: digest %.80q: %w", d, err)
	}
	mh, err := multihash.Encode(raw, code)
	if err != nil {
		return cid.Undef, fmt.Errorf("p2p: digest %.80q: %w", d, err)
	}
	return cid.NewCidV1(cid.Raw, mh), nil
}

// Provide announces that this node holds (or is fetching) blob d: it stores
// a provider record at the peers closest to d's key. It fails when the
// routing table is empty (no peer to store the record at).
func (r *Routing) Provide(ctx context.Context, d digest.Digest) error {
	c, err := DigestCID(d)
	if err != nil {
		return err
	}
	if err := r.dht.Provide(ctx, c, true); err != nil {
		return fmt.Errorf("p2p: provide %s: %w", d, err)
	}
	return nil
}

// providerSettle is how long FindProviders keeps collecting after the first
// provider turns up: long enough for the other holders a small cluster's
// lookup finds at once, short enough that a DHT peer that does not answer
// (down, or across a partition) does not hold the fetch up.
const providerSettle = 100 * time.Millisecond

// FindProviders returns up to limit peers other than this one that
// announced blob d: those found within providerSettle of the first one,
// or all found by the time the lookup ends or ctx does.
func (r *Routing) FindProviders(ctx context.Context, d digest.Digest, limit int) ([]peer.ID, error) {
	c, err := DigestCID(d)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var found []peer.ID
	var settle <-chan time.Time
	results := r.dht.FindProvidersAsync(ctx, c, limit+1)
	for len(found) < limit {
		select {
		case ai, ok := <-results:
			if !ok {
				return found, nil
			}
			if ai.ID == r.dht.PeerID() {
				continue
			}
			found = append(found, ai.ID)
			if settle == nil {
				settle = time.After(providerSettle)
			}
		case <-settle:
			return found, nil
		}
	}
	return found, nil
}

// RoutingTableSize is how many peers the DHT's routing table holds.
func (r *Routing) RoutingTableSize() int { return r.dht.RoutingTable().Size() }

// Close stops the DHT.
func (r *Routing) Close() error { return r.dht.Close() }
