package node

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Admission for --bootstrap-expect (helloProtocol). Before the bootstrap
// there is no member to issue a join token, so nodes that start together
// prove they belong with what they were all given:
//
//   - the cluster key (--cluster-key): a peer that could connect holds it;
//   - or the same --join-token on every node, used as a shared secret (any
//     string of at least minHelloSecretLen bytes; it is never sent). Each
//     hello and each answer carries an HMAC-SHA256 under it of the message
//     role and the sender's and receiver's peer ids; libp2p authenticates
//     those ids, so a proof cannot be replayed by another peer.
//
// A hello or an answer without a valid proof is ignored: its sender is not
// counted and the peers it names are not learned.

// minHelloSecretLen is the shortest --join-token accepted as the shared
// secret of a --bootstrap-expect start without a cluster key.
const minHelloSecretLen = 16

// helloMessage is the request and the answer on helloProtocol.
type helloMessage struct {
	// Seen maps the peer ids the sender has seen to their Raft addresses.
	Seen map[string]string `json:"seen"`
	// Member is true when the sender is a member of a cluster: the
	// receiver joins it instead of bootstrapping (bootstrap.go).
	Member bool `json:"member,omitempty"`
	// Promised is the peer id the sender promised to let bootstrap, for
	// PromisedMs more milliseconds (bootstrap.go).
	Promised   string `json:"promised,omitempty"`
	PromisedMs int64  `json:"promised_ms,omitempty"`
	// Proof is the sender's HMAC (hex) when there is no cluster key.
	Proof string `json:"proof,omitempty"`
}

// helloProof is the HMAC that the holder of secret sends as role
// ("request" or "answer") from one peer to another.
func helloProof(secret, role string, from, to peer.ID) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("meshreg hello v1\n" + role + "\n" + from.String() + "\n" + to.String()))
	return hex.EncodeToString(m.Sum(nil))
}

// signHello fills in this node's proof for a message as role to peer to.
func (n *Node) signHello(msg helloMessage, role string, to peer.ID) helloMessage {
	if !n.privateNetwork() && n.cfg.JoinToken != "" {
		msg.Proof = helloProof(n.cfg.JoinToken, role, n.host.ID(), to)
	}
	return msg
}

// helloAdmitted reports whether a hello message as role from peer from
// comes from a node that may take part in the bootstrap.
func (n *Node) helloAdmitted(msg helloMessage, role string, from peer.ID) bool {
	if n.privateNetwork() {
		return true
	}
	if len(n.cfg.JoinToken) < minHelloSecretLen {
		return false
	}
	want := helloProof(n.cfg.JoinToken, role, from, n.host.ID())
	return hmac.Equal([]byte(want), []byte(msg.Proof))
}

// sharedSecret is the --join-token a --bootstrap-expect fleet without a
// cluster key shares as its secret, "" if this node has none. Such a
// fleet's members also admit joiners that prove it (joinProved): a node
// started later with the same arguments as the first ones (a DaemonSet on
// a new host, or a member removed while it was down) joins without a
// member-issued token.
func (n *Node) sharedSecret() string {
	if n.privateNetwork() || n.cfg.BootstrapExpect <= 1 || len(n.cfg.JoinToken) < minHelloSecretLen {
		return ""
	}
	return n.cfg.JoinToken
}

// joinProof is this node's proof of the shared secret for a join request
// sent to peer to, "" without a shared secret.
func (n *Node) joinProof(to peer.ID) string {
	if s := n.sharedSecret(); s != "" {
		return helloProof(s, "join", n.host.ID(), to)
	}
	return ""
}

// joinProved reports whether a join request that peer from sent or relayed
// carries the joiner's proof of the shared secret. The joiner made it for
// the node it sent the request to: this node, or the member from that
// relays it (admitJoin lets only members relay).
func (n *Node) joinProved(req memberRequest, from peer.ID) bool {
	s := n.sharedSecret()
	if s == "" || req.Proof == "" {
		return false
	}
	joiner, err := peer.Decode(req.ID)
	if err != nil {
		return false
	}
	to := n.host.ID()
	if from != joiner {
		to = from
	}
	return hmac.Equal([]byte(helloProof(s, "join", joiner, to)), []byte(req.Proof))
}
