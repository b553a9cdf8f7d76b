package p2p

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// IdentityID reads the peer id of the identity key in dataDir without
// starting a host or creating a key (for offline tools such as `meshreg
// recover`).
func IdentityID(dataDir string) (peer.ID, error) {
	path := filepath.Join(dataDir, identityFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("p2p: no identity key at %s: is %s a meshreg data dir?", path, dataDir)
	}
	if err != nil {
		return "", fmt.Errorf("p2p: identity key: %w", err)
	}
	key, err := crypto.UnmarshalPrivateKey(b)
	if err != nil {
		return "", fmt.Errorf("p2p: identity key %s: %w", path, err)
	}
	return peer.IDFromPrivateKey(key)
}

// NewIdentity creates the identity key of a new node in dataDir, which
// must hold none, and returns its peer id (for offline tools such as
// `meshreg restore`, which builds a data dir for a node not started yet).
func NewIdentity(dataDir string) (peer.ID, error) {
	key, created, err := loadOrCreateIdentity(filepath.Join(dataDir, identityFile))
	if err != nil {
		return "", err
	}
	if !created {
		return "", fmt.Errorf("p2p: %s already has an identity key: a new node needs an empty data dir", dataDir)
	}
	return peer.IDFromPrivateKey(key)
}
