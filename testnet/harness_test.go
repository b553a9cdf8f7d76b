package testnet

// Tests of the harness itself: fast, no processes, run with -short too.

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestStream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		size int64
		buf  int // read size
	}{
		{"empty", 0, 7},
		{"small", 10, 3},
		{"block plus a bit", streamBlock + 5, 4096},
		{"odd reads across blocks", 3*streamBlock + 17, 333333},
		{"one big read", 2 * streamBlock, 4 * streamBlock},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got bytes.Buffer
			s := NewStream(42, tt.size)
			buf := make([]byte, tt.buf)
			for {
				n, err := s.Read(buf)
				got.Write(buf[:n])
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if int64(got.Len()) != tt.size {
				t.Fatalf("read %d bytes, want %d", got.Len(), tt.size)
			}
			if d := StreamDigest(42, tt.size); d != digest.FromBytes(got.Bytes()) {
				t.Errorf("StreamDigest %s differs from the digest of the bytes read", d)
			}
		})
	}
	// Blocks differ from each other and across seeds.
	a, b := make([]byte, 2*streamBlock), make([]byte, streamBlock)
	io.ReadFull(NewStream(1, int64(len(a))), a)
	io.ReadFull(NewStream(2, int64(len(b))), b)
	if bytes.Equal(a[:streamBlock], a[streamBlock:]) || bytes.Equal(a[:streamBlock], b) {
		t.Error("stream blocks repeat")
	}
	if sha256.Sum256(a[:64]) == sha256.Sum256(make([]byte, 64)) {
		t.Error("stream starts with zeros")
	}
}

func TestLeftoverUploads(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	mk := func(p string, file bool) {
		p = filepath.Join(root, p)
		if file {
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.WriteFile(p, []byte("x"), 0o644)
		} else {
			os.MkdirAll(p, 0o755)
		}
	}
	mk("blobs/uploads", false)       // empty: fine
	mk("blobs/sha256/ab/abcd", true) // a blob: not an upload
	mk("meta/uploads-log", true)     // name merely similar
	if got, err := LeftoverUploads(root); err != nil || len(got) != 0 {
		t.Fatalf("clean store: %v, %v", got, err)
	}
	mk("blobs/uploads/0123/data", true)
	mk("repos/x/_uploads/u1", false)
	got, err := LeftoverUploads(root)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(root, "blobs/uploads/0123"), filepath.Join(root, "repos/x/_uploads/u1")}
	if !slices.Equal(got, want) {
		t.Errorf("LeftoverUploads = %q, want %q", got, want)
	}
}

const junitSample = `<testsuites time="5.8" tests="12" failures="2" skipped="1">
  <testsuite name="OCI Conformance Test" tests="12" failures="2" errors="0" skipped="1" time="5.8">
    <testcase name="OCI Conformance Test/ping" classname="" time="0.001" status="passed"><system-err>GET /v2/</system-err></testcase>
    <testcase name="OCI Conformance Test/sha256 blobs/post only/blob-post-only" status="skipped"><system-err>a
b
OCI Conformance Test/sha256 blobs/post only/blob-post-only: skipping test:
  registry does not support content in the POST, fallback to PUT</system-err></testcase>
    <testcase name="OCI Conformance Test/sha512 blobs/post+put/blob-post-put" status="failure"><system-out>Docker-Content-Digest header value expected "sha512:1", received "sha256:2"</system-out></testcase>
    <testcase name="OCI Conformance Test/empty/referrers" status="failure"><system-out>404</system-out></testcase>
    <testcase name="OCI Conformance Test/x/y" status="passed"></testcase>
  </testsuite>
</testsuites>`

func TestParseConformanceJUnit(t *testing.T) {
	t.Parallel()
	r, err := ParseConformanceJUnit(strings.NewReader(junitSample))
	if err != nil {
		t.Fatal(err)
	}
	if want := (ConformanceCounts{Passed: 2, Failed: 2, Skipped: 1, Total: 5}); r.Tests != want {
		t.Errorf("Tests = %+v, want %+v", r.Tests, want)
	}
	if want := (ConformanceCounts{Passed: 9, Failed: 2, Skipped: 1, Total: 12}); r.Program != want {
		t.Errorf("Program = %+v, want %+v", r.Program, want)
	}
	if got := r.Summary(); got != "2 passed, 2 failed, 1 skipped" {
		t.Errorf("Summary = %q", got)
	}
	if len(r.NotPassed) != 3 || !strings.Contains(r.NotPassed[0].Message, "does not support content in the POST") ||
		!strings.Contains(r.NotPassed[1].Message, "sha512:1") {
		t.Errorf("NotPassed = %+v", r.NotPassed)
	}
	if _, err := ParseConformanceJUnit(strings.NewReader("<testsuites/>")); err == nil {
		t.Error("no testsuite: want an error")
	}
}

func TestParseConformanceStdout(t *testing.T) {
	t.Parallel()
	out := []byte("Test results\n...\nOCI Conformance Result: FAIL\n" +
		"  Disabled......................:          2\n" +
		"  Skip..........................:         16\n" +
		"  Pass..........................:        738\n" +
		"  FAIL..........................:         94\n" +
		"  Error.........................:          0\n" +
		"  Total.........................:        850\n\nAPI conformance:\n")
	got, err := ParseConformanceStdout(out)
	if err != nil {
		t.Fatal(err)
	}
	if want := (ConformanceCounts{Passed: 738, Failed: 94, Skipped: 16, Disabled: 2, Total: 850}); *got != want {
		t.Errorf("got %+v, want %+v", *got, want)
	}
	if _, err := ParseConformanceStdout([]byte("failed to load config: x\n")); err == nil {
		t.Error("no summary: want an error")
	}
}

func TestParseVmHWM(t *testing.T) {
	t.Parallel()
	got, err := parseVmHWM([]byte("Name:\tmeshreg\nVmPeak:\t  900 kB\nVmHWM:\t   51200 kB\nVmRSS:\t 100 kB\n"))
	if err != nil || got != 50<<20 {
		t.Errorf("parseVmHWM = %d, %v; want %d", got, err, 50<<20)
	}
	if _, err := parseVmHWM([]byte("Name:\tx\n")); err == nil {
		t.Error("no VmHWM: want an error")
	}
	if rss, err := PeakRSS(os.Getpid()); err != nil || rss <= 0 {
		t.Errorf("PeakRSS(self) = %d, %v", rss, err)
	}
}

func TestFilterEnv(t *testing.T) {
	t.Parallel()
	got := filterEnv([]string{"PATH=/bin", "OCI_VERSION=dev", "MESHREG_DATA_DIR=x", "HOME=/root"}, []string{"OCI_", "MESHREG_"})
	if want := []string{"PATH=/bin", "HOME=/root"}; !slices.Equal(got, want) {
		t.Errorf("filterEnv = %q, want %q", got, want)
	}
}

func TestSumMetric(t *testing.T) {
	text := `# HELP meshreg_peer_bytes_served_total Blob bytes this node sent to other nodes.
# TYPE meshreg_peer_bytes_served_total counter
meshreg_peer_bytes_served_total 5.36870912e+08
meshreg_peer_bytes_fetched_total 0
meshreg_blob_reads_total{source="local"} 3
meshreg_blob_reads_total{source="peer",note="a } in a label"} 4 1700000000000
meshreg_peer_bytes_served_total_other 9
`
	for _, tt := range []struct {
		name  string
		match []string
		want  float64
	}{
		{"meshreg_peer_bytes_served_total", nil, 536870912},
		{"meshreg_peer_bytes_fetched_total", nil, 0},
		{"meshreg_blob_reads_total", nil, 7},
		{"meshreg_blob_reads_total", []string{`source="peer"`}, 4},
		{"meshreg_peer_bytes_served_total_other", nil, 9},
	} {
		got, err := SumMetric(strings.NewReader(text), tt.name, tt.match...)
		if err != nil || got != tt.want {
			t.Errorf("SumMetric(%s, %v) = %v, %v; want %v", tt.name, tt.match, got, err, tt.want)
		}
	}
	for name, text := range map[string]string{
		"a missing metric":     text + "\n",
		"unterminated labels":  `meshreg_blob_reads_total{a="b" 1`,
		"a value that is none": "meshreg_blob_reads_total x",
	} {
		metric := "meshreg_blob_reads_total"
		if name == "a missing metric" {
			metric = "meshreg_nothing_total"
		}
		if _, err := SumMetric(strings.NewReader(text), metric); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
}
