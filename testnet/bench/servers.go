package main

import (
	"context"
	"crypto/tls"
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
	// access is the TLS and auth setup the server runs with (nil: plain
	// HTTP, anonymous); every client of it uses the same.
	access *access
	// bearer, when set, is the token sent instead of Basic credentials
	// (see fetchToken).
	bearer string
	// pprof is the node's --pprof-listen address ("" if none).
	pprof string
}

func (s *server) url() string {
	if s.access != nil {
		return "https://" + s.addr
	}
	return "http://" + s.addr
}

// transport returns a transport to s of at most conns connections.
func (s *server) transport(conns int) *http.Transport {
	return s.secure(&http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true})
}

// secure makes tr trust s's CA, when s serves TLS, and speak HTTP/1.1
// over it as over plain HTTP (so that the comparison is of TLS and auth,
// not of HTTP/2's flow control).
func (s *server) secure(tr *http.Transport) *http.Transport {
	if s.access != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: s.access.roots}
		tr.ForceAttemptHTTP2 = false
	}
	return tr
}

// httpClient returns a client over tr that sends s's credentials with
// every request.
func (s *server) httpClient(tr http.RoundTripper, timeout time.Duration) *http.Client {
	if s.access != nil {
		tr = authorize{tr, s}
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

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
	s.client.HTTP = s.httpClient(s.secure(s.client.HTTP.Transport.(*http.Transport)), s.client.HTTP.Timeout)
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := p.WaitHTTPWith(wctx, s.httpClient(s.transport(1), 2*time.Second), s.url()+readyPath, http.StatusOK); err != nil {
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
	return startMeshregWith(ctx, bin, dir, name, nil, extra...)
}

// startMeshregWith is startMeshregNode with TLS and htpasswd auth on when
// acc is not nil.
func startMeshregWith(ctx context.Context, bin, dir, name string, acc *access, extra ...string) (*server, error) {
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
	s := &server{name: name, addr: addr, dir: dir, version: versionOf(bin, "version"), access: acc}
	args := []string{"serve", "--listen", addr, "--data-dir", filepath.Join(dir, "data"),
		"--p2p-listen", "/ip4/127.0.0.1/tcp/" + p2pPort, "--log-format", "json", "--log-level", "warn"}
	if acc != nil {
		args = append(args, "--tls-cert", acc.certFile, "--tls-key", acc.keyFile, "--auth-htpasswd", acc.htpasswd,
			"--auth-token-ttl", "1h")
	}
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

// distributionAccessConfig is what distributionConfig gets with TLS and
// htpasswd auth on.
const distributionAccessConfig = `  tls:
    certificate: %s
    key: %s
auth:
  htpasswd:
    realm: bench
    path: %s
`

// startDistribution starts `registry serve config.yml` with an empty
// filesystem store under dir.
func startDistribution(ctx context.Context, bin, dir string) (*server, error) {
	return startDistributionWith(ctx, bin, dir, nil)
}

// startDistributionWith is startDistribution with TLS and htpasswd auth
// on when acc is not nil.
func startDistributionWith(ctx context.Context, bin, dir string, acc *access) (*server, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	addr, err := testnet.FreeAddr()
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "config.yml")
	cfg := fmt.Sprintf(distributionConfig, filepath.Join(dir, "data"), addr, testnet.RandomHex(16))
	if acc != nil {
		cfg += fmt.Sprintf(distributionAccessConfig, acc.certFile, acc.keyFile, acc.htpasswd)
	}
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	version := versionOf(bin, "--version") // "registry github.com/distribution/distribution/v3 v3.0.0+unknown"
	if f := strings.Fields(version); len(f) > 0 {
		version = strings.TrimSuffix(f[len(f)-1], "+unknown")
	}
	s := &server{name: "Distribution " + version, addr: addr, dir: dir, version: version, access: acc}
	if acc != nil {
		s.name += " " + accessLabel
	}
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
