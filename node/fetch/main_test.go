package fetch

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the tests when a fetch's goroutine outlives them: every
// test waits for its owner (testOwner) to stop.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
