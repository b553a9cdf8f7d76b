package scenario

import (
	"archive/tar"
	"strings"
	"testing"
	"time"
)

func TestSize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]Size{"0": 0, "512": 512, "64KiB": 64 << 10, "8 MiB": 8 << 20, "1GiB": 1 << 30, "7B": 7, "8MB": 8e6, "1.5MiB": 3 << 19} {
		var s Size
		if err := s.UnmarshalText([]byte(in)); err != nil || s != want {
			t.Errorf("%q: %d, %v; want %d", in, s, err, want)
		}
	}
	for _, in := range []string{"", "-1", "8 XB", "1e6", "lots"} {
		var s Size
		if err := s.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

func TestCrashLine(t *testing.T) {
	t.Parallel()
	if got := crashLine(`{"level":"INFO","msg":"a panic: no"}` + "\n"); got != "" {
		t.Errorf("a log message mentioning panic: %q", got)
	}
	if got := crashLine("{}\npanic: runtime error: index out of range\n\ngoroutine 1"); got != "panic: runtime error: index out of range" {
		t.Errorf("panic: %q", got)
	}
	if got := crashLine("fatal error: concurrent map writes\n"); got == "" {
		t.Error("fatal error not seen")
	}
}

func TestCounterAcrossRestarts(t *testing.T) {
	t.Parallel()
	var c counter
	for _, v := range []float64{10, 20, 5, 7} { // restarted after 20
		c.observe(v)
	}
	if c.total() != 27 {
		t.Errorf("total %v, want 27", c.total())
	}
}

func TestLatencyOf(t *testing.T) {
	t.Parallel()
	var ls []time.Duration
	for i := 100; i >= 1; i-- {
		ls = append(ls, time.Duration(i)*time.Millisecond)
	}
	l := latencyOf(ls)
	if l.Count != 100 || l.P50Ms != 50 || l.P99Ms != 99 {
		t.Errorf("%+v", l)
	}
	if (latencyOf(nil) != Latency{}) {
		t.Error("no pulls: want zero latency")
	}
}

func TestCheckFormat(t *testing.T) {
	t.Parallel()
	good := []string{
		`{"blobstore":1,"metadata":1,"written_by":"meshreg dev"}`,
		`{"blobstore":2,"metadata":3,"written_by":"v1.2.0 (abc123)","extra":true}`,
	}
	for _, f := range good {
		if err := checkFormat([]byte(f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	bad := []string{
		``, `not json`, `{}`,
		`{"blobstore":1,"metadata":1}`,
		`{"blobstore":0,"metadata":1,"written_by":"x"}`,
		`{"metadata":1,"written_by":"x"}`,
		`{"blobstore":1,"written_by":"x"}`,
	}
	for _, f := range bad {
		if err := checkFormat([]byte(f)); err == nil {
			t.Errorf("%q: accepted", f)
		}
	}
}

func TestFormatFromTar(t *testing.T) {
	t.Parallel()
	stream := func(content string) string {
		var b strings.Builder
		tw := tar.NewWriter(&b)
		if err := tw.WriteHeader(&tar.Header{Name: "FORMAT", Mode: 0o644, Size: int64(len(content))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		// RunCLI trims its output; the tar padding must not matter.
		return strings.TrimSpace(b.String())
	}
	const good = `{"blobstore":1,"metadata":1,"written_by":"meshreg dev"}`
	if got, err := formatFromTar(stream(good + "\n")); err != nil || got != good {
		t.Errorf("a good FORMAT: %q, %v", got, err)
	}
	if _, err := formatFromTar(stream(`{"blobstore":1}`)); err == nil {
		t.Error("a FORMAT without metadata and written_by: accepted")
	}
	if _, err := formatFromTar(""); err == nil {
		t.Error("no tar stream: accepted")
	}
}
