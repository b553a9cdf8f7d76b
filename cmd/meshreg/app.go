package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/node"
)

func newApp() *cli.App {
	return withUsageErrors(&cli.App{
		Name:  "meshreg",
		Usage: "a peer-to-peer distributed OCI container registry",
		Commands: []*cli.Command{
			serveCommand(),
			clusterCommand(),
			tokenCommand(),
			recoverCommand(),
			versionCommand(),
		},
	})
}

// The categories `meshreg serve --help` groups its flags in. Every flag
// that is a setting has one of these (flags_test.go checks it); --config
// and --check, which say where settings come from and what to do with
// them, come first without one.
const (
	catAPI     = "API"
	catCluster = "Cluster"
	catP2P     = "P2P"
	catStorage = "Storage"
	catLimits  = "Limits"
	catLogging = "Logging"
)

// serveFlags are the flags of `meshreg serve`. Each one is also a MESHREG_*
// environment variable and a key of the YAML file given by --config; a flag
// on the command line wins over the environment, which wins over the file.
// The file is read by loadConfigFile (config.go), which takes its keys from
// these flags and works with any cli.Flag; the altsrc wrappers are kept so
// that flags added in their style read the same.
func serveFlags() []cli.Flag {
	nd, ad := node.DefaultConfig(), api.DefaultConfig()
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Usage: "YAML `FILE` whose keys are these flags' names", EnvVars: []string{"MESHREG_CONFIG"}},
		altsrc.NewStringFlag(&cli.StringFlag{Name: "data-dir", Value: nd.DataDir, Usage: "`DIR` holding blobs and metadata", Category: catStorage, EnvVars: []string{"MESHREG_DATA_DIR"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "listen", Value: "127.0.0.1:5000", Usage: "`HOST:PORT` of the registry API", Category: catAPI, EnvVars: []string{"MESHREG_LISTEN"}}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "p2p-listen", Value: cli.NewStringSlice(nd.P2P.ListenAddrs...), Usage: "libp2p listen `MULTIADDR` (repeatable)", Category: catP2P, EnvVars: []string{"MESHREG_P2P_LISTEN"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "advertise", Category: catP2P, Usage: "`ADDR` other nodes reach this one at (its Raft address): an IP (the --p2p-listen TCP port is used) or a multiaddr such as /ip4/10.0.0.5/tcp/4001; in a DaemonSet, the host IP (status.hostIP). Default: chosen among the interface addresses, never a bridge or loopback one when another exists", EnvVars: []string{"MESHREG_ADVERTISE"}}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "join", Usage: "join the cluster of the node at `ADDR`: an http(s) URL of its API or a multiaddr with /p2p/<id> (repeatable)", Category: catCluster, EnvVars: []string{"MESHREG_JOIN"}}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "bootstrap-expect", Usage: "with --join: wait until `N` nodes (this one included) see each other, then the lowest peer id bootstraps them all", Category: catCluster, EnvVars: []string{"MESHREG_BOOTSTRAP_EXPECT"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "join-token", Usage: "`TOKEN` from `meshreg token create` on a member: admits this node when it joins (not needed with --cluster-key)", Category: catCluster, EnvVars: []string{"MESHREG_JOIN_TOKEN"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "cluster-key", Usage: "libp2p private-network key `FILE` (swarm.key format); nodes without it cannot connect", Category: catP2P, EnvVars: []string{"MESHREG_CLUSTER_KEY"}}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "voters", Value: nd.Voters, Usage: "how many Raft voters (`N`) the leader keeps", Category: catCluster, EnvVars: []string{"MESHREG_VOTERS"}}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "stabilization-time", Value: nd.StabilizationTime, Usage: "a non-voter is promoted only after it was healthy and caught up for `DURATION`", Category: catCluster, EnvVars: []string{"MESHREG_STABILIZATION_TIME"}}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "replicas", Value: nd.Replicas, Usage: "a manifest PUT returns once `N` nodes (or every live node, if fewer) hold each of its blobs", Category: catStorage, EnvVars: []string{"MESHREG_REPLICAS"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "region", Usage: "`REGION` this node runs in; blobs are fetched from peers in the same zone, then region, first", Category: catP2P, EnvVars: []string{"MESHREG_REGION"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "zone", Usage: "`ZONE` (within --region) this node runs in", Category: catP2P, EnvVars: []string{"MESHREG_ZONE"}}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "repair-interval", Value: nd.RepairInterval, Usage: "every `DURATION`, check that held blobs have --replicas live copies and make missing ones", Category: catStorage, EnvVars: []string{"MESHREG_REPAIR_INTERVAL"}}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "peer-idle-timeout", Value: nd.PeerIdleTimeout, Usage: "abandon a blob transfer from a peer that sends nothing for `DURATION`, and try the next holder", Category: catP2P, EnvVars: []string{"MESHREG_PEER_IDLE_TIMEOUT"}}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "reprovide-interval", Value: nd.ReprovideInterval, Usage: "every `DURATION`, announce every held blob in the DHT again", Category: catP2P, EnvVars: []string{"MESHREG_REPROVIDE_INTERVAL"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "min-free-disk", Value: formatSize(nd.MinFreeDisk), Usage: "free `SIZE` kept on the data dir's filesystem for the metadata store: below it, pushes are refused with 507 until space is freed (0: off)", Category: catStorage, EnvVars: []string{"MESHREG_MIN_FREE_DISK"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "scrub-rate", Value: formatSize(nd.ScrubRate), Usage: "`SIZE` per second the background scrub reads to re-hash stored blobs (corrupt ones are quarantined and fetched again; 0: off)", Category: catStorage, EnvVars: []string{"MESHREG_SCRUB_RATE"}}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "scrub-interval", Value: nd.ScrubInterval, Usage: "`DURATION` to pause between two scrub passes over every stored blob", Category: catStorage, EnvVars: []string{"MESHREG_SCRUB_INTERVAL"}}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "dead-server-timeout", Value: nd.DeadServerTimeout, Usage: "remove a member unreachable for `DURATION` from the cluster for good", Category: catCluster, EnvVars: []string{"MESHREG_DEAD_SERVER_TIMEOUT"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "log-level", Value: "info", Usage: "`LEVEL` of the least important lines logged: debug, info, warn or error", Category: catLogging, EnvVars: []string{"MESHREG_LOG_LEVEL"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "log-format", Value: "text", Usage: "`FORMAT` of log lines: text or json", Category: catLogging, EnvVars: []string{"MESHREG_LOG_FORMAT"}}),
		altsrc.NewInt64Flag(&cli.Int64Flag{Name: "max-manifest-size", Value: ad.MaxManifestSize, Usage: "largest manifest accepted, in `BYTES`", Category: catLimits, EnvVars: []string{"MESHREG_MAX_MANIFEST_SIZE"}}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "upload-idle-timeout", Value: nd.UploadIdleTimeout, Usage: "expire upload sessions idle for `DURATION`", Category: catLimits, EnvVars: []string{"MESHREG_UPLOAD_IDLE_TIMEOUT"}}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "body-idle-timeout", Value: ad.BodyIdleTimeout, Usage: "cut off a request whose body sends nothing for `DURATION`", Category: catLimits, EnvVars: []string{"MESHREG_BODY_IDLE_TIMEOUT"}}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "client-idle-timeout", Value: ad.ClientIdleTimeout, Usage: "cut off a client that reads nothing of a response for `DURATION` (renewed as bytes flow)", Category: catLimits, EnvVars: []string{"MESHREG_CLIENT_IDLE_TIMEOUT"}}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "max-writes-per-client", Value: ad.MaxWritesPerClient, Usage: "`N` requests with a body (blob and manifest uploads) one client (IP address) may have in flight at once; more get 429", Category: catLimits, EnvVars: []string{"MESHREG_MAX_WRITES_PER_CLIENT"}}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "max-uploads", Value: nd.MaxUploads, Usage: "`N` upload sessions at most open on this node; more get 429", Category: catLimits, EnvVars: []string{"MESHREG_MAX_UPLOADS"}}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "max-uploads-per-client", Value: nd.MaxUploadsPerClient, Usage: "`N` upload sessions at most one client (IP address) may have open; more get 429", Category: catLimits, EnvVars: []string{"MESHREG_MAX_UPLOADS_PER_CLIENT"}}),
		altsrc.NewUint64Flag(&cli.Uint64Flag{Name: "snapshot-threshold", Value: nd.Consensus.SnapshotThreshold, Usage: "`N` Raft log entries between metadata snapshots", Category: catCluster, EnvVars: []string{"MESHREG_SNAPSHOT_THRESHOLD"}}),
		altsrc.NewUint64Flag(&cli.Uint64Flag{Name: "trailing-logs", Value: nd.Consensus.TrailingLogs, Usage: "`N` Raft log entries kept after a snapshot, for followers that lag a little", Category: catCluster, EnvVars: []string{"MESHREG_TRAILING_LOGS"}}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "snapshot-interval", Value: nd.Consensus.SnapshotInterval, Usage: "every `DURATION`, check whether a snapshot is due", Category: catCluster, EnvVars: []string{"MESHREG_SNAPSHOT_INTERVAL"}}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "shutdown-timeout", Value: defaultShutdownTimeout, Usage: "`DURATION` in-flight requests may run after SIGTERM or SIGINT", Category: catAPI, EnvVars: []string{"MESHREG_SHUTDOWN_TIMEOUT"}}),
	}
}

// checkFlag makes `meshreg serve` validate its configuration and print it
// instead of serving. It is a command-line flag only, not an environment
// variable or a --config key: a stray MESHREG_CHECK in a pod's environment
// must not turn every start into a no-op.
var checkFlag = &cli.BoolFlag{
	Name:  "check",
	Usage: "read and validate the configuration (flags, MESHREG_* environment, --config file), print the effective configuration as JSON and exit, opening no file in the data dir and no port",
}

func serveCommand() *cli.Command {
	flags := serveFlags()
	return &cli.Command{
		Name:   "serve",
		Usage:  "run a registry node (with no flags: 127.0.0.1:5000, data in ./meshreg-data)",
		Flags:  append(flags, checkFlag),
		Before: func(c *cli.Context) error { return loadConfigFile(c, flags) },
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				// Flags after an argument are not parsed: `serve data --check` would serve.
				return fmt.Errorf("meshreg serve takes no arguments, got %q: settings are flags (--data-dir DIR); see meshreg serve --help", c.Args().Slice())
			}
			cfg, err := configFromFlags(c)
			if err != nil {
				return err
			}
			if c.Bool("check") {
				return printChecked(c.App.Writer, cfg)
			}
			return serve(c.Context, cfg)
		},
	}
}
