package node

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: every
// loop and every piece of request work must stop by Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
