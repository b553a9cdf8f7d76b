package logrepeat

import (
	"testing"

	"go.uber.org/goleak"
)

// Run is the package's only goroutine: it must end with its context.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
