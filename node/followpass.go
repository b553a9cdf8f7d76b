package node

import (
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
// forward writes, use the DHT and fetch blobs. A member answers a pass
// past half its life with a new one of its own, so a running follower
// never runs out. The pass is kept in the data dir (passFile): a restarted
// follower presents it again instead of joining anew. A follower stopped
// for longer than passTTL joins again through --join.
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

// issuePass makes a pass for subject signed by key (whose peer id is
// issuer), valid until exp.
func issuePass(key crypto.PrivKey, issuer, subject peer.ID, exp time.Time) (string, error) {
	nonce := make([]byte, 8)
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	payload, err := json.Marshal(passClaims{Issuer: issuer.String(), Subject: subject.String(), Expires: exp.Unix(), Nonce: hex.EncodeToString(nonce)})
	if err != nil {
		return "", err
	}
	p := base64.RawURLEncoding.EncodeToString(payload)
	sig, err := key.Sign([]byte(passDomain + p))
	if err != nil {
		return "", fmt.Errorf("signing the follower pass: %w", err)
	}
	return passPrefix + p + "." + base64.RawURLEncoding.EncodeToString(sig), nil
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
	p, s, ok := strings.Cut(rest, ".")
	if !ok {
		return bad("is malformed (no signature)")
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(p)
	sig, err2 := base64.RawURLEncoding.DecodeString(s)
	var c passClaims
	if err1 != nil || err2 != nil || json.Unmarshal(payload, &c) != nil {
		return bad("is malformed (bad encoding)")
	}
	issuer, err := peer.Decode(c.Issuer)
	if err != nil {
		return bad("names no valid issuer")
	}
	pub, err := issuer.ExtractPublicKey()
	if err != nil {
		return bad("names an issuer whose peer id holds no public key")
	}
	if ok, err := pub.Verify([]byte(passDomain+p), sig); err != nil || !ok {
		return bad("has an invalid signature (forged or altered)")
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

// passExpiry reads a pass's expiry without checking it (this node's own
// pass, to know when to have it renewed); zero if unreadable.
func passExpiry(pass string) time.Time {
	rest, _ := strings.CutPrefix(pass, passPrefix)
	p, _, _ := strings.Cut(rest, ".")
	payload, err := base64.RawURLEncoding.DecodeString(p)
	var c passClaims
	if err != nil || json.Unmarshal(payload, &c) != nil {
		return time.Time{}
	}
	return time.Unix(c.Expires, 0)
}

// passBook is a follower's pass and to whom it presented it lately.
type passBook struct {
	path string // passFile in the data dir

	mu        sync.Mutex
	pass      string
	presented map[peer.ID]time.Time
}

func newPassBook(dataDir string) *passBook {
	b := &passBook{presented: map[peer.ID]time.Time{}}
	if dataDir == "" {
		return b // a node over fakes: the pass lives in memory
	}
	b.path = filepath.Join(dataDir, passFile)
	if raw, err := os.ReadFile(b.path); err == nil && len(raw) <= maxPassLen {
		b.pass = strings.TrimSpace(string(raw))
	}
	return b
}

func (b *passBook) get() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pass
}

// set records a new pass and keeps it in the data dir (written to a temp
// file and renamed, so a crash leaves the old one or the new one).
func (b *passBook) set(pass string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if pass == b.pass {
		return nil
	}
	b.pass = pass
	clear(b.presented)
	if b.path == "" {
		return nil
	}
	tmp := b.path + ".tmp"
	if err := os.WriteFile(tmp, []byte(pass+"\n"), 0o600); err != nil {
		return fmt.Errorf("saving the follower pass: %w", err)
	}
	if err := os.Rename(tmp, b.path); err != nil {
		return fmt.Errorf("saving the follower pass: %w", err)
	}
	return nil
}

// due reports whether the pass should be presented to p again.
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
	return issuePass(key, n.host.ID(), subject, time.Now().Add(passTTL).Truncate(time.Second))
}

// servePass is a member's side of memberProtocol "pass": it admits the
// follower that presents a valid pass, and answers a pass past half its
// life with a new one.
func (n *Node) servePass(from peer.ID, req memberRequest) []byte {
	res := memberResult{}
	exp, err := verifyPass(req.Pass, from, time.Now(), n.isMemberID)
	switch {
	case err != nil:
		n.log.Debug("refused a follower pass", "from", from, "err", err)
		res.Error = err.Error()
	case !n.isMember():
		res.Error = "this node is not a member of the cluster: present the pass to a member"
	default:
		n.gate.admitFollower(from, followerAdmission)
		if time.Until(exp) < passTTL/2 {
			if fresh, err := n.issuePassTo(from); err == nil {
				res.Pass = fresh
			}
		}
		res.Leader = n.meta.Status().LeaderID
	}
	out, _ := json.Marshal(res)
	return out
}

// presentPass presents this node's pass to member p, unless it did within
// passRefresh, and keeps the new pass p may answer with.
func (n *Node) presentPass(ctx context.Context, p peer.ID) error {
	pass := n.passes.get()
	if pass == "" {
		return errors.New("this node has no follower pass: it must join through --join first")
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
	if res.Error != "" {
		return fmt.Errorf("%s refused the follower pass: %s", p, res.Error)
	}
	n.passes.mark(p, now)
	if res.Pass != "" {
		if _, err := verifyPass(res.Pass, n.host.ID(), now, func(id string) bool { return id == p.String() }); err == nil {
			if err := n.passes.set(res.Pass); err != nil {
				n.log.Warn("keeping the renewed follower pass failed", "err", err)
			}
		}
	}
	return nil
}
