package testnet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var built struct {
	once sync.Once
	dir  string // temp dir holding the binary, removed by Main
	path string
	err  error
}

// Binary returns the path of the meshreg binary under test: $MESHREG_E2E_BIN
// if set, else ./cmd/meshreg built once per test binary into a temp dir
// (removed when Main returns). A build failure fails the calling test.
func Binary(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv(EnvBinary); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := os.Stat(abs); err != nil {
			tb.Fatalf("%s: %v", EnvBinary, err)
		}
		return abs
	}
	built.once.Do(func() {
		built.dir, built.err = os.MkdirTemp("", "meshreg-e2e-bin-")
		if built.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		start := time.Now()
		built.path, built.err = BuildMeshreg(ctx, built.dir)
		if built.err == nil {
			tb.Logf("testnet: built %s in %v", built.path, time.Since(start).Round(time.Millisecond))
		}
	})
	if built.err != nil {
		tb.Fatalf("testnet: %v", built.err)
	}
	return built.path
}

// BuildMeshreg builds ./cmd/meshreg of the enclosing module into outDir,
// stamped with its git version (GitStamp), and returns the binary's path.
func BuildMeshreg(ctx context.Context, outDir string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	return BuildMeshregWith(ctx, root, outDir, GitStamp(ctx, root).Ldflags())
}

var moduleRoot struct {
	once sync.Once
	dir  string
	err  error
}

// ModuleRoot is the directory holding the go.mod of the module the tests
// run in.
func ModuleRoot() (string, error) {
	moduleRoot.once.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			moduleRoot.err = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		gomod := strings.TrimSpace(string(out))
		if gomod == "" || gomod == os.DevNull {
			moduleRoot.err = errors.New("testnet: not inside a Go module")
			return
		}
		moduleRoot.dir = filepath.Dir(gomod)
	})
	return moduleRoot.dir, moduleRoot.err
}

// Main runs the tests of a package that uses the harness and then removes
// the binary it built. Use it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testnet.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	return code
}
