package node

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: every
// loop must stop when Run returns, and every piece of request work by the
// end of Close (work.go).
//
// The ignore list is empty on purpose: the parts a real node opens (the
// libp2p host and its transports, the kad-dht, hashicorp/raft, badger)
// stop all their goroutines in Close, which the tests that open one call.
// A library that starts a goroutine at init, or one that outlives Close
// by design, goes here as goleak.IgnoreTopFunction("pkg.func") with the
// reason, not as a retry in the test.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
