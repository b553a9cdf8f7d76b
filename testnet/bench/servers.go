package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshreg/meshreg/testnet"
)

// server is one registry under measurement.
type server struct {
	name    string // column heading
	version string
	addr    string
	dir     string
	proc    *testnet.Process
	client  *testnet.Client
}

func (s *server) url() string { return "http://" + s.addr }

// stop ends the server with SIGTERM. meshreg (and each node of the
// cluster) must exit cleanly;
// Distribution's exit status is not its concern here.
func (s *server) stop() {
	if err := s.proc.Stop(30 * time.Second); err != nil && strings.HasPrefix(s.name, "meshreg") {
		logf("%s: %v", s.name, err)
	}
}

func (s *server) failed(err error) error {
	tail, _, _ := testnet.TailFile(filepath.Join(s.dir, "server.log"), 30)
	return fmt.Errorf("%s: %w\nlast lines of %s:\n%s", s.name, err, filepath.Join(s.dir, "server.log"), tail)
}

func start(ctx context.Context, s *server, cfg testnet.ProcessConfig, readyPath string) (*server, error) {
	p, err := testnet.StartProcess(cfg)
	if err != nil {
		return nil, err
	}
	s.proc = p
	s.client = testnet.NewClient(s.url())
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := p.WaitHTTP(wctx, s.url()+readyPath, http.StatusOK); err != nil {
		p.Kill()
		return nil, s.failed(err)
	}
	return s, nil
}

// startMeshreg starts `meshreg serve` with an empty data dir under dir,
// logging at warn level like the Distribution it is compared with.
func startMeshreg(ctx context.Context, bin, dir string) (*server, error) {
	return startMeshregNode(ctx, bin, dir, "meshreg")
}

// startMeshregNode starts `meshreg serve` as name, with an empty data dir
// under dir, the API and libp2p (TCP only) on free loopback ports, and the
// extra serve flags given (e.g. --join), and waits until it is ready.
func startMeshregNode(ctx context.Context, bin, dir, name string, extra ...string) (*server, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	addr, err := testnet.FreeAddr()
	if err != nil {
		return nil, err
	}
	p2p, err := testnet.FreeAddr()
	if err != nil {
		return nil, err
	}
	_, p2pPort, _ := net.SplitHostPort(p2p)
	s := &server{name: name, addr: addr, dir: dir, version: versionOf(bin, "version")}
	args := []string{"serve", "--listen", addr, "--data-dir", filepath.Join(dir, "data"),
		"--p2p-listen", "/ip4/127.0.0.1/tcp/" + p2pPort, "--log-format", "json", "--log-level", "warn"}
	return start(ctx, s, testnet.ProcessConfig{
		Name: name, Path: bin, Dir: dir, LogPath: filepath.Join(dir, "server.log"),
		Args:     append(args, extra...),
		StripEnv: []string{"MESHREG_"},
	}, readyPath())
}

// distributionConfig is CNCF Distribution's configuration: filesystem
// storage, deletes enabled, the in-memory blob descriptor cache of its
// example configuration, warn-level logs and no access log.
const distributionConfig = `version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: %s
  secret: %s
`

// startDistribution starts `registry serve config.yml` with an empty
// filesystem store under dir.
func startDistribution(ctx context.Context, bin, dir string) (*server, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	addr, err := testnet.FreeAddr()
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "config.yml")
	cfg := fmt.Sprintf(distributionConfig, filepath.Join(dir, "data"), addr, testnet.RandomHex(16))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	version := versionOf(bin, "--version") // "registry github.com/distribution/distribution/v3 v3.0.0+unknown"
	if f := strings.Fields(version); len(f) > 0 {
		version = strings.TrimSuffix(f[len(f)-1], "+unknown")
	}
	s := &server{name: "Distribution " + version, addr: addr, dir: dir, version: version}
	return start(ctx, s, testnet.ProcessConfig{
		Name: "registry", Path: bin, Dir: dir, LogPath: filepath.Join(dir, "server.log"),
		Args:     []string{"serve", cfgPath},
		Env:      []string{"OTEL_TRACES_EXPORTER=none"},
		StripEnv: []string{"REGISTRY_", "OTEL_"},
	}, "/v2/")
}

func versionOf(bin string, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).Output()
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// readyPath is meshreg's readiness path; MESHREG_E2E_READY_PATH overrides it
// (to try the benchmark with a stand-in server).
func readyPath() string {
	if p := os.Getenv(testnet.EnvReadyPath); p != "" {
		return p
	}
	return "/readyz"
}
