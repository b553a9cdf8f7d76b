package consensus

import (
	"context"
	"io"
)

// ServeTail serves one follower on conn until ctx ends, the stream breaks
// or the store closes; it closes conn. The node calls it from its libp2p
// stream handler after its own admission check.
func (s *Store) ServeTail(ctx context.Context, conn io.ReadWriteCloser) error {
	_ = conn.Close()
	return errNotImplemented
}
