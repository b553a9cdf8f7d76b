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
