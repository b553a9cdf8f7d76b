package node

import (
	"cmp"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/consensus"
)

// The node-to-node control protocols, carried by p2p's request/response
// exchange. Raft itself has its own protocol (p2p.RaftProtocol).
const (
	// forwardProtocol carries a write from a follower to the leader: the
	// request is an encoded consensus command, the answer a forwardResult.
	forwardProtocol = "/meshreg/forward/1.0.0"
	// memberProtocol asks a member to change the membership (add a joiner,
	// remove a member for good), passing the request on to the leader: the
	// request and answer are a memberRequest and a memberResult.
	memberProtocol = "/meshreg/member/1.0.0"

	maxForwardLen = 32 << 20 // a command carries a manifest (4 MiB by default) as base64 JSON
	maxControlLen = 64 << 10
	rpcTimeout    = 30 * time.Second
	// refusedJoinRetry is how long a joiner the cluster refused waits
	// before it asks again.
	refusedJoinRetry = 10 * time.Second
)

type forwardResult struct {
	Code string `json:"code,omitempty"` // consensus.ErrorCode of the leader's error
	Msg  string `json:"msg,omitempty"`
	// Index is the leader's applied index once the write was applied: the
	// follower waits to apply as far before answering its client, so that
	// a client reads its own writes on the node it wrote through.
	Index uint64 `json:"index,omitempty"`
}

// forwarder sends a follower's writes to the leader over libp2p.
type forwarder struct {
	host interface {
		PeerRequester
		Connections
	}
	// waitApplied waits until this node applied an index
	// (consensus.Store.WaitApplied); set once the store is open.
	waitApplied func(ctx context.Context, index uint64) error
}

var _ consensus.Forwarder = (*forwarder)(nil)

func (f *forwarder) Forward(ctx context.Context, leader consensus.Server, cmd []byte) error {
	id, err := peerOf(f.host, leader)
	if err != nil {
		return err
	}
	resp, err := f.host.Request(ctx, id, forwardProtocol, cmd, maxControlLen)
	if err != nil {
		return err
	}
	var res forwardResult
	if err := json.Unmarshal(resp, &res); err != nil {
		return fmt.Errorf("forwarding a write to leader %s: bad answer: %w", id, err)
	}
	if res.Code != "" {
		return &consensus.ForwardError{Code: res.Code, Msg: res.Msg}
	}
	// Once this node applied the leader's index, the write is visible here
	// too.
	if err := f.waitApplied(ctx, res.Index); err != nil {
		return fmt.Errorf("the leader committed the write, but this node has not applied it yet: %w", err)
	}
	return nil
}

// peerOf is the peer id of a Raft server, whose address it records when it
// is a multiaddr.
func peerOf(h Connections, s consensus.Server) (peer.ID, error) {
	if m, err := ma.NewMultiaddr(s.Address); err == nil {
		if info, err := peer.AddrInfoFromP2pAddr(m); err == nil {
			h.RememberPeer(*info)
			return info.ID, nil
		}
	}
	id, err := peer.Decode(s.ID)
	if err != nil {
		return "", fmt.Errorf("raft server id %q is not a peer id: %w", s.ID, err)
	}
	return id, nil
}

// serveForwarded is the leader's side of forwardProtocol.
func (n *Node) serveForwarded(ctx context.Context, from peer.ID, cmd []byte) []byte {
	err := n.meta.ApplyForwarded(ctx, cmd)
	res := forwardResult{Code: consensus.ErrorCode(err)}
	if err != nil {
		res.Msg = err.Error()
	} else {
		res.Index = n.meta.AppliedIndex()
	}
	b, _ := json.Marshal(res)
	return b
}

type memberRequest struct {
	Op      string `json:"op"`                // "join" or "remove"
	ID      string `json:"id"`                // the member's peer id, its Raft server id
	Address string `json:"address,omitempty"` // its Raft address (join)
	Token   string `json:"token,omitempty"`   // join token (join; see admission.go)
	// Proof is the joiner's HMAC under the shared --join-token of a
	// --bootstrap-expect fleet (join; see hello_admission.go).
	Proof string `json:"proof,omitempty"`
	// Pass is a follower's pass (followpass.go): presented ("pass"), or
	// its credential when it asks for a free member slot (join).
	Pass string `json:"pass,omitempty"`
	// Region is the joiner's --region (join): the leader gives a region
	// without a member a seat past --max-raft-members (follow.go).
	Region string `json:"region,omitempty"`
	// By is who asked for a revocation ("revoke", revoke.go), for the
	// record.
	By string `json:"by,omitempty"`
}

type memberResult struct {
	Error string `json:"error,omitempty"`
	// Leader is the peer id of the leader after a successful change: a
	// joiner admits it (see peerGate), since the leader, not necessarily
	// the node it joined through, sends it the log.
	Leader string `json:"leader,omitempty"`
	// Member answers a "check": whether the asking node is in the
	// configuration of the node that answers (see rejoin.go).
	Member bool `json:"member,omitempty"`
	// Follow answers a join when the Raft configuration is full: the
	// joiner follows the metadata (follow.go) from Members, with Pass to
	// present to them (followpass.go). Pass also answers a "pass" whose
	// pass is past half its life.
	Follow  bool               `json:"follow,omitempty"`
	Members []consensus.Member `json:"members,omitempty"`
	Pass    string             `json:"pass,omitempty"`
	// Own answers a "pass" presented to a follower: the follower's own
	// pass, so that the two admit each other in one round trip (a
	// follower fetching a blob from another, see peerView.Admit).
	Own string `json:"own,omitempty"`
	// Revoked says the asker (a pass, a join) was revoked as a follower
	// (revoke.go): it must stop, and come back only with a new identity.
	// AlreadyRevoked answers a "revoke" of a follower revoked before: when
	// and by whom, as the list records it.
	Revoked        bool   `json:"revoked,omitempty"`
	AlreadyRevoked string `json:"already_revoked,omitempty"`
}

// serveMember applies a membership request when this node leads, or
// passes it on to the leader.
//
// Any peer may open memberProtocol (see peerGate), because a joiner is not
// a member yet; so this is where a request from a non-member is judged: it
// may only ask to join, as itself, and only if admitJoin lets it. Members
// may relay any request.
func (n *Node) serveMember(ctx context.Context, from peer.ID, b []byte) []byte {
	// A join needs admission (admission.go); any other change may come
	// only from a member.
	var req memberRequest
	err := json.Unmarshal(b, &req)
	if err == nil && req.Op == "check" {
		return n.serveCheck(from, req) // rejoin.go
	}
	if err == nil && req.Op == "pass" {
		return n.servePass(from, req) // followpass.go
	}
	if err == nil {
		if req.Op == "join" {
			err = n.admitJoin(from, req)
		} else if !n.isMemberID(from.String()) {
			err = fmt.Errorf("%w: only members may change the membership", ErrNotAdmitted)
		}
		if err != nil {
			n.log.Warn("refused a membership request", "from", from, "op", req.Op, "id", req.ID, "err", err)
		}
	}
	res := memberResult{}
	if err == nil {
		res, err = n.changeMembership(ctx, req)
	}
	if err != nil {
		res = memberResult{Error: err.Error(), Revoked: errors.Is(err, errRevoked)}
	} else if res.Leader == "" {
		res.Leader = n.meta.Status().LeaderID
	}
	out, _ := json.Marshal(res)
	return out
}

// RemoveMember removes a member from the cluster for good, through the
// leader wherever it is asked; a peer id that is no member is revoked as a
// follower of the metadata instead (revoke.go), whether it runs or not.
func (n *Node) RemoveMember(ctx context.Context, id, by string) (api.Removal, error) {
	pid, err := peer.Decode(id)
	if err != nil {
		return "", fmt.Errorf("%q is %w, nor a follower: it is not a peer id (meshreg cluster nodes lists the members and followers)", id, api.ErrNotMember)
	}
	// The configuration is replicated: any member knows who is one.
	members, err := n.meta.Members()
	if err != nil {
		return "", fmt.Errorf("reading the members: %w", err)
	}
	if !slices.ContainsFunc(members, func(m consensus.Member) bool { return m.ID == id }) {
		return n.revokeFollower(ctx, pid, by)
	}
	_, err = n.changeMembership(ctx, memberRequest{Op: "remove", ID: id})
	if err != nil {
		return "", err
	}
	return api.RemovedMember, nil
}

// changeMembership makes the change req asks for when this node leads (a
// join is placed by placeJoiner: a member, or a follower when the
// configuration is full), or passes it on to the leader; it returns the
// answer for the asker.
func (n *Node) changeMembership(ctx context.Context, req memberRequest) (memberResult, error) {
	if req.Op == "remove" && req.ID == n.host.ID().String() && n.meta.Status().State == consensus.Leader {
		// A leader that removes itself steps down mid-change and is left
		// shut down; hand leadership over first, then the new leader
		// removes this node (below, as for any follower).
		if n.alone() {
			return memberResult{}, errors.New("this node is the only voter: removing it would leave the cluster without members; add voters first")
		}
		if err := n.meta.TransferLeadership(ctx); err != nil {
			return memberResult{}, fmt.Errorf("removing the leader %s: handing leadership over first failed: %w", req.ID, err)
		}
		n.log.Info("handed leadership over before being removed from the cluster")
		if err := n.waitOtherLeader(ctx); err != nil {
			return memberResult{}, fmt.Errorf("removing the former leader %s: %w", req.ID, err)
		}
	}
	var (
		res memberResult
		err error
	)
	switch {
	case req.ID == "":
		return memberResult{}, errors.New("membership request without a member id")
	case req.Op == "join" && req.Address != "":
		if err := n.refuseRevoked(req.ID); err != nil {
			return memberResult{Revoked: true}, err
		}
		if n.meta.Status().State == consensus.Leader {
			res, err = n.placeJoiner(ctx, req) // follow.go
		} else {
			err = consensus.ErrNotLeader
		}
	case req.Op == "remove":
		err = n.meta.RemoveServer(ctx, req.ID)
	case req.Op == "revoke":
		if n.meta.Status().State == consensus.Leader {
			res, err = n.revokeAsLeader(ctx, req) // revoke.go
		} else {
			err = consensus.ErrNotLeader
		}
	default:
		return memberResult{}, fmt.Errorf("unknown membership request %q (join needs an address)", req.Op)
	}
	if !errors.Is(err, consensus.ErrNotLeader) {
		return res, err
	}
	st := n.meta.Status()
	leader := consensus.Server{ID: st.LeaderID, Address: st.LeaderAddress}
	if leader.ID == "" || leader.ID == n.host.ID().String() {
		return memberResult{}, fmt.Errorf("no leader to %s %s: retry shortly", req.Op, req.ID)
	}
	id, err := peerOf(n.host, leader)
	if err != nil {
		return memberResult{}, err
	}
	raw, _ := json.Marshal(req)
	resp, err := n.host.Request(ctx, id, memberProtocol, raw, maxControlLen)
	if err != nil {
		return memberResult{}, fmt.Errorf("passing the %s of %s on to leader %s: %w", req.Op, req.ID, id, err)
	}
	if err := json.Unmarshal(resp, &res); err != nil {
		return memberResult{}, fmt.Errorf("leader %s: bad membership answer: %w", id, err)
	}
	if res.Error != "" && res.Revoked {
		return memberResult{Revoked: true}, revokedError{"leader: " + res.Error}
	}
	if res.Error != "" {
		return memberResult{}, errors.New("leader: " + res.Error)
	}
	return res, nil
}

// isMember reports whether this node is in the Raft configuration it knows.
func (n *Node) isMember() bool {
	_, ok := n.memberAddress()
	return ok
}

// memberAddress is this node's Raft address in the configuration it knows,
// ok false if it is not a member.
func (n *Node) memberAddress() (string, bool) {
	members, err := n.meta.Members()
	if err != nil {
		return "", false
	}
	for _, m := range members {
		if m.ID == n.host.ID().String() {
			return m.Address, true
		}
	}
	return "", false
}

// joinOnce asks the --join targets to add this node, unless it already is
// a member at the same address and still in the cluster (see joiner).
func (n *Node) joinOnce(ctx context.Context) {
	if n.stayRevoked() {
		return
	}
	// A follower of the metadata is not in the configuration it knows, by
	// design: it resumes following (follow.go) rather than join again.
	if n.resumeFollowing(ctx) {
		n.join.done()
		return
	}
	if addr, ok := n.memberAddress(); ok {
		if addr == n.host.RaftAddress() {
			if !n.removedWhileDown(ctx) {
				return
			}
		} else {
			n.log.Info("this node's Raft address changed since it joined; asking the leader to record the new one",
				"old", addr, "new", n.host.RaftAddress())
		}
	} else if n.removed() {
		// It knows a configuration without itself: removed before it
		// stopped (by an operator, or cut off while running).
		n.join.setRemovedWhileDown(true)
		n.log.Warn("this node was removed from the cluster before it stopped: rejoining as a non-voter; "+
			"its blobs stay, its metadata comes back from the leader", "join", n.cfg.Join)
	}
	n.joinThrough(ctx, n.cfg.Join)
}

// joinThrough asks targets, in turn, to add this node until one does or ctx
// ends, backing off between rounds (joinstate.go) and telling in the join
// status what it waits for.
func (n *Node) joinThrough(ctx context.Context, targets []string) {
	if n.stayRevoked() {
		return
	}
	switch {
	case n.join.removedWhileDown():
		n.join.wait("this node was removed from the cluster while it was down or unreachable (longer than the leader's " +
			"--dead-server-timeout) or by `meshreg cluster remove`; rejoining through " + strings.Join(targets, ", ") + " as a non-voter")
	case n.join.passesLost():
		n.join.wait("this follower of the metadata holds no pass a member accepts (expired, or their issuers left the cluster); " +
			"joining again through " + strings.Join(targets, ", ") + " as a new node")
	default:
		n.join.wait("waiting to join the cluster through " + strings.Join(targets, ", "))
	}
	type failure struct {
		target string
		err    error
	}
	var wait backoff
	for attempt := 1; ; attempt++ {
		refused := false
		var failures []failure
		for _, target := range targets {
			err := n.joinVia(ctx, target)
			if err == nil {
				n.log.Info("joined the cluster", "via", target, "attempt", attempt,
					"rejoined_after_removal", n.join.removedWhileDown(), "rejoined_after_lost_passes", n.join.passesLost())
				n.join.setRemovedWhileDown(false)
				n.join.done()
				return
			}
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, errJoinSelf) {
				continue // a --join list that names every node names this one too
			}
			if errors.Is(err, errRevoked) {
				// For good: asking again would only be refused again.
				n.markRevoked(err.Error())
				n.stayRevoked()
				return
			}
			refused = refused || strings.Contains(err.Error(), ErrNotAdmitted.Error())
			failures = append(failures, failure{target, err})
		}
		pause := wait.step()
		if refused {
			pause = max(pause, refusedJoinRetry)
		}
		for _, f := range failures {
			n.join.failed(n.log, f.target, f.err, pause)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
	}
}

// errJoinSelf: a --join target is this node itself.
var errJoinSelf = errors.New("the join target is this node itself")

// joinVia sends a join request to target: a multiaddr with /p2p/<id>, or an
// http(s) URL of a node's API, whose status names its Raft address.
func (n *Node) joinVia(ctx context.Context, target string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	addr := target
	if strings.HasPrefix(target, "http://") || strings.HasPrefix(target, "https://") {
		var err error
		if addr, err = n.raftAddressOf(ctx, target); err != nil {
			return err
		}
	}
	if err := n.host.Connect(ctx, addr); err != nil {
		return explainConnect(err)
	}
	id, err := peerOf(n.host, consensus.Server{Address: addr})
	if err != nil {
		return err
	}
	if id == n.host.ID() {
		return errJoinSelf
	}
	// The target may send this node the log before it knows the
	// configuration: let it (and, in requestJoin, the leader it names)
	// through.
	n.gate.admit(id, admissionTTL)
	res, err := n.requestJoin(ctx, id, "")
	if err != nil {
		return err
	}
	if res.Follow {
		return n.becomeFollower(ctx, id, res) // follow.go
	}
	return nil
}

// requestJoin asks peer id to add this node to the cluster, with its join
// credentials (and pass, if not ""), and returns the answer: a member, or
// Follow.
func (n *Node) requestJoin(ctx context.Context, id peer.ID, pass string) (memberResult, error) {
	req, _ := json.Marshal(memberRequest{Op: "join", ID: n.host.ID().String(), Address: n.host.RaftAddress(), Token: n.cfg.JoinToken,
		Proof: n.joinProof(id), Pass: pass, Region: n.cfg.Region})
	resp, err := n.host.Request(ctx, id, memberProtocol, req, maxControlLen)
	if err != nil {
		return memberResult{}, err
	}
	var res memberResult
	if err := json.Unmarshal(resp, &res); err != nil {
		return memberResult{}, fmt.Errorf("bad join answer from %s: %w", id, err)
	}
	if res.Error != "" && res.Revoked {
		return memberResult{}, revokedError{res.Error}
	}
	if res.Error != "" {
		return memberResult{}, errors.New(res.Error)
	}
	if leader, err := peer.Decode(res.Leader); err == nil {
		n.gate.admit(leader, admissionTTL)
	}
	return res, nil
}

// waitOtherLeader waits until this node knows a leader other than itself
// (after a leadership transfer), at most 10 seconds.
func (n *Node) waitOtherLeader(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, changes := n.meta.Watch(ctx)
	for st.LeaderID == "" || st.LeaderID == n.host.ID().String() {
		var open bool
		if st, open = <-changes; !open {
			return fmt.Errorf("no new leader after handing leadership over: %w; retry shortly", cmp.Or(ctx.Err(), consensus.ErrClosed))
		}
	}
	return nil
}

// raftAddressOf reads a node's Raft address from its status document.
func (n *Node) raftAddressOf(ctx context.Context, base string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/_meshreg/v1/status", nil)
	if err != nil {
		return "", err
	}
	client := n.cfg.JoinHTTP
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		if strings.Contains(err.Error(), "multistream") {
			// libp2p's first bytes ("\x13/multistream/1.0.0") where HTTP
			// was expected: the URL names a p2p port.
			return "", fmt.Errorf("%s answers with libp2p, not HTTP: it is a node's p2p port, not its API; "+
				"--join wants the API URL (http://host:5000) or a multiaddr with /p2p/<peer id> (the raft_address of a member's status)", base)
		}
		if strings.Contains(err.Error(), "does not look like a TLS handshake") {
			return "", fmt.Errorf("%s answers without TLS: it is a node's p2p port, or an API that serves plain HTTP (then use http://); "+
				"--join wants the API URL (http://host:5000) or a multiaddr with /p2p/<peer id>: %w", base, err)
		}
		var unknownCA x509.UnknownAuthorityError
		if errors.As(err, &unknownCA) {
			return "", fmt.Errorf("%w: pass the CA of %s's certificate with --join-tls-ca", err, base)
		}
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s (is it a meshreg API URL?)", req.URL, resp.Status)
	}
	var st struct {
		RaftAddress string `json:"raft_address"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxControlLen)).Decode(&st); err != nil || st.RaftAddress == "" {
		return "", fmt.Errorf("GET %s: no raft_address in the status (is it a meshreg node?): %v", req.URL, err)
	}
	return st.RaftAddress, nil
}

// noteMembership is what every node records at each step of the
// membership loop, leader or not: its contacts and its own removal.
func (n *Node) noteMembership() {
	n.noteContacts()
	n.noteRemoved()
}

// noteContacts records when this node last had a connection to each
// member, for the status document.
func (n *Node) noteContacts() {
	members, err := n.meta.Members()
	if err != nil {
		return
	}
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, m := range members {
		if m.ID == n.host.ID().String() || n.connected(m.ID) {
			n.lastContact[m.ID] = now
		}
	}
}

// connected reports whether this node has a live connection to the peer.
func (n *Node) connected(id string) bool {
	pid, err := peer.Decode(id)
	return err == nil && n.host.Connected(pid)
}

// slogWriter turns raft's transport log lines into debug records.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Debug(strings.TrimSpace(string(p)))
	return len(p), nil
}
