package node

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestJoinBackoffDoublesUpToTheCap(t *testing.T) {
	var b backoff
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	for i, w := range want {
		if got := b.step(); got != w {
			t.Fatalf("step %d: %v, want %v", i, got, w)
		}
	}
}

// TestJoinFailuresWarnOncePerReason: a failure that repeats is logged at
// WARN once, then at DEBUG; a new reason is a new WARN. The status and its
// sentence name the target, the reason and the attempt.
func TestJoinFailuresWarnOncePerReason(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var j joinState
	j.wait("waiting to join the cluster through http://a:5000")
	refused := errors.New("connection refused")
	for range 5 {
		j.failed(log, "http://a:5000", refused, time.Second)
	}
	j.failed(log, "http://a:5000", errors.New("no route to host"), time.Second)
	if n := strings.Count(buf.String(), "level=WARN"); n != 2 {
		t.Errorf("%d WARN lines for 6 failures with 2 reasons, want 2:\n%s", n, buf.String())
	}
	if n := strings.Count(buf.String(), "level=DEBUG"); n != 4 {
		t.Errorf("%d DEBUG lines, want 4:\n%s", n, buf.String())
	}
	st := j.status()
	if st == nil || st.Attempts != 6 || st.Target != "http://a:5000" || st.LastError != "no route to host" {
		t.Fatalf("status %+v", st)
	}
	d := j.describe()
	for _, w := range []string{"waiting to join the cluster through http://a:5000", "attempt 6", "no route to host"} {
		if !strings.Contains(d, w) {
			t.Errorf("describe() = %q, want it to contain %q", d, w)
		}
	}
	j.done()
	if j.status() != nil || j.describe() != "" {
		t.Errorf("after done: status %+v, describe %q", j.status(), j.describe())
	}
}

// TestHelloRefusalsAreLoggedOncePerMinute: strangers' hellos are counted,
// not each logged.
func TestHelloRefusalsAreLoggedOncePerMinute(t *testing.T) {
	var b bootState
	now := time.Now()
	logged := 0
	for i := range 100 {
		if _, ok := b.refusal(now.Add(time.Duration(i) * 100 * time.Millisecond)); ok {
			logged++
		}
	}
	if logged != 1 {
		t.Fatalf("%d of 100 refusals in 10 s logged, want 1", logged)
	}
	more, ok := b.refusal(now.Add(2 * time.Minute))
	if !ok || more != 99 {
		t.Fatalf("a minute later: logged %v, %d more since, want true and 99", ok, more)
	}
}
