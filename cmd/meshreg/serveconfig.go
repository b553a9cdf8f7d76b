package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/api/tlsconf"
	"github.com/meshreg/meshreg/node"
	"github.com/meshreg/meshreg/node/notify"
	"github.com/meshreg/meshreg/p2p"
)

const defaultShutdownTimeout = 30 * time.Second

// serveConfig is everything `meshreg serve` was told.
type serveConfig struct {
	// ConfigFile and ClusterKeyFile are the --config and --cluster-key
	// paths as given ("" if none); the key's bytes are in Node.P2P.
	ConfigFile     string
	ClusterKeyFile string
	// AuthHtpasswd and AuthPolicy are the --auth-htpasswd and
	// --auth-policy paths ("" if none); see authGuard.
	AuthHtpasswd string
	AuthPolicy   string
	// The token service's --auth-token-* settings (Distribution's
	// auth.token names); see authGuard.
	TokenService, TokenRealm, TokenIssuer, TokenRootCertBundle string
	// RateLimits is the --rate-limits path ("" if none); see rateLimiter.
	RateLimits string
	Listen     string
	// PprofListen is the --pprof-listen HOST:PORT ("" if none).
	PprofListen     string
	LogLevel        slog.Level
	LogFormat       string
	ShutdownTimeout time.Duration
	// TLS names the API's certificate, key and client CA files (all ""
	// for plain HTTP).
	TLS  tlsconf.Files
	Node node.Config
	API  api.Config

	// JoinTLSCA is the --join-tls-ca path ("" if none): the CA that
	// https --join URLs are verified with, besides the system's.
	JoinTLSCA string
}

// defaultServeConfig is what `meshreg serve` runs with when told nothing:
// the defaults of its flags.
func defaultServeConfig() *serveConfig {
	return &serveConfig{
		Listen:          "127.0.0.1:5000",
		LogLevel:        slog.LevelInfo,
		LogFormat:       "text",
		ShutdownTimeout: defaultShutdownTimeout,
		Node:            node.DefaultConfig(),
		API:             api.DefaultConfig(),
	}
}

// settings declares every setting of `meshreg serve`, one line each (see
// setting.go): a new setting is a new line here and nothing else. The
// order is the order of `serve --check`'s output; --help sorts by name
// within each category.
func (cfg *serveConfig) settings() []setting {
	nc, ac := &cfg.Node, &cfg.API
	return []setting{
		stringSetting(&nc.DataDir, "data-dir", catStorage, "`DIR` holding blobs and metadata"),
		stringSetting(&cfg.Listen, "listen", catAPI, "`HOST:PORT` of the registry API"),
		stringSetting(&cfg.TLS.Cert, "tls-cert", catAPI, "serve the API over HTTPS with the certificate (chain) in PEM `FILE`; re-read when the file changes (needs --tls-key)"),
		stringSetting(&cfg.TLS.Key, "tls-key", catAPI, "private key PEM `FILE` of --tls-cert"),
		stringSetting(&cfg.TLS.ClientCA, "tls-client-ca", catAPI, "require client certificates signed by the CA in PEM `FILE` (every endpoint but /healthz and /readyz; needs --tls-cert)"),
		listSetting(&nc.P2P.ListenAddrs, "p2p-listen", catP2P, "libp2p listen `MULTIADDR` (repeatable)"),
		stringSetting(&nc.P2P.Advertise, "advertise", catP2P, "`ADDR` other nodes reach this one at (its Raft address): an IP (the --p2p-listen TCP port is used) or a multiaddr such as /ip4/10.0.0.5/tcp/4001; in a DaemonSet, the host IP (status.hostIP). Default: chosen among the interface addresses, never a bridge or loopback one when another exists"),
		listSetting(&nc.Join, "join", catCluster, "join the cluster of the node at `ADDR`: an http(s) URL of its API or a multiaddr with /p2p/<id> (repeatable)"),
		stringSetting(&cfg.JoinTLSCA, "join-tls-ca", catCluster, "trust the CA in PEM `FILE` (besides the system's roots) when reading an https --join URL, e.g. the CA of the members' --tls-cert"),
		intSetting(&nc.BootstrapExpect, "bootstrap-expect", catCluster, "with --join: wait until `N` nodes (this one included) see each other, then the lowest peer id bootstraps them all"),
		stringSetting(&cfg.ClusterKeyFile, "cluster-key", catP2P, "libp2p private-network key `FILE` (swarm.key format); nodes without it cannot connect"),
		secretSetting(&nc.JoinToken, "join-token", catCluster, "`TOKEN` from `meshreg token create` on a member: admits this node when it joins (not needed with --cluster-key)"),
		durationSetting(&nc.StabilizationTime, "stabilization-time", catCluster, "a non-voter is promoted only after it was healthy and caught up for `DURATION`"),
		intSetting(&nc.Voters, "voters", catCluster, "how many Raft voters (`N`) the leader keeps"),
		intSetting(&nc.MaxRaftMembers, "max-raft-members", catCluster, "at most `N` non-voters in the Raft configuration besides the voters; every other node follows the metadata without being a member (0: voters only)"),
		intSetting(&nc.Replicas, "replicas", catStorage, "a manifest PUT returns once `N` nodes (or every live node, if fewer) hold each of its blobs"),
		stringSetting(&nc.Region, "region", catP2P, "`REGION` this node runs in; blobs are fetched from peers in the same zone, then region, first"),
		stringSetting(&nc.Zone, "zone", catP2P, "`ZONE` (within --region) this node runs in"),
		choiceFlagSetting(&nc.OriginFetchPerRegion, "upstream-fetch", catCluster, "`SCOPE` of an upstream blob fetch: cluster (one node of the cluster fetches a blob no peer holds, the others stream from it) or region (one node per --region)", "cluster", "region"),
		durationSetting(&nc.RepairInterval, "repair-interval", catStorage, "every `DURATION`, check that held blobs have --replicas live copies and make missing ones"),
		durationSetting(&nc.PeerIdleTimeout, "peer-idle-timeout", catP2P, "abandon a blob transfer from a peer that sends nothing for `DURATION`, and try the next holder"),
		durationSetting(&nc.ReprovideInterval, "reprovide-interval", catP2P, "every `DURATION`, announce every held blob in the DHT again"),
		sizeSetting(&nc.MinFreeDisk, "min-free-disk", catStorage, "free `SIZE` kept on the data dir's filesystem for the metadata store: below it, pushes are refused with 507 until space is freed (0: off)"),
		sizeSetting(&nc.MaxDisk, "max-disk", catStorage, "most `SIZE` of blobs this node keeps: past it, it evicts the least recently read blobs that --replicas other live nodes hold (0: no budget)"),
		sizeSetting(&nc.MaxDiskLow, "max-disk-low", catStorage, "`SIZE` of blobs eviction brings the node down to once past --max-disk (0: 90% of --max-disk)"),
		sizeSetting(&nc.ScrubRate, "scrub-rate", catStorage, "`SIZE` per second the background scrub reads to re-hash stored blobs (corrupt ones are quarantined and fetched again; 0: off)"),
		durationSetting(&nc.ScrubInterval, "scrub-interval", catStorage, "`DURATION` to pause between two scrub passes over every stored blob"),
		durationSetting(&nc.GCInterval, "gc-interval", catStorage, "every `DURATION`, the leader runs a cluster-wide garbage collection that frees blobs no manifest references, linked more than --gc-grace ago (0: only `meshreg gc`)"),
		durationSetting(&nc.GCGrace, "gc-grace", catStorage, "scheduled garbage collections keep blobs linked less than `DURATION` ago (a push in progress)"),
		durationSetting(&nc.DeadServerTimeout, "dead-server-timeout", catCluster, "remove a member unreachable for `DURATION` from the cluster for good"),
		levelSetting(&cfg.LogLevel, "log-level", catLogging, "`LEVEL` of the least important lines logged: debug, info, warn or error"),
		stringSetting(&cfg.PprofListen, "pprof-listen", catLogging, "serve Go's CPU, heap and goroutine profiles at http://`HOST:PORT`/debug/pprof/ (loopback only; off by default)"),
		choiceSetting(&cfg.LogFormat, "log-format", catLogging, "`FORMAT` of log lines: text or json", "text", "json"),
		int64Setting(&ac.MaxManifestSize, "max-manifest-size", catLimits, "largest manifest accepted, in `BYTES`"),
		durationSetting(&nc.UploadIdleTimeout, "upload-idle-timeout", catLimits, "expire upload sessions idle for `DURATION`"),
		durationSetting(&ac.BodyIdleTimeout, "body-idle-timeout", catLimits, "cut off a request whose body sends nothing for `DURATION`"),
		durationSetting(&ac.ClientIdleTimeout, "client-idle-timeout", catLimits, "cut off a client that reads nothing of a response for `DURATION` (renewed as bytes flow)"),
		intSetting(&nc.MaxUploads, "max-uploads", catLimits, "`N` upload sessions at most open on this node; more get 429"),
		intSetting(&nc.MaxUploadsPerClient, "max-uploads-per-client", catLimits, "`N` upload sessions at most one client (IP address) may have open; more get 429"),
		stringSetting(&cfg.RateLimits, "rate-limits", catLimits, "rate limits `FILE` (YAML: token buckets per client, user and repository); over a limit /v2/ answers 429 with Retry-After; reloaded when it changes"),
		intSetting(&ac.MaxWritesPerClient, "max-writes-per-client", catLimits, "`N` requests with a body (blob and manifest uploads) one client (IP address) may have in flight at once; more get 429"),
		uint64Setting(&nc.Consensus.SnapshotThreshold, "snapshot-threshold", catCluster, "`N` Raft log entries between metadata snapshots"),
		uint64Setting(&nc.Consensus.TrailingLogs, "trailing-logs", catCluster, "`N` Raft log entries kept after a snapshot, for followers that lag a little"),
		durationSetting(&nc.Consensus.SnapshotInterval, "snapshot-interval", catCluster, "every `DURATION`, check whether a snapshot is due"),
		stringSetting(&cfg.AuthHtpasswd, "auth-htpasswd", catAPI, "htpasswd `FILE` of users (bcrypt entries only, `htpasswd -B`): turns on Basic authentication for /v2/ and the admin endpoints; reloaded when it changes"),
		stringSetting(&cfg.AuthPolicy, "auth-policy", catAPI, "access policy `FILE` (YAML: who may pull, push, delete in which repositories, and who is admin); without it every user may do everything and anonymous clients nothing; reloaded when it changes"),
		durationSetting(&nc.TokenTTL, "auth-token-ttl", catAPI, "bearer tokens the node issues are valid for `DURATION`"),
		durationSetting(&nc.TokenKeyRotation, "auth-token-key-rotation", catAPI, "the cluster's leader makes a new token signing key every `DURATION` (tokens signed by the previous key stay valid until they expire)"),
		stringSetting(&cfg.TokenService, "auth-token-service", catAPI, "`NAME` of this registry in bearer tokens (their aud, and the challenge's service); default meshreg"),
		stringSetting(&cfg.TokenRealm, "auth-token-realm", catAPI, "`URL` of the token service in the Bearer challenge: a load balancer's /_meshreg/v1/token, or an external token server; default the node's own on the request's host"),
		stringSetting(&cfg.TokenIssuer, "auth-token-issuer", catAPI, "`NAME` (iss) of an external token issuer whose tokens are accepted (needs --auth-token-rootcertbundle)"),
		stringSetting(&cfg.TokenRootCertBundle, "auth-token-rootcertbundle", catAPI, "PEM `FILE` of the certificates whose keys sign the external issuer's tokens (x5c chains to them, or a kid naming their key)"),
		stringSetting(&nc.Notifications, "notifications", catAPI, "webhooks `FILE` (YAML: endpoints sent each push and delete, and pulls if asked, in CNCF Distribution's notification format, queued on disk and retried); reloaded when it changes"),
		durationSetting(&cfg.ShutdownTimeout, "shutdown-timeout", catAPI, "`DURATION` in-flight requests may run after SIGTERM or SIGINT"),
		upstreamSetting(&nc.Mirror.Upstreams, "upstream", catAPI, "mirror the registry clients call `NAME` (docker.io, ghcr.io, HOST:PORT) at URL: NAME=URL[;revalidate=5m][;allow=GLOB]...[;ca-file=FILE][;skip-verify][;region-fetch] (repeatable; in the config file also a list of mappings with those keys)"),
		stringSetting(&nc.Mirror.CredentialsFile, "upstream-credentials", catAPI, "Docker config.json `FILE` with the upstreams' credentials (auths: auth or username/password); reloaded when it changes"),
		stringSetting(&nc.Mirror.Default, "upstream-default", catAPI, "the upstream `NAME` a pull without ?ns= means for a repository the cluster does not hold (Docker's registry-mirrors); default docker.io when configured; none: no default"),
	}
}

// configFromFlags fills a serveConfig from the parsed flags (which hold
// the MESHREG_* environment and the --config file too) and checks it as
// node.Open and api.New would, touching no file but the cluster key and
// no socket.
func configFromFlags(c flagGetter) (serveConfig, error) {
	cfg := defaultServeConfig()
	cfg.ConfigFile = c.String(configFlag.Name)
	var errs []error // every value that does not parse, at once
	for _, s := range cfg.settings() {
		errs = append(errs, s.read(c))
	}
	if err := errors.Join(errs...); err != nil {
		return *cfg, err
	}
	if err := checkListen(cfg.Listen); err != nil {
		return *cfg, err
	}
	if err := checkPprofListen(cfg.PprofListen); err != nil {
		return *cfg, err
	}
	if err := cfg.TLS.Check(); err != nil {
		return *cfg, err
	}
	cfg.API.RequireClientCert = cfg.TLS.ClientCA != ""
	cfg.API.Mirror = api.Mirroring{Upstreams: cfg.Node.Mirror.Names(), Default: cfg.Node.Mirror.DefaultUpstream()}
	if cfg.JoinTLSCA != "" {
		client, err := tlsconf.HTTPClient(tlsconf.ClientFiles{CA: cfg.JoinTLSCA, CAFlag: "--join-tls-ca"}, 30*time.Second)
		if err != nil {
			return *cfg, err
		}
		cfg.Node.JoinHTTP = client
	}
	if path := cfg.ClusterKeyFile; path != "" {
		key, err := p2p.LoadPrivateNetworkKey(path)
		if err != nil {
			return *cfg, fmt.Errorf("--cluster-key: %w", err)
		}
		cfg.Node.P2P.PrivateNetworkKey = key
	}
	cfg.Node.TokenKeys = cfg.AuthHtpasswd != ""
	if _, _, err := authGuard(*cfg, nil, nil); err != nil {
		return *cfg, err
	}
	if _, err := rateLimiter(*cfg, nil); err != nil {
		return *cfg, err
	}
	if path := cfg.Node.Notifications; path != "" {
		if _, err := notify.Watch(path); err != nil {
			return *cfg, err
		}
	}
	if err := errors.Join(cfg.Node.Validate(), cfg.API.Validate(), checkOpenable(cfg.Node), checkShutdownTimeout(cfg.ShutdownTimeout)); err != nil {
		return *cfg, err
	}
	return *cfg, nil
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

// printChecked writes what `meshreg serve --check` prints: the effective
// settings as indented JSON under the names of their flags, in the order
// of the table, so that it reads back as a --config file; --config's own
// path first if one was read. The cluster key is printed as its path,
// never its bytes, and the join token as hiddenSecret.
func printChecked(w io.Writer, cfg serveConfig) error {
	var obj bytes.Buffer
	obj.WriteByte('{')
	field := func(key string, v any) error {
		if obj.Len() > 1 {
			obj.WriteByte(',')
		}
		k, _ := json.Marshal(key)
		val, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("printing %s: %w", key, err)
		}
		obj.Write(k)
		obj.WriteByte(':')
		obj.Write(val)
		return nil
	}
	if cfg.ConfigFile != "" {
		if err := field(configFlag.Name, cfg.ConfigFile); err != nil {
			return err
		}
	}
	for _, s := range cfg.settings() {
		if err := field(s.name, s.show()); err != nil {
			return err
		}
	}
	obj.WriteByte('}')
	var out bytes.Buffer
	if err := json.Indent(&out, obj.Bytes(), "", "  "); err != nil {
		return fmt.Errorf("printing the configuration: %w", err)
	}
	out.WriteByte('\n')
	_, err := w.Write(out.Bytes())
	return err
}

// choiceFlagSetting is a boolean chosen by name: off (false) or on (true).
func choiceFlagSetting(p *bool, name, category, usage, off, on string) setting {
	return textSetting(name, category, usage,
		func() string {
			if *p {
				return on
			}
			return off
		},
		func(s string) error {
			switch s {
			case off, on:
				*p = s == on
				return nil
			}
			return fmt.Errorf("--%s %q: use %s or %s", name, s, off, on)
		})
}
