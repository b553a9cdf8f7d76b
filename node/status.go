package node

import (
	"context"
	"encoding/json"
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
	if rev := n.revokedSelf(); rev != nil {
		return errors.New(rev.problem())
	}
	if st := n.meta.Status(); st.Following && st.Tail.Stopped != "" {
		return errors.New(st.Tail.Stopped) // an older release: upgrade it
	}
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
	// Role is this node's place in the cluster: "leader", "voter" or
	// "non-voter" (members of the Raft configuration), "follower" (it
	// follows the metadata without being a member, see Follower),
	// "revoked" (an operator revoked it as a follower, see Revoked), or ""
	// while it is none of them (joining, removed).
	Role string `json:"role,omitempty"`
	// Revoked says why, when this node was revoked as a follower of the
	// metadata (Role "revoked", revoke.go).
	Revoked string `json:"revoked,omitempty"`
	// Follower is a follower's tail: the member it tails from, how far it
	// applied, the leader's applied index as last asked, and the lag
	// between the two; absent on a member.
	Follower *FollowerStatus `json:"follower,omitempty"`
	// FollowersServed is how many followers this member serves the log
	// to now; Followers how many the cluster has, as the last fleet view
	// (GET /_meshreg/v1/nodes, or the upgrade gate's) saw them, absent
	// when no view was taken in the last minute.
	FollowersServed int    `json:"followers_served"`
	Followers       *int   `json:"followers,omitempty"`
	Uploads         int    `json:"uploads_in_progress"`
	Region          string `json:"region,omitempty"`
	Zone            string `json:"zone,omitempty"`
	Replicas        int    `json:"replicas"`
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
	raft := n.meta.Status()
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
		Raft:        raft,
		Role:        n.role(raft),
		Follower:    n.followerStatus(ctx, raft),
		Revoked:     revokedReason(n.revokedSelf()),

		FollowersServed: n.tails.count(),
		Followers:       n.recentFollowers(),

		Uploads:  uploads,
		Region:   n.cfg.Region,
		Zone:     n.cfg.Zone,
		Replicas: n.cfg.Replicas,
		DHTPeers: n.routing.RoutingTableSize(),

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

// FollowerStatus is the "follower" part of the status document.
type FollowerStatus struct {
	consensus.TailStatus
	// LeaderIndex is the leader's applied index, asked at most once per
	// leaderIndexEvery (0: the leader did not answer); Lag is how many
	// entries this node's applied index is behind it.
	LeaderIndex uint64 `json:"leader_index"`
	Lag         uint64 `json:"lag"`
}

// role names this node's place in the cluster (Status.Role).
func (n *Node) role(st consensus.Status) string {
	if n.revokedSelf() != nil {
		return "revoked"
	}
	if st.State == consensus.Leader {
		return "leader"
	}
	self := n.host.ID().String()
	for _, m := range st.Members {
		if m.ID == self {
			if m.Suffrage == consensus.Voter {
				return "voter"
			}
			return "non-voter"
		}
	}
	if st.Following {
		return "follower"
	}
	return ""
}

// leaderIndexEvery bounds how often a follower's status asks the leader
// for its applied index.
const leaderIndexEvery = time.Second

// followerStatus is the status of a follower's tail, nil on a member.
func (n *Node) followerStatus(ctx context.Context, st consensus.Status) *FollowerStatus {
	if !st.Following {
		return nil
	}
	fs := &FollowerStatus{TailStatus: st.Tail, LeaderIndex: n.leaderIndex(ctx, st)}
	// The tail applies, not raft: its index is the one that moves.
	if applied := max(st.AppliedIndex, st.Tail.Applied); fs.LeaderIndex > applied {
		fs.Lag = fs.LeaderIndex - applied
	}
	return fs
}

// leaderIndex is the leader's applied index (its health answer), cached
// for leaderIndexEvery; 0 when unknown.
func (n *Node) leaderIndex(ctx context.Context, st consensus.Status) uint64 {
	n.mu.Lock()
	if time.Since(n.leaderIdx.at) < leaderIndexEvery && n.leaderIdx.leader == st.LeaderID {
		defer n.mu.Unlock()
		return n.leaderIdx.index
	}
	n.mu.Unlock()
	pid, err := peerOf(n.host, consensus.Server{ID: st.LeaderID, Address: st.LeaderAddress})
	if err != nil {
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	var a healthAnswer
	resp, err := n.host.Request(ctx, pid, healthProtocol, nil, maxControlLen)
	if err != nil || json.Unmarshal(resp, &a) != nil {
		return 0
	}
	n.mu.Lock()
	n.leaderIdx.at, n.leaderIdx.leader, n.leaderIdx.index = time.Now(), st.LeaderID, a.AppliedIndex
	n.mu.Unlock()
	return a.AppliedIndex
}
