package testnet

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Tool returns the path of a client program (crane, oras, conformance, …):
// from PATH, else from the repository's .tools/bin (where `make tools`
// installs them). A missing tool fails the test: a skipped client test would
// hide a broken setup.
func Tool(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if root, err := ModuleRoot(); err == nil {
		p := filepath.Join(root, ".tools", "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("%s not found in PATH nor in .tools/bin: run `make tools` (make test puts .tools/bin first in PATH)", name)
	return ""
}

// Cmd is one run of a client program.
type Cmd struct {
	Path    string
	Args    []string
	Dir     string
	Env     []string // added to the environment
	Environ []string // if non-nil, the whole environment (Env is ignored)
	Timeout time.Duration
	Stdin   []byte
}

// CmdResult is what a program printed and how it ended.
type CmdResult struct {
	Stdout, Stderr []byte
	Err            error // nil for exit status 0
	Duration       time.Duration
}

// Run runs c and returns what it printed; it never fails the test.
func (c Cmd) Run(ctx context.Context) CmdResult {
	if c.Timeout == 0 {
		c.Timeout = 3 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Path, c.Args...)
	cmd.Dir = c.Dir
	cmd.Env = append(os.Environ(), c.Env...)
	if c.Environ != nil {
		cmd.Env = c.Environ
	}
	cmd.WaitDelay = 5 * time.Second
	if c.Stdin != nil {
		cmd.Stdin = bytes.NewReader(c.Stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	if ctx.Err() != nil && err != nil {
		err = fmt.Errorf("%w (timeout %v)", err, c.Timeout)
	}
	return CmdResult{Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), Err: err, Duration: time.Since(start)}
}

// String is the command line, for messages.
func (c Cmd) String() string {
	parts := []string{filepath.Base(c.Path)}
	for _, a := range c.Args {
		if a == "" || strings.ContainsAny(a, " \t\"'$") {
			a = fmt.Sprintf("%q", a)
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

// Runner runs one program's commands for a test, logging each command line.
type Runner struct {
	T    testing.TB
	Path string
	Dir  string
	Env  []string
}

// Run runs the program with args and returns its stdout. A non-zero exit
// fails the test with the command line, the exit status and both outputs.
func (r Runner) Run(args ...string) []byte {
	r.T.Helper()
	res, c := r.exec(args)
	if res.Err != nil {
		r.T.Fatalf("$ %s\n%v\nstdout:\n%s\nstderr:\n%s", c, res.Err, clip(res.Stdout), clip(res.Stderr))
	}
	return res.Stdout
}

// Try runs the program with args and returns the result whatever its exit
// status.
func (r Runner) Try(args ...string) CmdResult {
	r.T.Helper()
	res, _ := r.exec(args)
	return res
}

func (r Runner) exec(args []string) (CmdResult, Cmd) {
	r.T.Helper()
	c := Cmd{Path: r.Path, Args: args, Dir: r.Dir, Env: r.Env}
	res := c.Run(r.T.Context())
	status := "ok"
	if res.Err != nil {
		status = res.Err.Error()
	}
	r.T.Logf("$ %s  [%s, %v]", c, status, res.Duration.Round(time.Millisecond))
	return res, c
}

func clip(b []byte) string {
	const max = 8 << 10
	if len(b) > max {
		return string(b[:max/2]) + "\n…\n" + string(b[len(b)-max/2:])
	}
	return string(b)
}
