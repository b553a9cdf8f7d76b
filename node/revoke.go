package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/consensus"
	"github.com/meshreg/meshreg/consensus/state"
)

// Revoked followers. A follower of the metadata is admitted by passes the
// members sign (followpass.go) and renews them forever; `meshreg cluster
// remove ID` of a peer id that is no member revokes it instead: the leader
// adds it to the replicated list state.SettingRevokedFollowers (read,
// added to and written back by the leader alone, one change at a time,
// under revokeMu, after it caught up with every committed write), and
// every node enforces the list it applied (revocationWatch):
//
//   - the gate drops the id's admissions and admits it nowhere again but
//     on memberProtocol (gate.go), where every request it makes is refused
//     with errRevoked: a pass (servePass), a join (admitJoin,
//     changeMembership);
//   - a member closes the id's open tail streams at once (tailClients.cut)
//     and refuses new ones (serveTail);
//   - the fleet view leaves it out.
//
// The revoked node learns it from a member's refusal (presentPass,
// requestJoin) or from the list itself, if its tail delivered it
// (markRevoked): it stops following, says so once at ERROR, answers
// /readyz 503 and records it in its data dir (revokedFile), so that a
// restart does not ask again. The identity is refused for good: the host
// comes back only as a new node (a fresh data dir, so a new identity key,
// and a join token).

// revokedFile, in the data dir, records that this node's identity was
// revoked (selfRevocation as JSON).
const revokedFile = "revoked"

// revocationRefresh is how often a node rereads the list besides the
// applied entries it hears of (an event dropped costs at most this long).
const revocationRefresh = 2 * time.Second

// errRevoked marks a refusal because the asker's identity was revoked.
var errRevoked = errors.New("revoked as a follower of the metadata by an operator")

// revokedAdvice is what the operator of a revoked host does.
const revokedAdvice = "this identity is refused for good; to bring the host back, give it a new identity " +
	"(a fresh --data-dir, or delete <data-dir>/p2p/identity.key and its Raft state) and join again with a join token " +
	"(meshreg token create on a member, then --join-token)"

// revokedError is a refusal that names the revocation (text) and wraps
// errRevoked and ErrNotAdmitted.
type revokedError struct{ text string }

func (e revokedError) Error() string { return e.text }
func (e revokedError) Is(target error) bool {
	return target == errRevoked || target == ErrNotAdmitted
}

// revocationOf describes a revocation for a refusal.
func revocationOf(id string, r state.Revocation) error {
	when := time.Unix(r.At, 0).UTC().Format(time.RFC3339)
	by := ""
	if r.By != "" {
		by = " by " + r.By
	}
	return revokedError{fmt.Sprintf("%s: peer %s was revoked as a follower of the metadata by an operator (at %s%s): %s",
		ErrNotAdmitted, id, when, by, revokedAdvice)}
}

// revocations is a node's copy of the replicated list and of its own
// revocation, safe for concurrent use.
type revocations struct {
	mu   sync.Mutex
	body []byte // the setting's body last read
	list state.RevokedFollowers
	// refresh serialises rereads (the watch loop and a leader's own
	// write).
	refresh sync.Mutex

	self atomic.Pointer[selfRevocation]
}

// selfRevocation is this node's own revocation, as revokedFile keeps it.
type selfRevocation struct {
	ID     string    `json:"id"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// find returns the revocation of id in the list this node applied.
func (r *revocations) find(id string) (state.Revocation, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.list.Find(id)
}

// revokedSelf is this node's own revocation, nil if it was not revoked.
func (n *Node) revokedSelf() *selfRevocation { return n.revoked.self.Load() }

// refuseRevoked returns an error wrapping errRevoked if id is revoked.
func (n *Node) refuseRevoked(id string) error {
	if r, ok := n.revoked.find(id); ok {
		return revocationOf(id, r)
	}
	return nil
}

// revocationList reads the list this node applied (empty if none).
func (n *Node) revocationList() ([]byte, state.RevokedFollowers, error) {
	s, ok := n.meta.(settingStore)
	if !ok {
		return nil, state.RevokedFollowers{}, nil // a node over fakes keeps no settings
	}
	b, err := s.Setting(state.SettingRevokedFollowers)
	if errors.Is(err, consensus.ErrNotFound) {
		return nil, state.RevokedFollowers{}, nil
	}
	if err != nil {
		return nil, state.RevokedFollowers{}, err
	}
	l, err := state.ParseRevokedFollowers(b)
	return b, l, err
}

// refreshRevocations rereads the list and, when it changed, enforces it:
// the gate drops the revoked ids, this member closes their tails, the
// fleet view is taken again, and this node stops if it is named.
func (n *Node) refreshRevocations() {
	n.revoked.refresh.Lock()
	defer n.revoked.refresh.Unlock()
	body, list, err := n.revocationList()
	if err != nil {
		n.log.Warn("reading the revoked followers failed", "err", err)
		return
	}
	n.enforceRevocations(body, list)
}

// enforceRevocations enforces list (whose setting body is body) if it is
// not the one enforced already. The caller holds revoked.refresh.
func (n *Node) enforceRevocations(body []byte, list state.RevokedFollowers) {
	n.revoked.mu.Lock()
	same := string(body) == string(n.revoked.body)
	if !same {
		n.revoked.body, n.revoked.list = body, list
	}
	n.revoked.mu.Unlock()
	if same {
		return
	}
	set := make(map[peer.ID]bool, len(list.Revoked))
	for _, r := range list.Revoked {
		if id, err := peer.Decode(r.ID); err == nil {
			set[id] = true
		}
	}
	n.gate.setRevoked(set)
	for _, p := range n.tails.cut(set) {
		n.log.Info("closed the metadata tail of a revoked follower", "peer", p)
	}
	n.fleet.mu.Lock()
	n.fleet.view = Fleet{} // it may list a revoked follower
	n.fleet.mu.Unlock()
	if r, ok := list.Find(n.host.ID().String()); ok {
		n.markRevoked(revocationOf(r.ID, r).Error())
	}
}

// revocationWatch is the loop that keeps the list enforced: at once when
// an entry applied may have changed it, else every revocationRefresh.
type revocationWatch struct {
	n *Node
}

var _ loop = revocationWatch{}

func (w revocationWatch) Run(ctx context.Context) error {
	var applied <-chan consensus.Applied
	if m, ok := w.n.meta.(interface {
		WatchApplied(ctx context.Context) (consensus.Applied, <-chan consensus.Applied)
	}); ok {
		_, applied = m.WatchApplied(ctx)
	}
	t := time.NewTicker(revocationRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case a, open := <-applied:
			if !open {
				applied = nil
				continue
			}
			if a.Kind != consensus.KindPutSetting && a.Kind != consensus.KindRestore {
				continue
			}
		case <-t.C:
		}
		w.n.refreshRevocations()
	}
}

// revokeFollower revokes id as a follower, through the leader: this node
// must be a member (the leader takes changes from members only).
func (n *Node) revokeFollower(ctx context.Context, id peer.ID, by string) (api.Removal, error) {
	switch {
	case id == n.host.ID():
		return "", fmt.Errorf("%s is this node itself, a follower of the metadata: revoke it through a member's API "+
			"(meshreg cluster remove --node <a member> %s), not through its own", id, id)
	case !n.isMember():
		return "", fmt.Errorf("this node is not a member of the cluster (a follower of the metadata): "+
			"revoke %s through a member's API (meshreg cluster remove --node <a member> %s)", id, id)
	}
	if r, ok := n.revoked.find(id.String()); ok {
		return "", fmt.Errorf("%s is %w (at %s, by %q)", id, api.ErrAlreadyRevoked, time.Unix(r.At, 0).UTC().Format(time.RFC3339), r.By)
	}
	res, err := n.changeMembership(ctx, memberRequest{Op: "revoke", ID: id.String(), By: by})
	if err != nil {
		return "", fmt.Errorf("revoking follower %s: %w", id, err)
	}
	if res.AlreadyRevoked != "" {
		return "", fmt.Errorf("%s is %w (%s)", id, api.ErrAlreadyRevoked, res.AlreadyRevoked)
	}
	// Enforce it here at once: the caller's next request may come here.
	_ = n.meta.WaitApplied(ctx, n.meta.AppliedIndex())
	n.refreshRevocations()
	return api.RevokedFollower, nil
}

// revokeAsLeader adds req.ID to the list: the leader reads it once it
// applied every committed write, adds the id and writes it back, one
// revocation at a time, so concurrent revocations do not lose each other.
func (n *Node) revokeAsLeader(ctx context.Context, req memberRequest) (memberResult, error) {
	id, err := peer.Decode(req.ID)
	if err != nil {
		return memberResult{}, fmt.Errorf("%q is not a peer id: %w", req.ID, err)
	}
	s, ok := n.meta.(settingStore)
	if !ok {
		return memberResult{}, errors.New("this node's metadata store keeps no settings: it cannot revoke a follower")
	}
	if len(req.By) > state.MaxRevokedByBytes {
		req.By = req.By[:state.MaxRevokedByBytes]
	}
	n.revokeMu.Lock()
	defer n.revokeMu.Unlock()
	if err := n.membersApplySetting(state.SettingRevokedFollowers, id); err != nil {
		return memberResult{}, fmt.Errorf("the revocation cannot be stored now: %w", err)
	}
	if err := n.catchUp(ctx); err != nil {
		return memberResult{}, err
	}
	if n.isMemberID(id.String()) {
		return memberResult{}, fmt.Errorf("%s is a member of the cluster: remove it (meshreg cluster remove %s) rather than revoke it", id, id)
	}
	_, list, err := n.revocationList()
	if err != nil {
		return memberResult{}, fmt.Errorf("reading the revoked followers: %w", err)
	}
	if r, ok := list.Find(id.String()); ok {
		return memberResult{AlreadyRevoked: fmt.Sprintf("at %s, by %q", time.Unix(r.At, 0).UTC().Format(time.RFC3339), r.By)}, nil
	}
	if len(list.Revoked) >= state.MaxRevokedFollowers {
		return memberResult{}, fmt.Errorf("the cluster already revoked %d followers, its most (state.MaxRevokedFollowers)", len(list.Revoked))
	}
	list.Revoked = append(slices.Clone(list.Revoked), state.Revocation{ID: id.String(), At: time.Now().Unix(), By: printableOr(req.By)})
	body, err := json.Marshal(list)
	if err != nil {
		return memberResult{}, err
	}
	if len(body) > state.MaxSettingBytes {
		return memberResult{}, fmt.Errorf("the revoked followers list would be %d bytes, over the %d a setting holds", len(body), state.MaxSettingBytes)
	}
	if err := s.PutSetting(ctx, state.SettingRevokedFollowers, body); err != nil {
		return memberResult{}, fmt.Errorf("storing the revoked followers: %w", err)
	}
	n.refreshRevocations()
	n.log.Info("revoked a follower of the metadata: no member serves or admits it any more", "peer", id, "by", req.By,
		"revoked", len(list.Revoked))
	return memberResult{Leader: n.host.ID().String()}, nil
}

// printableOr keeps s if the list takes it as the "by" of a revocation
// (printable UTF-8), else a placeholder.
func printableOr(s string) string {
	if !utf8.ValidString(s) {
		return "unprintable"
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return "unprintable"
		}
	}
	return s
}

// markRevoked makes this node stop for good as a follower (reason: the
// refusal or the list naming it): it records it in the data dir, logs it
// once at ERROR, and stops its tail; /readyz and the status say so.
func (n *Node) markRevoked(reason string) {
	rev := &selfRevocation{ID: n.host.ID().String(), Reason: reason, At: time.Now().UTC()}
	if !n.revoked.self.CompareAndSwap(nil, rev) {
		return
	}
	n.log.Error("this node was revoked by an operator: it no longer follows the metadata, and no member serves it, "+
		"admits it or lets it join again", "reason", reason, "what_to_do", revokedAdvice)
	if n.cfg.DataDir != "" {
		if b, err := json.Marshal(rev); err == nil {
			path := filepath.Join(n.cfg.DataDir, revokedFile)
			if err := os.WriteFile(path, b, 0o600); err != nil {
				n.log.Warn("recording the revocation in the data dir failed: a restart asks the members again", "path", path, "err", err)
			}
		}
	}
	if f, ok := n.followers(); ok {
		// Not here: a refusal may come from the tail's own dial
		// (tailDialer), which StopFollowing waits for.
		go f.StopFollowing()
	}
}

// loadRevokedSelf reads revokedFile at start: a node revoked before it
// stopped stays revoked (for its identity: a new identity key in the same
// data dir is a new node).
func (n *Node) loadRevokedSelf() {
	if n.cfg.DataDir == "" {
		return
	}
	b, err := os.ReadFile(filepath.Join(n.cfg.DataDir, revokedFile))
	if err != nil {
		return
	}
	var rev selfRevocation
	if json.Unmarshal(b, &rev) != nil || rev.ID != n.host.ID().String() {
		return
	}
	n.revoked.self.Store(&rev)
	n.log.Error("this node was revoked by an operator before it stopped: it does not follow the metadata nor join again",
		"reason", rev.Reason, "since", rev.At, "what_to_do", revokedAdvice)
}

// revokedProblem is the /readyz answer of a revoked node.
func (rev *selfRevocation) problem() string {
	return "this node was revoked by an operator as a follower of the metadata: " + rev.Reason
}

// stayRevoked reports whether this node was revoked, and then says in the
// join status that it does not ask to join.
func (n *Node) stayRevoked() bool {
	rev := n.revokedSelf()
	if rev == nil {
		return false
	}
	n.join.wait(rev.problem() + "; it does not ask to join again")
	return true
}

func revokedReason(rev *selfRevocation) string {
	if rev == nil {
		return ""
	}
	return rev.problem()
}
