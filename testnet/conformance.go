package testnet

import (
	"bufio"
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// ConformanceConfig configures one run of the OCI distribution-spec
// conformance program (github.com/opencontainers/distribution-spec/conformance).
type ConformanceConfig struct {
	Program    string // path of the conformance binary
	Registry   string // host:port, spoken to over plain HTTP
	Version    string // OCI_VERSION: "1.1" (default) or "dev"
	Repo1      string // OCI_REPO1, default conformance/repo1
	Repo2      string // OCI_REPO2, the cross-mount namespace, default conformance/repo2
	ResultsDir string // OCI_RESULTS_DIR; results.yaml, junit.xml, report.html, stdout.txt, stderr.txt
	Filter     string // OCI_FILTER_TEST, "" = everything
	Timeout    time.Duration
}

// ConformanceEnv is the program's environment: every API and data type the
// suite's defaults for the version enable, plus blob upload cancel and the
// Docker-Content-Digest header checks for blobs and manifests. Set
// explicitly so that nothing a developer exported changes the run.
func ConformanceEnv(c ConformanceConfig) []string {
	version := c.Version
	if version == "" {
		version = "1.1"
	}
	env := []string{
		"OCI_VERSION=" + version,
		"OCI_REGISTRY=" + c.Registry,
		"OCI_TLS=disabled",
		"OCI_REPO1=" + c.Repo1,
		"OCI_REPO2=" + c.Repo2,
		"OCI_RESULTS_DIR=" + c.ResultsDir,
		"OCI_LOG=warn",
		"OCI_CACHE_AUTH=true",
		// APIs: pull, push, content discovery, content management.
		"OCI_API_PING=true",
		"OCI_API_PULL=true",
		"OCI_API_PUSH=true",
		"OCI_API_BLOBS_ATOMIC=true",
		"OCI_API_BLOBS_DELETE=true",
		"OCI_API_BLOBS_DIGEST_HEADER=true",
		// A mount without from= is refused by design (a normal upload
		// session instead): say so, so the suite does not try it.
		"OCI_API_BLOBS_MOUNT_ANONYMOUS=false",
		"OCI_API_BLOBS_UPLOAD_CANCEL=true",
		"OCI_API_MANIFESTS_ATOMIC=true",
		"OCI_API_MANIFESTS_DELETE=true",
		"OCI_API_MANIFESTS_DIGEST_HEADER=true",
		"OCI_API_TAGS_ATOMIC=true",
		"OCI_API_TAGS_DELETE=true",
		"OCI_API_TAGS_LIST=true",
		"OCI_API_REFERRER=true",
		// Data types enabled by default (OCI_DATA_SPARSE is off by default).
		"OCI_DATA_IMAGE=true",
		"OCI_DATA_INDEX=true",
		"OCI_DATA_INDEX_LIST=true",
		"OCI_DATA_ARTIFACT=true",
		"OCI_DATA_SUBJECT=true",
		"OCI_DATA_SUBJECT_MISSING=true",
		"OCI_DATA_ARTIFACT_LIST=true",
		"OCI_DATA_SUBJECT_LIST=true",
		"OCI_DATA_DATA_FIELD=true",
		"OCI_DATA_NONDISTRIBUTABLE=true",
		"OCI_DATA_CUSTOM_FIELDS=true",
		"OCI_DATA_NO_LAYERS=true",
		"OCI_DATA_EMPTY_BLOB=true",
		"OCI_DATA_SHA512=true",
	}
	if c.Filter != "" {
		env = append(env, "OCI_FILTER_TEST="+c.Filter)
	}
	return env
}

// ConformanceCase is one leaf test of the suite that did not pass.
type ConformanceCase struct {
	Name    string // e.g. "OCI Conformance Test/sha512 blobs/post+put/blob-post-put"
	Status  string // junit status: failure, error, skipped
	Message string
}

// ConformanceCounts are numbers of tests by outcome.
type ConformanceCounts struct {
	Passed, Failed, Errors, Skipped, Disabled, Total int
}

// Bad is the number of tests that did not pass.
func (c ConformanceCounts) Bad() int { return c.Failed + c.Errors + c.Skipped + c.Disabled }

// String gives every count.
func (c ConformanceCounts) String() string {
	return fmt.Sprintf("pass=%d fail=%d error=%d skip=%d disabled=%d total=%d",
		c.Passed, c.Failed, c.Errors, c.Skipped, c.Disabled, c.Total)
}

// ConformanceResult is the outcome of a run.
type ConformanceResult struct {
	// Tests counts the leaf tests (junit test cases): the figures usually
	// quoted, e.g. CNCF Distribution v3.0.0 at 1.1 defaults: 577 passed,
	// 93 failed, 18 skipped. Disabled tests are reported as skipped.
	Tests ConformanceCounts
	// Program is the tally the program prints, which also counts the
	// groups the leaf tests are in (e.g. 740 pass, 94 fail, 16 skip for the
	// same registry with the digest-header and upload-cancel checks on).
	Program    ConformanceCounts
	NotPassed  []ConformanceCase // leaf tests that did not pass
	ExitErr    error             // the program's exit; non-nil when anything failed
	ResultsDir string
}

// Summary is "N passed, N failed, N skipped" over the leaf tests (errors
// count as failed).
func (r *ConformanceResult) Summary() string {
	return fmt.Sprintf("%d passed, %d failed, %d skipped", r.Tests.Passed, r.Tests.Failed+r.Tests.Errors, r.Tests.Skipped+r.Tests.Disabled)
}

// SkippedByDesign counts the leaf tests skipped because meshreg refuses
// them on purpose: the anonymous cross-repository mount (no from=), which
// would let anyone link any blob a node holds into any repository, and
// which ConformanceEnv declares off.
func (r *ConformanceResult) SkippedByDesign() int {
	n := 0
	for _, c := range r.NotPassed {
		if c.Status == "skipped" && strings.HasSuffix(c.Name, "/blob-mount-anonymous") {
			n++
		}
	}
	return n
}

// RunConformance runs the conformance program against c.Registry. It
// returns an error only when the program could not run or wrote no result;
// test failures are in the result.
func RunConformance(ctx context.Context, c ConformanceConfig) (*ConformanceResult, error) {
	if c.Repo1 == "" {
		c.Repo1 = "conformance/repo1"
	}
	if c.Repo2 == "" {
		c.Repo2 = "conformance/repo2"
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Minute
	}
	if err := os.MkdirAll(c.ResultsDir, 0o755); err != nil {
		return nil, err
	}
	// The program reads ./oci-conformance.yaml if present: run it in the
	// (fresh) results dir so that no stray file configures it.
	// Inherited OCI_* variables are dropped: the run is configured here only.
	env := append(filterEnv(os.Environ(), []string{"OCI_"}), ConformanceEnv(c)...)
	res := Cmd{Path: c.Program, Dir: c.ResultsDir, Environ: env, Timeout: c.Timeout}.Run(ctx)
	_ = os.WriteFile(filepath.Join(c.ResultsDir, "stdout.txt"), res.Stdout, 0o644)
	_ = os.WriteFile(filepath.Join(c.ResultsDir, "stderr.txt"), res.Stderr, 0o644)
	var r *ConformanceResult
	f, err := os.Open(filepath.Join(c.ResultsDir, "junit.xml"))
	if err == nil {
		r, err = ParseConformanceJUnit(f)
		f.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("conformance program wrote no usable junit.xml (%v); exit: %v\nstdout (end):\n%s\nstderr:\n%s",
			err, res.Err, lastLines(string(res.Stdout), 40), clip(res.Stderr))
	}
	if p, err := ParseConformanceStdout(res.Stdout); err == nil {
		r.Program = *p // the printed tally also has the error and disabled counts
	}
	r.ExitErr = res.Err
	r.ResultsDir = c.ResultsDir
	return r, nil
}

type junitSuites struct {
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Errors   int          `xml:"errors,attr"`
	Skipped  int          `xml:"skipped,attr"`
	Disabled int          `xml:"disabled,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Errors   int         `xml:"errors,attr"`
	Skipped  int         `xml:"skipped,attr"`
	Disabled int         `xml:"disabled,attr"`
	Cases    []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string `xml:"name,attr"`
	Status    string `xml:"status,attr"`
	SystemOut string `xml:"system-out"`
	SystemErr string `xml:"system-err"`
}

// ParseConformanceJUnit reads the junit.xml the program writes.
func ParseConformanceJUnit(r io.Reader) (*ConformanceResult, error) {
	var s junitSuites
	if err := xml.NewDecoder(r).Decode(&s); err != nil {
		return nil, fmt.Errorf("parse junit.xml: %w", err)
	}
	if len(s.Suites) == 0 {
		return nil, errors.New("parse junit.xml: no testsuite")
	}
	res := &ConformanceResult{}
	for _, su := range s.Suites {
		res.Program.Total += su.Tests
		res.Program.Failed += su.Failures
		res.Program.Errors += su.Errors
		res.Program.Skipped += su.Skipped
		res.Program.Disabled += su.Disabled
		for _, c := range su.Cases {
			res.Tests.Total++
			switch c.Status {
			case "passed":
				res.Tests.Passed++
				continue
			case "skipped":
				res.Tests.Skipped++
			case "failure":
				res.Tests.Failed++
			default: // "error", or anything this parser does not know
				res.Tests.Errors++
			}
			msg := strings.TrimSpace(c.SystemOut)
			if msg == "" { // skip reasons are in the test's output
				msg = lastLines(c.SystemErr, 3)
			}
			res.NotPassed = append(res.NotPassed, ConformanceCase{Name: c.Name, Status: c.Status, Message: msg})
		}
	}
	p := &res.Program
	p.Passed = p.Total - p.Failed - p.Errors - p.Skipped - p.Disabled
	return res, nil
}

var countLine = regexp.MustCompile(`^\s+(Disabled|Skip|Pass|FAIL|Error|Total)\.*:\s+(\d+)\s*$`)

// ParseConformanceStdout reads the program's tally from the summary it
// prints ("  Pass......: 740").
func ParseConformanceStdout(out []byte) (*ConformanceCounts, error) {
	res := &ConformanceCounts{}
	seen := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := countLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[2])
		seen++
		switch m[1] {
		case "Disabled":
			res.Disabled = n
		case "Skip":
			res.Skipped = n
		case "Pass":
			res.Passed = n
		case "FAIL":
			res.Failed = n
		case "Error":
			res.Errors = n
		case "Total":
			res.Total = n
		}
	}
	if seen < 6 {
		return nil, errors.New("no result summary in the program's output")
	}
	return res, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}
