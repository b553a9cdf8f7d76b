package replicate

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshreg/meshreg/testnet/tlog"
)

// eventually fails the test unless cond holds within a few seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// runInBackground runs r until the test ends (or stop is called) and
// returns stop, which cancels it and returns what Run returned.
func runInBackground(t *testing.T, r *Repairer) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func TestRepairerStoresEachSweep(t *testing.T) {
	t.Parallel()
	var sweeps atomic.Int64
	var under atomic.Int64
	under.Store(-1)
	r := NewRepairer(time.Millisecond, func(context.Context) (int, int, error) {
		sweeps.Add(1)
		return 3, 1, nil
	}, &under, tlog.Logger(t, slog.LevelWarn))
	stop := runInBackground(t, r)
	eventually(t, "two sweeps", func() bool { return sweeps.Load() >= 2 })
	if err := stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if got := under.Load(); got != 3 {
		t.Errorf("under-replicated gauge = %d, want 3", got)
	}
}

func TestRepairerWaitsAnInterval(t *testing.T) {
	t.Parallel()
	var under atomic.Int64
	under.Store(-1)
	r := NewRepairer(time.Hour, func(context.Context) (int, int, error) {
		t.Error("swept before the first interval")
		return 0, 0, nil
	}, &under, tlog.Logger(t, slog.LevelWarn))
	stop := runInBackground(t, r)
	time.Sleep(20 * time.Millisecond)
	if err := stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if under.Load() != -1 {
		t.Error("the gauge changed without a sweep")
	}
}
