package node

import (
	"io"

	"github.com/opencontainers/go-digest"
)

// An Option changes how Open or New builds a node in ways production never
// asks for: they exist for test harnesses (package testnet), which play
// bad peers with them.
type Option func(*options)

type options struct {
	// serveFault wraps the bytes this node sends to peers; nil: none.
	serveFault func(d digest.Digest, r io.Reader) io.Reader
	// beforeManifestCommit runs after a manifest PUT checked its blobs
	// and before it is proposed; nil: none.
	beforeManifestCommit func(repo string, d digest.Digest)
}

// WithBeforeManifestCommit makes every manifest PUT on the node call fn
// after it checked the manifest's blobs and before it proposes it: for
// tests only, to hold a push in flight while a garbage collection runs
// (CNCF Distribution's issue #1609, see testnet's GC tests).
func WithBeforeManifestCommit(fn func(repo string, d digest.Digest)) Option {
	return func(o *options) { o.beforeManifestCommit = fn }
}

// WithServeFault makes the node pass the bytes of every blob it sends to a
// peer through wrap: for tests only, to play a corrupt or slow peer (see
// testnet.CorruptPeer, testnet.SlowPeer).
func WithServeFault(wrap func(d digest.Digest, r io.Reader) io.Reader) Option {
	return func(o *options) { o.serveFault = wrap }
}
