package upstream

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the tests when a request's goroutine outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
