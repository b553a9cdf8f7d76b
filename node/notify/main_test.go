package notify

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a delivery goroutine (or an HTTP
// connection of one) behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
