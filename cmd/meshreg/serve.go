package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/node"
	"github.com/meshreg/meshreg/node/logrepeat"
	"github.com/meshreg/meshreg/p2p"
)

const defaultShutdownTimeout = 30 * time.Second

// flagGetter reads parsed flags; *cli.Context is one.
type flagGetter interface {
	String(name string) string
	Duration(name string) time.Duration
	Int(name string) int
	Int64(name string) int64
	Uint64(name string) uint64
	StringSlice(name string) []string
}

// serveConfig is everything `meshreg serve` was told.
type serveConfig struct {
	// ConfigFile and ClusterKeyFile are the --config and --cluster-key
	// paths as given ("" if none); the key's bytes are in Node.P2P.
	ConfigFile      string
	ClusterKeyFile  string
	Listen          string
	LogLevel        slog.Level
	LogFormat       string
	ShutdownTimeout time.Duration
	Node            node.Config
	API             api.Config
}

func configFromFlags(c flagGetter) (serveConfig, error) {
	cfg := serveConfig{
		ConfigFile:      c.String("config"),
		Listen:          c.String("listen"),
		LogFormat:       c.String("log-format"),
		ShutdownTimeout: c.Duration("shutdown-timeout"),
		Node:            node.DefaultConfig(),
		API:             api.DefaultConfig(),
	}
	if err := cfg.LogLevel.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return cfg, fmt.Errorf("--log-level %q: use debug, info, warn or error", c.String("log-level"))
	}
	if cfg.LogFormat != "text" && cfg.LogFormat != "json" {
		return cfg, fmt.Errorf("--log-format %q: use text or json", cfg.LogFormat)
	}
	cfg.Node.DataDir = c.String("data-dir")
	cfg.Node.UploadIdleTimeout = c.Duration("upload-idle-timeout")
	cfg.Node.P2P.ListenAddrs = c.StringSlice("p2p-listen")
	cfg.Node.P2P.Advertise = c.String("advertise")
	cfg.Node.Join = c.StringSlice("join")
	cfg.Node.Voters = c.Int("voters")
	cfg.Node.BootstrapExpect = c.Int("bootstrap-expect")
	cfg.Node.JoinToken = c.String("join-token")
	cfg.Node.StabilizationTime = c.Duration("stabilization-time")
	cfg.Node.DeadServerTimeout = c.Duration("dead-server-timeout")
	cfg.Node.Replicas = c.Int("replicas")
	cfg.Node.Region = c.String("region")
	cfg.Node.Zone = c.String("zone")
	cfg.Node.RepairInterval = c.Duration("repair-interval")
	cfg.Node.ReprovideInterval = c.Duration("reprovide-interval")
	cfg.Node.PeerIdleTimeout = c.Duration("peer-idle-timeout")
	cfg.Node.ScrubInterval = c.Duration("scrub-interval")
	var serr error
	cfg.Node.MinFreeDisk, serr = parseSize("min-free-disk", c.String("min-free-disk"))
	if serr != nil {
		return cfg, serr
	}
	if cfg.Node.ScrubRate, serr = parseSize("scrub-rate", c.String("scrub-rate")); serr != nil {
		return cfg, serr
	}
	if err := checkListen(cfg.Listen); err != nil {
		return cfg, err
	}
	if path := c.String("cluster-key"); path != "" {
		cfg.ClusterKeyFile = path
		key, err := p2p.LoadPrivateNetworkKey(path)
		if err != nil {
			return cfg, fmt.Errorf("--cluster-key: %w", err)
		}
		cfg.Node.P2P.PrivateNetworkKey = key
	}
	cfg.Node.Consensus.SnapshotThreshold = c.Uint64("snapshot-threshold")
	cfg.Node.Consensus.SnapshotInterval = c.Duration("snapshot-interval")
	cfg.Node.Consensus.TrailingLogs = c.Uint64("trailing-logs")
	cfg.API.MaxManifestSize = c.Int64("max-manifest-size")
	cfg.API.BodyIdleTimeout = c.Duration("body-idle-timeout")
	cfg.API.ClientIdleTimeout = c.Duration("client-idle-timeout")
	cfg.API.MaxWritesPerClient = c.Int("max-writes-per-client")
	cfg.Node.MaxUploads = c.Int("max-uploads")
	cfg.Node.MaxUploadsPerClient = c.Int("max-uploads-per-client")
	if err := errors.Join(cfg.Node.Validate(), cfg.API.Validate(), checkOpenable(cfg.Node), checkShutdownTimeout(cfg.ShutdownTimeout)); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// checkShutdownTimeout refuses a --shutdown-timeout that leaves in-flight
// requests no time, or holds a stopping node for more than an hour.
func checkShutdownTimeout(d time.Duration) error {
	if d < time.Second || d > time.Hour {
		return fmt.Errorf("--shutdown-timeout %s is out of range: use 1s to 1h0m0s", d)
	}
	return nil
}

// checkListen rejects a --listen that is not HOST:PORT, without binding it.
func checkListen(listen string) error {
	_, port, err := net.SplitHostPort(listen)
	if err == nil && port == "" {
		err = errors.New("missing port")
	}
	if err != nil {
		return fmt.Errorf("--listen %q: want HOST:PORT: %w", listen, err)
	}
	return nil
}

// checkOpenable runs the checks node.Open would make later on the parts
// node.Config.Validate leaves out (the libp2p and Raft settings, with the
// paths and ids Open fills in stubbed), and checks that every --join
// target has a form a node can dial, so a mistake fails at start (and in
// `serve --check`) rather than in a join loop that retries forever. It
// touches no file and no socket.
func checkOpenable(nc node.Config) error {
	pc := nc.P2P
	pc.DataDir = nc.DataDir
	cc := nc.Consensus
	cc.Dir, cc.NodeID = nc.DataDir, "check"
	errs := []error{pc.Validate(), cc.Validate()}
	for _, j := range nc.Join {
		errs = append(errs, checkJoin(j))
	}
	return errors.Join(errs...)
}

// checkJoin accepts what the node's join loop can dial: an http(s) URL
// with a host, or a multiaddr naming the peer with /p2p/<id>.
func checkJoin(target string) error {
	if strings.HasPrefix(target, "http://") || strings.HasPrefix(target, "https://") {
		u, err := url.Parse(target)
		if err != nil || u.Host == "" {
			return fmt.Errorf("--join %q: not a usable URL (want http://HOST:PORT)", target)
		}
		return nil
	}
	m, err := ma.NewMultiaddr(target)
	if err != nil {
		return fmt.Errorf("--join %q: neither an http(s) URL nor a multiaddr: %w", target, err)
	}
	if _, err := m.ValueForProtocol(ma.P_P2P); err != nil {
		return fmt.Errorf("--join %q: a multiaddr needs /p2p/<peer id>", target)
	}
	return nil
}

// checkedConfig is what `meshreg serve --check` prints: the effective
// settings under the names of their flags (so it reads like a --config
// file), with the cluster key's path but never its bytes.
type checkedConfig struct {
	Config            string   `json:"config,omitempty"`
	DataDir           string   `json:"data-dir"`
	Listen            string   `json:"listen"`
	P2PListen         []string `json:"p2p-listen"`
	Advertise         string   `json:"advertise"`
	Join              []string `json:"join"`
	BootstrapExpect   int      `json:"bootstrap-expect"`
	ClusterKey        string   `json:"cluster-key"`
	JoinToken         string   `json:"join-token"` // "(set)" or "", never the token
	StabilizationTime string   `json:"stabilization-time"`
	Voters            int      `json:"voters"`
	Replicas          int      `json:"replicas"`
	Region            string   `json:"region"`
	Zone              string   `json:"zone"`
	RepairInterval    string   `json:"repair-interval"`
	PeerIdleTimeout   string   `json:"peer-idle-timeout"`
	ReprovideInterval string   `json:"reprovide-interval"`
	MinFreeDisk       string   `json:"min-free-disk"`
	ScrubRate         string   `json:"scrub-rate"`
	ScrubInterval     string   `json:"scrub-interval"`
	DeadServerTimeout string   `json:"dead-server-timeout"`
	LogLevel          string   `json:"log-level"`
	LogFormat         string   `json:"log-format"`
	MaxManifestSize   int64    `json:"max-manifest-size"`
	UploadIdleTimeout string   `json:"upload-idle-timeout"`
	BodyIdleTimeout   string   `json:"body-idle-timeout"`
	ClientIdleTimeout string   `json:"client-idle-timeout"`
	MaxUploads        int      `json:"max-uploads"`
	MaxUploadsPerIP   int      `json:"max-uploads-per-client"`
	MaxWritesPerIP    int      `json:"max-writes-per-client"`
	SnapshotThreshold uint64   `json:"snapshot-threshold"`
	TrailingLogs      uint64   `json:"trailing-logs"`
	SnapshotInterval  string   `json:"snapshot-interval"`
	ShutdownTimeout   string   `json:"shutdown-timeout"`
}

func (cfg serveConfig) checked() checkedConfig {
	nonNil := func(s []string) []string {
		if s == nil {
			return []string{}
		}
		return s
	}
	return checkedConfig{
		Config:            cfg.ConfigFile,
		DataDir:           cfg.Node.DataDir,
		Listen:            cfg.Listen,
		P2PListen:         nonNil(cfg.Node.P2P.ListenAddrs),
		Advertise:         cfg.Node.P2P.Advertise,
		Join:              nonNil(cfg.Node.Join),
		BootstrapExpect:   cfg.Node.BootstrapExpect,
		ClusterKey:        cfg.ClusterKeyFile,
		JoinToken:         map[bool]string{true: hiddenSecret}[cfg.Node.JoinToken != ""],
		StabilizationTime: cfg.Node.StabilizationTime.String(),
		Voters:            cfg.Node.Voters,
		Replicas:          cfg.Node.Replicas,
		Region:            cfg.Node.Region,
		Zone:              cfg.Node.Zone,
		RepairInterval:    cfg.Node.RepairInterval.String(),
		PeerIdleTimeout:   cfg.Node.PeerIdleTimeout.String(),
		ReprovideInterval: cfg.Node.ReprovideInterval.String(),
		MinFreeDisk:       formatSize(cfg.Node.MinFreeDisk),
		ScrubRate:         formatSize(cfg.Node.ScrubRate),
		ScrubInterval:     cfg.Node.ScrubInterval.String(),
		DeadServerTimeout: cfg.Node.DeadServerTimeout.String(),
		LogLevel:          strings.ToLower(cfg.LogLevel.String()),
		LogFormat:         cfg.LogFormat,
		MaxManifestSize:   cfg.API.MaxManifestSize,
		UploadIdleTimeout: cfg.Node.UploadIdleTimeout.String(),
		BodyIdleTimeout:   cfg.API.BodyIdleTimeout.String(),
		ClientIdleTimeout: cfg.API.ClientIdleTimeout.String(),
		MaxUploads:        cfg.Node.MaxUploads,
		MaxUploadsPerIP:   cfg.Node.MaxUploadsPerClient,
		MaxWritesPerIP:    cfg.API.MaxWritesPerClient,
		SnapshotThreshold: cfg.Node.Consensus.SnapshotThreshold,
		TrailingLogs:      cfg.Node.Consensus.TrailingLogs,
		SnapshotInterval:  cfg.Node.Consensus.SnapshotInterval.String(),
		ShutdownTimeout:   cfg.ShutdownTimeout.String(),
	}
}

// printChecked writes the effective configuration as indented JSON.
func printChecked(w io.Writer, cfg serveConfig) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(cfg.checked())
}

// newLogger returns the node's logger, writing to w in the configured
// format, with repeats of a WARN or ERROR collapsed into one summary a
// minute (see logrepeat); run the returned handler's Run for the
// summaries of records that stopped repeating.
func newLogger(cfg serveConfig, w io.Writer) (*slog.Logger, *logrepeat.Handler) {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if cfg.LogFormat == "json" {
		// Durations as text ("1m0s"), as the text format writes them, not
		// as integer nanoseconds.
		opts.ReplaceAttr = func(_ []string, a slog.Attr) slog.Attr {
			if a.Value.Kind() == slog.KindDuration {
				a.Value = slog.StringValue(a.Value.Duration().String())
			}
			return a
		}
		h = slog.NewJSONHandler(w, opts)
	}
	repeats := logrepeat.New(h, logrepeat.DefaultOptions())
	return slog.New(repeats), repeats
}

// serve runs a node until ctx ends, then shuts down gracefully: the
// listener closes, in-flight requests finish (up to the shutdown timeout),
// background loops stop, and the stores close.
func serve(ctx context.Context, cfg serveConfig) (err error) {
	log, repeats := newLogger(cfg, os.Stderr)
	repeatsCtx, stopRepeats := context.WithCancel(context.Background())
	repeatsDone := make(chan struct{})
	go func() { defer close(repeatsDone); repeats.Run(repeatsCtx) }()
	defer func() { stopRepeats(); <-repeatsDone }() // last: writes what is pending
	n, err := node.Open(cfg.Node, log)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := n.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		log.Info("stores closed")
	}()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	n.RegisterMetrics(reg)
	h, err := api.New(cfg.API, n, n, api.NewMetrics(reg), log.With("component", "api"))
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w (is another registry running? pass --listen)", cfg.Listen, err)
	}
	srv := api.NewServer(cfg.API, h, slog.NewLogLogger(log.Handler(), slog.LevelWarn))

	runCtx, stopRun := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- n.Run(runCtx) }()
	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.Serve(ln) }()
	log.Info("meshreg serving", "version", cfg.Node.Version, "commit", cfg.Node.Build.ShortCommit(), "listen", ln.Addr().String(), "data_dir", cfg.Node.DataDir,
		"url", "http://"+strings.Replace(ln.Addr().String(), "[::]", "localhost", 1)+"/v2/")

	select {
	case err = <-serveDone:
		err = fmt.Errorf("HTTP server stopped: %w", err)
	case err = <-runDone: // the node stopped itself: its metadata store failed
		runDone <- nil
		_ = srv.Close()
	case <-ctx.Done():
		log.Info("shutting down: finishing in-flight requests", "timeout", cfg.ShutdownTimeout)
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		if serr := srv.Shutdown(sctx); serr != nil {
			err = fmt.Errorf("shutting down HTTP server: %w", serr)
			_ = srv.Close()
		}
		cancel()
	}
	stopRun()
	return errors.Join(err, <-runDone)
}
