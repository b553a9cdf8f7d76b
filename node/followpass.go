package node

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Follower passes: how the members come to admit a follower of the
// metadata (follow.go), which is not in the Raft configuration, so the
// peer gate (gate.go) would refuse it everything but memberProtocol.
//
// The leader that answers a join with "follow" has just admitted the joiner
// (admitJoin: the cluster key, a join token, the fleet's shared secret).
// With the answer it gives the joiner a pass: "mrf1.<payload>.<signature>",
// the payload the JSON of passClaims (issuer, subject = the follower's peer
// id, expiry), signed like a join token (admission.go) by the issuer's
// identity key. The follower presents it to each member (memberProtocol
// "pass") when it starts following and every passRefresh after; a member
// that finds it valid — signed by its issuer, issued by a member of its
// configuration, presented by its subject itself, not expired — admits
// the follower for followerAdmission, so the follower may tail the log,
// forward writes, use the DHT and fetch blobs. A member answers a pass of
// another member, or one past half its life, with one of its own, so a
// running follower holds a fresh pass of each member (passBook) and never
// runs out, even when members are replaced. The passes are kept in the
// data dir (passFile): a restarted follower presents them again instead
// of joining anew. A follower stopped for longer than passTTL, or until
// every member that issued it a pass was replaced, joins again through
// --join.
const (
	passPrefix = "mrf1."
	passDomain = "meshreg follower pass v1\n"
	// passTTL is how long a pass is valid.
	passTTL = 7 * 24 * time.Hour
	// maxPassLen bounds a pass before it is decoded.
	maxPassLen = 1024
	// followerAdmission is how long a member admits a follower after it
	// presented its pass; passRefresh how often the follower presents it.
	followerAdmission = 10 * time.Minute
	passRefresh       = 3 * time.Minute
	// passFile holds this node's pass in its data dir.
	passFile = "follower-pass"
)

// passClaims is the signed payload of a pass.
type passClaims struct {
	Issuer  string `json:"iss"`
	Subject string `json:"sub"`
	Expires int64  `json:"exp"` // Unix seconds
	Nonce   string `json:"n"`
}

func (c *passClaims) issuerID() string { return c.Issuer }

// issuePass makes a pass for subject signed by key (whose peer id is
// issuer), valid until exp.
func issuePass(key crypto.PrivKey, issuer, subject peer.ID, exp time.Time) (string, error) {
	nonce := make([]byte, 8)
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	p, err := seal(key, passPrefix, passDomain, passClaims{Issuer: issuer.String(), Subject: subject.String(), Expires: exp.Unix(), Nonce: hex.EncodeToString(nonce)})
	if err != nil {
		return "", fmt.Errorf("signing the follower pass: %w", err)
	}
	return p, nil
}

// verifyPass checks that pass is valid at now for subject: well formed,
// signed by its issuer, issued by a peer isMember accepts, not expired. It
// returns the pass's expiry; the error wraps ErrNotAdmitted.
func verifyPass(pass string, subject peer.ID, now time.Time, isMember func(id string) bool) (time.Time, error) {
	bad := func(why string) (time.Time, error) {
		return time.Time{}, fmt.Errorf("%w: the follower pass %s", ErrNotAdmitted, why)
	}
	if len(pass) > maxPassLen {
		return bad(fmt.Sprintf("is longer than %d bytes", maxPassLen))
	}
	rest, ok := strings.CutPrefix(pass, passPrefix)
	if !ok {
		return bad("is not a meshreg follower pass")
	}
	var c passClaims
	if why := unseal(rest, passDomain, &c); why != "" {
		return bad(why)
	}
	exp := time.Unix(c.Expires, 0)
	switch {
	case c.Subject != subject.String():
		return bad("was issued to " + c.Subject + ", not to " + subject.String())
	case !now.Before(exp):
		return bad("expired at " + exp.UTC().Format(time.RFC3339))
	case exp.Sub(now) > passTTL+joinTokenSkew:
		return bad("expires too far in the future")
	case !isMember(c.Issuer):
		return bad("was issued by " + c.Issuer + ", which is not a member of this cluster")
	}
	return exp, nil
}

// passClaimsOf reads a pass's claims without checking it (this node's own
// passes: whose they are, when they expire); ok false if unreadable.
func passClaimsOf(pass string) (c passClaims, ok bool) {
	rest, _ := strings.CutPrefix(pass, passPrefix)
	p, _, _ := strings.Cut(rest, ".")
	payload, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil || json.Unmarshal(payload, &c) != nil {
		return passClaims{}, false
	}
	return c, true
}

// maxPasses bounds the passes a follower keeps: one per issuing member.
const maxPasses = 16

// passBook is a follower's passes, one per member that issued one, and to
// whom it presented one lately. Every member it presents a pass to answers
// with one of its own (servePass), so the follower holds passes of several
// members: when the issuer of one is removed from the cluster (a dead
// member), the others still admit it.
type passBook struct {
	path string // passFile in the data dir; "": in memory only

	mu        sync.Mutex
	passes    map[string]string // issuer → pass
	presented map[peer.ID]time.Time
}

func newPassBook(dataDir string) *passBook {
	b := &passBook{passes: map[string]string{}, presented: map[peer.ID]time.Time{}}
	if dataDir == "" {
		return b // a node over fakes
	}
	b.path = filepath.Join(dataDir, passFile)
	raw, err := os.ReadFile(b.path)
	if err != nil || len(raw) > maxPasses*(maxPassLen+1) {
		return b
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if c, ok := passClaimsOf(line); ok && len(b.passes) < maxPasses {
			b.passes[c.Issuer] = line
		}
	}
	return b
}

// get returns the pass, among those issued by a member (isMember), that
// expires last; if no issuer is a member as far as this node knows (it
// has not learned the configuration yet), the one that expires last; ""
// if it holds none that has not expired.
func (b *passBook) get(isMember func(id string) bool) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now().Unix()
	best, bestExp, anyPass, anyExp := "", int64(0), "", int64(0)
	for issuer, pass := range b.passes {
		c, ok := passClaimsOf(pass)
		if !ok || c.Expires <= now {
			continue
		}
		if isMember(issuer) && c.Expires > bestExp {
			best, bestExp = pass, c.Expires
		}
		if c.Expires > anyExp {
			anyPass, anyExp = pass, c.Expires
		}
	}
	return cmp.Or(best, anyPass)
}

// valid reports whether this node holds a pass that has not expired at
// now (whether its issuer is still a member, only the members can tell).
func (b *passBook) valid(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, pass := range b.passes {
		if c, ok := passClaimsOf(pass); ok && c.Expires > now.Unix() {
			return true
		}
	}
	return false
}

// add keeps a pass (replacing its issuer's older one, dropping expired
// ones, and past maxPasses the one expiring first) in the data dir,
// written to a temp file and renamed, so a crash leaves the old set or the
// new one.
func (b *passBook) add(pass string) error {
	c, ok := passClaimsOf(pass)
	if !ok {
		return errors.New("an unreadable follower pass")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if old, ok := passClaimsOf(b.passes[c.Issuer]); ok && old.Expires >= c.Expires {
		return nil // the pass kept is as new
	}
	b.passes[c.Issuer] = pass
	now := time.Now().Unix()
	for issuer, p := range b.passes {
		if pc, ok := passClaimsOf(p); !ok || pc.Expires <= now {
			delete(b.passes, issuer)
		}
	}
	for len(b.passes) > maxPasses {
		first, firstExp := "", int64(0)
		for issuer, p := range b.passes {
			if pc, _ := passClaimsOf(p); first == "" || pc.Expires < firstExp {
				first, firstExp = issuer, pc.Expires
			}
		}
		delete(b.passes, first)
	}
	if b.path == "" {
		return nil
	}
	var buf strings.Builder
	for _, p := range b.passes {
		buf.WriteString(p + "\n")
	}
	tmp := b.path + ".tmp"
	if err := os.WriteFile(tmp, []byte(buf.String()), 0o600); err != nil {
		return fmt.Errorf("saving the follower passes: %w", err)
	}
	if err := os.Rename(tmp, b.path); err != nil {
		return fmt.Errorf("saving the follower passes: %w", err)
	}
	return nil
}

// forget makes the next presentation to p happen at once.
func (b *passBook) forget(p peer.ID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.presented, p)
}

// due reports whether a pass should be presented to p again.
func (b *passBook) due(p peer.ID, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return now.Sub(b.presented[p]) >= passRefresh
}

func (b *passBook) mark(p peer.ID, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.presented[p] = now
	if len(b.presented) > 4*maxAdmitted {
		clear(b.presented) // members come and go; present again at worst
		b.presented[p] = now
	}
}

// issuePassTo makes a pass signed by this node for a follower.
func (n *Node) issuePassTo(subject peer.ID) (string, error) {
	key := n.host.PrivateKey()
	if key == nil {
		return "", errors.New("this node's identity key is not available to sign a follower pass")
	}
	return issuePass(key, n.host.ID(), subject, time.Now().Add(n.passTTL()).Truncate(time.Second))
}

// passTTL is how long the passes this node issues are valid: passTTL,
// unless a test shortened it (Config.FollowerPassTTL).
func (n *Node) passTTL() time.Duration { return cmp.Or(n.cfg.FollowerPassTTL, passTTL) }

// servePass is a member's side of memberProtocol "pass": it admits the
// follower that presents a valid pass, and answers a pass past half its
// life, or issued by another member, with one of its own. A follower
// admits another follower too (to fetch blobs from it), and answers with
// the pass it holds (Own), so that each admits the other.
func (n *Node) servePass(from peer.ID, req memberRequest) []byte {
	res := memberResult{}
	if err := n.refuseRevoked(from.String()); err != nil {
		// Neither a member nor a follower serves or admits it again
		// (revoke.go): it is told so, and stops.
		n.log.Debug("refused the pass of a revoked follower", "from", from)
		out, _ := json.Marshal(memberResult{Error: err.Error(), Revoked: true})
		return out
	}
	exp, err := verifyPass(req.Pass, from, time.Now(), n.isMemberID)
	switch {
	case err != nil:
		n.log.Debug("refused a follower pass", "from", from, "err", err)
		res.Error = err.Error()
	case !n.isMember() && !n.following():
		res.Error = "this node is neither a member of the cluster nor a follower: present the pass to a member"
	case !n.isMember():
		// A follower admits another to fetch blobs from it (passingNet),
		// and issues no pass: the members would not take it. It answers
		// with its own pass instead, so the asker admits it in turn (it
		// may be asking in order to fetch from this node: peerView.Admit).
		n.gate.admitFollower(from, followerAdmission)
		res.Own = n.passes.get(n.isMemberID)
	default:
		n.gate.admitFollower(from, followerAdmission)
		// The follower keeps a pass of each member (passBook): one of
		// this node's own, renewed past half its life.
		if c, _ := passClaimsOf(req.Pass); c.Issuer != n.host.ID().String() || time.Until(exp) < n.passTTL()/2 {
			if fresh, err := n.issuePassTo(from); err == nil {
				res.Pass = fresh
			}
		}
		res.Leader = n.meta.Status().LeaderID
	}
	out, _ := json.Marshal(res)
	return out
}

// presentPass presents this node's pass to p (a member, or a follower it
// fetches from), unless it did within passRefresh, and keeps the new pass
// a member may answer with; a follower answers with its own pass, and is
// admitted here once that pass checks out.
func (n *Node) presentPass(ctx context.Context, p peer.ID) error {
	pass := n.passes.get(n.isMemberID)
	if pass == "" {
		return errNoPass
	}
	now := time.Now()
	if !n.passes.due(p, now) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	req, _ := json.Marshal(memberRequest{Op: "pass", ID: n.host.ID().String(), Pass: pass})
	resp, err := n.host.Request(ctx, p, memberProtocol, req, maxControlLen)
	if err != nil {
		return fmt.Errorf("presenting the follower pass to %s: %w", p, err)
	}
	var res memberResult
	if err := json.Unmarshal(resp, &res); err != nil {
		return fmt.Errorf("presenting the follower pass to %s: bad answer: %w", p, err)
	}
	if res.Revoked && n.isMemberPeer(p) {
		// Only a member's word counts: a follower that applied the list
		// says the same, but any peer could claim it.
		n.markRevoked(res.Error)
		return fmt.Errorf("%s %w: %w", p, errPassRefused, revokedError{res.Error})
	}
	if res.Error != "" {
		return fmt.Errorf("%s %w: %s", p, errPassRefused, res.Error)
	}
	n.passes.mark(p, now)
	if res.Own != "" && !n.isMemberPeer(p) {
		// p is a follower too, and proved it: admit it, to fetch from it
		// and to serve it. Its pass must be its own, signed by a member
		// of the configuration this node knows, like any presented here.
		if _, err := verifyPass(res.Own, p, now, n.isMemberID); err == nil {
			n.gate.admitFollower(p, followerAdmission)
		} else {
			n.log.Debug("a follower answered with a pass this node refuses", "peer", p, "err", err)
		}
	}
	if res.Pass != "" {
		if _, err := verifyPass(res.Pass, n.host.ID(), now, func(id string) bool { return id == p.String() }); err == nil {
			if err := n.passes.add(res.Pass); err != nil {
				n.log.Warn("keeping the renewed follower pass failed", "err", err)
			}
		}
	}
	return nil
}

// errPassRefused: a peer answered a presented pass with a refusal
// (expired, issued by a peer it does not count as a member, forged).
// errNoPass: this node holds no pass that has not expired.
var (
	errPassRefused = errors.New("refused the follower pass")
	errNoPass      = errors.New("this node holds no follower pass that has not expired: it must join through --join again")
)

// Lost passes. A follower holds passes of the members that issued them; it
// loses them all when it was stopped longer than passTTL, or when every
// member that issued one left the cluster while it could not get a new one
// (stopped, or cut off). Then no member admits it: its tail and its
// presentations are refused for good. passWatch tells that apart from a
// member that cannot be reached (no answer is no refusal) and from one
// member refusing while others accept; the seeker (follow.go) then joins
// again through --join, as a new node: a join token or the cluster key
// admits it, and the leader gives it a member slot or a fresh pass.

// passLostRounds is how many presentation rounds in a row (seekEvery
// apart) every member that answered must have refused the pass before the
// follower counts it lost: one round could meet a member that has just
// restarted and not learned its configuration yet.
const passLostRounds = 3

// passWatch counts the presentation rounds in a row that found the pass
// refused. Not safe for concurrent use: the seeker owns it.
type passWatch struct {
	refused int
}

// observe records one round of presentations to the members (accepted:
// members that admitted the pass, now or lately; refused: members that
// answered with a refusal; members that did not answer count for neither)
// and reports whether the follower's passes are lost: it holds none that
// has not expired (valid false), or every member that answered refused
// it for passLostRounds rounds in a row.
func (w *passWatch) observe(valid bool, accepted, refused int) bool {
	switch {
	case !valid:
		return true
	case accepted > 0:
		w.refused = 0
	case refused > 0:
		w.refused++
	}
	return w.refused >= passLostRounds
}

// reset forgets the rounds counted (the follower joined again).
func (w *passWatch) reset() { w.refused = 0 }
