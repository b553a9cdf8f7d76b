package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/node"
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
	Listen          string
	LogLevel        slog.Level
	LogFormat       string
	ShutdownTimeout time.Duration
	Node            node.Config
	API             api.Config
}

func configFromFlags(c flagGetter) (serveConfig, error) {
	cfg := serveConfig{
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
	cfg.Node.Join = c.StringSlice("join")
	cfg.Node.Voters = c.Int("voters")
	cfg.Node.BootstrapExpect = c.Int("bootstrap-expect")
	cfg.Node.DeadServerTimeout = c.Duration("dead-server-timeout")
	cfg.Node.Replicas = c.Int("replicas")
	cfg.Node.Region = c.String("region")
	cfg.Node.Zone = c.String("zone")
	cfg.Node.RepairInterval = c.Duration("repair-interval")
	cfg.Node.ReprovideInterval = c.Duration("reprovide-interval")
	cfg.Node.PeerIdleTimeout = c.Duration("peer-idle-timeout")
	if path := c.String("cluster-key"); path != "" {
		key, err := p2p.LoadPrivateNetworkKey(path)
		if err != nil {
			return cfg, fmt.Errorf("--cluster-key: %w", err)
		}
		cfg.Node.P2P.PrivateNetworkKey = key
	}
	cfg.Node.Version = version
	cfg.Node.Consensus.SnapshotThreshold = c.Uint64("snapshot-threshold")
	cfg.Node.Consensus.SnapshotInterval = c.Duration("snapshot-interval")
	cfg.Node.Consensus.TrailingLogs = c.Uint64("trailing-logs")
	cfg.API.MaxManifestSize = c.Int64("max-manifest-size")
	cfg.API.BodyIdleTimeout = c.Duration("body-idle-timeout")
	if err := errors.Join(cfg.Node.Validate(), cfg.API.Validate()); err != nil {
		return cfg, err
	}
	return cfg, nil
}

func newLogger(cfg serveConfig) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// serve runs a node until ctx ends, then shuts down gracefully: the
// listener closes, in-flight requests finish (up to the shutdown timeout),
// background loops stop, and the stores close.
func serve(ctx context.Context, cfg serveConfig) (err error) {
	log := newLogger(cfg)
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
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    1 << 20,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	runCtx, stopRun := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- n.Run(runCtx) }()
	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.Serve(ln) }()
	log.Info("meshreg serving", "version", version, "listen", ln.Addr().String(), "data_dir", cfg.Node.DataDir,
		"url", "http://"+strings.Replace(ln.Addr().String(), "[::]", "localhost", 1)+"/v2/")

	select {
	case err = <-serveDone:
		err = fmt.Errorf("HTTP server stopped: %w", err)
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
