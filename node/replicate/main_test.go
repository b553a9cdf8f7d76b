package replicate

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the tests when a goroutine outlives them: Holders and
// Ensure must return only once every request they started has.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
