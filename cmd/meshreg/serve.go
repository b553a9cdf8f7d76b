package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/api/tlsconf"
	"github.com/meshreg/meshreg/node"
	"github.com/meshreg/meshreg/node/logrepeat"
)

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
// envTestPassTTL shortens the validity of the follower passes this node
// issues (node.Config.FollowerPassTTL), for tests only: a testnet test
// lets a follower's passes expire in seconds, not days. Deliberately not a
// flag, nor in the config file or the README.
const envTestPassTTL = "MESHREG_TEST_FOLLOWER_PASS_TTL"

func serve(ctx context.Context, cfg serveConfig) (err error) {
	log, repeats := newLogger(cfg, os.Stderr)
	repeatsCtx, stopRepeats := context.WithCancel(context.Background())
	repeatsDone := make(chan struct{})
	go func() { defer close(repeatsDone); repeats.Run(repeatsCtx) }()
	defer func() { stopRepeats(); <-repeatsDone }() // last: writes what is pending
	if v := os.Getenv(envTestPassTTL); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%s=%q: %w", envTestPassTTL, v, err)
		}
		cfg.Node.FollowerPassTTL = d // node.Open validates it
		log.Warn("follower passes are valid for "+d.String()+" only ("+envTestPassTTL+"): for tests, never in production", "ttl", d)
	}
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
	if cfg.API.Auth, cfg.API.Tokens, err = authGuard(cfg, log.With("component", "auth"), n.TokenKeys); err != nil {
		return err
	}
	if cfg.API.RateLimits, err = rateLimiter(cfg, log.With("component", "ratelimit")); err != nil {
		return err
	}
	if cfg.Node.Mirror.CredentialsFile != "" && cfg.API.Auth == nil {
		log.Warn("upstream credentials are configured but authentication is off: content fetched with them is readable by anyone who reaches this node; pass --auth-htpasswd and an --auth-policy that limits who may pull the upstreams' namespaces",
			"upstream_credentials", cfg.Node.Mirror.CredentialsFile)
	}
	cfg.API.Notifier = n.Notifier()
	h, err := api.New(cfg.API, n, n, api.NewMetrics(reg), log.With("component", "api"))
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w (is another registry running? pass --listen)", cfg.Listen, err)
	}
	srv := api.NewServer(cfg.API, h, slog.NewLogLogger(log.Handler(), slog.LevelWarn))
	scheme, serveLn := "http", srv.Serve
	if cfg.TLS.Enabled() {
		if srv.TLSConfig, err = tlsconf.Server(cfg.TLS, log.With("component", "tls")); err != nil {
			ln.Close()
			return err
		}
		scheme = "https"
		serveLn = func(ln net.Listener) error { return srv.ServeTLS(ln, "", "") } // the certificate comes from TLSConfig.GetCertificate
	} else if !isLoopback(cfg.Listen) {
		log.Warn("serving plain HTTP beyond loopback: registry traffic and credentials travel unencrypted; pass --tls-cert and --tls-key", "listen", cfg.Listen)
	}

	if cfg.PprofListen != "" {
		stopPprof, err := servePprof(ctx, cfg.PprofListen, log)
		if err != nil {
			ln.Close()
			return err
		}
		defer stopPprof()
	}
	runCtx, stopRun := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- n.Run(runCtx) }()
	serveDone := make(chan error, 1)
	go func() { serveDone <- serveLn(ln) }()
	log.Info("meshreg serving", "version", cfg.Node.Version, "commit", cfg.Node.Build.ShortCommit(), "listen", ln.Addr().String(), "data_dir", cfg.Node.DataDir,
		"tls", cfg.TLS.Enabled(), "client_certs", cfg.TLS.ClientCA != "",
		"url", scheme+"://"+strings.Replace(ln.Addr().String(), "[::]", "localhost", 1)+"/v2/")

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

// isLoopback reports whether a --listen HOST:PORT binds loopback only: an
// empty host, 0.0.0.0 or :: is every interface, a name other than
// localhost may resolve to anything.
func isLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
