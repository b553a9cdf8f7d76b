package node

import (
	"context"
	"errors"
	"maps"
	"time"

	"github.com/meshreg/meshreg/consensus"
	"github.com/meshreg/meshreg/node/buildinfo"
	"github.com/meshreg/meshreg/node/mirror"
	"github.com/meshreg/meshreg/node/notify"
)

// Ready returns nil when the node can take writes.
func (n *Node) Ready(ctx context.Context) error {
	if n.join.removedWhileDown() || n.removed() {
		return errors.New(n.membershipProblem())
	}
	if !n.meta.Ready() {
		if w := n.join.describe(); w != "" {
			return errors.New("the metadata store has no Raft leader yet: " + w)
		}
		return errors.New("the metadata store has no Raft leader yet")
	}
	return nil
}

// Status is the document served at /_meshreg/v1/status.
type Status struct {
	NodeID      string           `json:"node_id"` // the peer id, also the Raft server id
	RaftAddress string           `json:"raft_address"`
	P2PAddrs    []string         `json:"p2p_addrs"`
	Version     string           `json:"version"`
	Build       buildinfo.Info   `json:"build"`
	DataDir     string           `json:"data_dir"`
	Uptime      string           `json:"uptime"`
	Blobs       BlobStatus       `json:"blobs"`
	Raft        consensus.Status `json:"raft"`
	Uploads     int              `json:"uploads_in_progress"`
	Region      string           `json:"region,omitempty"`
	Zone        string           `json:"zone,omitempty"`
	Replicas    int              `json:"replicas"`
	// DHTPeers is the size of the DHT routing table.
	DHTPeers int `json:"dht_peers"`
	// Peers are the nodes this one knows as sources of blobs.
	Peers []PeerStatus `json:"peers"`
	// MemberLastContact is when this node last had a libp2p connection to
	// each member (checked every second).
	MemberLastContact map[string]time.Time `json:"member_last_contact"`
	// Disk is the free space of the data dir's filesystem and whether
	// writes are refused for lack of it.
	Disk DiskStatus `json:"disk"`
	// Scrub is the background re-hashing of stored blobs.
	Scrub ScrubStatus `json:"scrub"`
	// Removed is true once this node was removed from the cluster (it
	// knows a configuration that no longer names it, or a member that
	// knows a leader told it so): it takes no writes until it joins again.
	// With --join it rejoins by itself at start, or once it finds out while
	// running (Join says through which target); without, restart it with
	// --join.
	Removed bool `json:"removed"`
	// Join is what the node waits for to become a member (a --join target
	// that fails, peers before a bootstrap, a rejoin after removal); absent
	// once it is one.
	Join *JoinStatus `json:"join,omitempty"`
	// Upstreams are the registries this node mirrors, with their last
	// success and last error.
	Upstreams []mirror.Status `json:"upstreams,omitempty"`
	// Notifications are the webhooks this node sends (absent without
	// --notifications).
	Notifications *notify.Status `json:"notifications,omitempty"`
}

// BlobStatus counts the blobs this node holds.
type BlobStatus struct {
	Count int64 `json:"count"`
	Bytes int64 `json:"bytes"`
	// Fetching is how many blobs are being fetched from peers now.
	Fetching int `json:"fetching"`
	// UnderReplicated is how many of the blobs this node holds had fewer
	// than min(replicas, live nodes) live copies at the last repair sweep
	// (-1: no sweep yet).
	UnderReplicated int64 `json:"under_replicated"`
	// Corrupt is how many stored blobs were found not to match their
	// digest since the node started (each quarantined and fetched again).
	Corrupt int64 `json:"corrupt"`
	// Quarantined is how many corrupt files were moved to quarantine/ in
	// the data dir since the node started.
	Quarantined int64 `json:"quarantined"`
}

func (n *Node) Status(ctx context.Context) any {
	count, bytes := n.blobs.Stats()
	fetching := n.fetches.InProgress()
	n.mu.Lock()
	uploads := len(n.uploads)
	contacts := maps.Clone(n.lastContact)
	n.mu.Unlock()
	var addrs []string
	for _, a := range n.host.Addrs() {
		addrs = append(addrs, a.String())
	}
	return Status{
		NodeID:      n.host.ID().String(),
		RaftAddress: n.host.RaftAddress(),
		P2PAddrs:    addrs,
		Version:     n.cfg.Version,
		Build:       n.cfg.Build,
		DataDir:     n.cfg.DataDir,
		Uptime:      time.Since(n.started).Round(time.Second).String(),
		Blobs:       BlobStatus{Count: count, Bytes: bytes, Fetching: fetching, UnderReplicated: n.underReplicated.Load(), Corrupt: n.metrics.corruptCount.Load(), Quarantined: n.blobs.Quarantined()},
		Raft:        n.meta.Status(),
		Uploads:     uploads,
		Region:      n.cfg.Region,
		Zone:        n.cfg.Zone,
		Replicas:    n.cfg.Replicas,
		DHTPeers:    n.routing.RoutingTableSize(),

		Peers: n.peers.snapshot(),

		MemberLastContact: contacts,

		Disk:    n.disk.status(),
		Scrub:   n.scrub.status(),
		Removed: n.removed() || n.join.removedWhileDown(),
		Join:    n.join.status(),

		Upstreams:     n.mirrorStatus(),
		Notifications: n.notificationStatus(),
	}
}
