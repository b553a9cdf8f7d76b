package node

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshreg/meshreg/api"
)

// Admission: who may become a member.
//
// A node admits a joiner (memberProtocol "join") only if
//
//   - the cluster runs on a private network (--cluster-key): a peer that
//     could connect at all holds the key, so it is admitted; or
//   - the joiner presents a join token (--join-token) that a member issued
//     and that has not expired; or
//   - it is a member already, coming back on a new address; or
//   - the cluster was started with --bootstrap-expect and a shared
//     --join-token (no cluster key), and the joiner proves it holds the same
//     secret (an HMAC, see hello_admission.go): a node started later with
//     the DaemonSet's arguments, or a member removed while it was down.
//
// --bootstrap-expect cannot use member-issued tokens (before the bootstrap
// there is no member): it needs the cluster key or the same --join-token on
// every node as a shared secret (hello_admission.go), and that secret then
// keeps admitting nodes for as long as the members run with it.
//
// Otherwise the join is refused, and the joiner is told why and what to do:
// a node with neither a cluster key nor tokens out accepts no members.
//
// A join token is "mrj1.<payload>.<signature>", both parts base64url
// without padding. The payload is the JSON of joinTokenClaims: the issuer's
// peer id, the expiry and a random nonce. The signature is the issuer's
// libp2p identity key (Ed25519, the key behind its peer id) over
// joinTokenDomain followed by the payload part as sent. Any member checks a
// token on its own, without asking the issuer: the peer id holds the public
// key, and the issuer must be a member of the Raft configuration the
// checking node knows. Removing the issuer from the cluster therefore
// revokes its tokens. A token may be used by several joiners until it
// expires; keep the TTL short.

const (
	joinTokenPrefix = "mrj1."
	joinTokenDomain = "meshreg join token v1\n"
	// DefaultJoinTokenTTL is the lifetime of a join token when none is asked.
	DefaultJoinTokenTTL = time.Hour
	// MaxJoinTokenTTL bounds a join token's lifetime.
	MaxJoinTokenTTL = 7 * 24 * time.Hour
	// maxJoinTokenLen bounds a token before it is decoded.
	maxJoinTokenLen = 1024
	// joinTokenSkew is how far in the future an expiry may lie beyond
	// MaxJoinTokenTTL (clocks of members differ a little).
	joinTokenSkew = time.Minute
)

var _ api.JoinTokenIssuer = (*Node)(nil)

var (
	// ErrNotAdmitted: a join or bootstrap hello came without the cluster
	// key and without a valid join token.
	ErrNotAdmitted = errors.New("not admitted to the cluster")
	// ErrJoinTokenTTL: a join token was asked with a lifetime out of range.
	ErrJoinTokenTTL = fmt.Errorf("join token TTL out of range (%w)", api.ErrBadJoinTokenRequest)
)

// joinTokenClaims is the signed payload of a join token.
type joinTokenClaims struct {
	Issuer  string `json:"iss"` // peer id of the member that issued it
	Expires int64  `json:"exp"` // Unix seconds
	Nonce   string `json:"n"`   // 16 random bytes, hex
}

func (c *joinTokenClaims) issuerID() string { return c.Issuer }

// issueJoinToken makes a token signed by key (whose peer id is issuer) that
// expires at exp.
func issueJoinToken(key crypto.PrivKey, issuer peer.ID, exp time.Time) (string, error) {
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	t, err := seal(key, joinTokenPrefix, joinTokenDomain, joinTokenClaims{Issuer: issuer.String(), Expires: exp.Unix(), Nonce: hex.EncodeToString(nonce)})
	if err != nil {
		return "", fmt.Errorf("signing the join token: %w", err)
	}
	return t, nil
}

// seal makes a signed credential (join tokens, follower passes):
// prefix, the base64url JSON of claims, ".", the base64url signature by
// key of domain followed by that payload.
func seal(key crypto.PrivKey, prefix, domain string, claims any) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	p := base64.RawURLEncoding.EncodeToString(payload)
	sig, err := key.Sign([]byte(domain + p))
	if err != nil {
		return "", err
	}
	return prefix + p + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// unseal checks a credential seal made, past its prefix (rest): its
// encoding and the signature by the identity key of the peer its claims
// name as issuer, and decodes the claims into claims. why says what is
// wrong ("" when nothing is); the caller checks the prefix before and the
// claims after.
func unseal(rest, domain string, claims interface{ issuerID() string }) (why string) {
	p, s, ok := strings.Cut(rest, ".")
	if !ok {
		return "is malformed (no signature)"
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(p)
	sig, err2 := base64.RawURLEncoding.DecodeString(s)
	if err1 != nil || err2 != nil || json.Unmarshal(payload, claims) != nil {
		return "is malformed (bad encoding)"
	}
	issuer, err := peer.Decode(claims.issuerID())
	if err != nil {
		return "names no valid issuer"
	}
	pub, err := issuer.ExtractPublicKey()
	if err != nil {
		return "names an issuer whose peer id holds no public key"
	}
	if ok, err := pub.Verify([]byte(domain+p), sig); err != nil || !ok {
		return "has an invalid signature (forged or altered)"
	}
	return ""
}

// verifyJoinToken checks token at time now: well formed, signed by its
// issuer's identity key, not expired, and issued by a peer isMember
// accepts. The error wraps ErrNotAdmitted and says what to do.
func verifyJoinToken(token string, now time.Time, isMember func(id string) bool) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: the join token %s: create a new one on a member (meshreg token create --node URL) and pass it with --join-token", ErrNotAdmitted, why)
	}
	if len(token) > maxJoinTokenLen {
		return bad(fmt.Sprintf("is longer than %d bytes", maxJoinTokenLen))
	}
	rest, ok := strings.CutPrefix(token, joinTokenPrefix)
	if !ok {
		return bad("is not a meshreg join token (it must start with " + joinTokenPrefix + ")")
	}
	var c joinTokenClaims
	if why := unseal(rest, joinTokenDomain, &c); why != "" {
		return bad(why)
	}
	exp := time.Unix(c.Expires, 0)
	switch {
	case !now.Before(exp):
		return bad("expired at " + exp.UTC().Format(time.RFC3339))
	case exp.Sub(now) > MaxJoinTokenTTL+joinTokenSkew:
		return bad("expires too far in the future (" + exp.UTC().Format(time.RFC3339) + ")")
	case !isMember(c.Issuer):
		return bad("was issued by " + c.Issuer + ", which is not a member of this cluster")
	}
	return nil
}

// CreateJoinToken issues a join token valid for ttl (DefaultJoinTokenTTL
// if 0), signed by this node: any member admits a joiner that presents it
// until it expires. Only a member can issue one, since the others check
// that the issuer is a member.
func (n *Node) CreateJoinToken(ttl time.Duration) (token string, expires time.Time, err error) {
	if ttl == 0 {
		ttl = DefaultJoinTokenTTL
	}
	if ttl < time.Second || ttl > MaxJoinTokenTTL {
		return "", time.Time{}, fmt.Errorf("%w: %s; pick between 1s and %s", ErrJoinTokenTTL, ttl, MaxJoinTokenTTL)
	}
	if !n.isMember() {
		// A follower of the metadata is no member either: the members
		// check that the issuer is one of them.
		return "", time.Time{}, errors.New("this node is not a member of the cluster (yet, or it follows the metadata without being one), so other nodes would not accept its tokens: ask a member")
	}
	key := n.host.PrivateKey()
	if key == nil {
		return "", time.Time{}, errors.New("this node's identity key is not available to sign the token")
	}
	expires = time.Now().Add(ttl).Truncate(time.Second)
	token, err = issueJoinToken(key, n.host.ID(), expires)
	if err != nil {
		return "", time.Time{}, err
	}
	n.log.Info("issued a join token", "expires", expires.UTC())
	return token, expires, nil
}

// privateNetwork reports whether this node runs on a private network
// (--cluster-key): then every peer that connected holds the key.
func (n *Node) privateNetwork() bool { return len(n.cfg.P2P.PrivateNetworkKey) > 0 }

// isMemberID reports whether id is in the Raft configuration this node
// knows.
func (n *Node) isMemberID(id string) bool {
	members, err := n.meta.Members()
	if err != nil {
		return false
	}
	for _, m := range members {
		if m.ID == id {
			return true
		}
	}
	return false
}

// admitJoin decides a join request that peer from sent (or relayed). The
// joiner must be who it says (unless a member or an admitted follower of
// the metadata relays its request: a node may join through any node),
// and must hold the cluster key or a valid join token, unless it is a
// member already (recording a new address).
func (n *Node) admitJoin(from peer.ID, req memberRequest) error {
	// A revoked identity never comes back (revoke.go), whatever it holds.
	if err := n.refuseRevoked(req.ID); err != nil {
		return err
	}
	if err := n.refuseRevoked(from.String()); err != nil {
		return err
	}
	if from != n.host.ID() && !n.isMemberID(from.String()) && !n.gate.isFollower(from) {
		if req.ID != from.String() {
			return fmt.Errorf("%w: peer %s asked to add %q: a node can only ask to join as itself", ErrNotAdmitted, from, req.ID)
		}
	}
	if !strings.HasSuffix(req.Address, "/p2p/"+req.ID) {
		return fmt.Errorf("%w: join address %q does not end with /p2p/%s", ErrNotAdmitted, req.Address, req.ID)
	}
	if n.privateNetwork() {
		return nil
	}
	// A member that comes back on a new address asks again (the join
	// loop, loop_join.go); it is a member already, whatever became of its
	// token. Its identity is libp2p's, or vouched for by the member that
	// relays its request.
	if n.isMemberID(req.ID) && (from.String() == req.ID || n.isMemberID(from.String())) {
		return nil
	}
	if n.joinProved(req, from) {
		return nil
	}
	// A follower asking for a free member slot (follow.go) holds a pass
	// a member issued it once it was admitted.
	if req.Pass != "" && from.String() == req.ID {
		if _, err := verifyPass(req.Pass, from, time.Now(), n.isMemberID); err == nil {
			return nil
		}
	}
	if req.Token == "" {
		return fmt.Errorf("%w: this cluster admits new members only with a join token or the cluster key: "+
			"create a token on a member (meshreg token create --node URL) and start the joiner with --join-token, "+
			"or run every node with the same --cluster-key", ErrNotAdmitted)
	}
	return verifyJoinToken(req.Token, time.Now(), n.isMemberID)
}
