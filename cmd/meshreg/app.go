package main

import (
	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/node"
)

func newApp() *cli.App {
	return &cli.App{
		Name:  "meshreg",
		Usage: "a peer-to-peer distributed OCI container registry",
		Commands: []*cli.Command{
			serveCommand(),
			clusterCommand(),
			tokenCommand(),
			recoverCommand(),
			versionCommand(),
		},
	}
}

// serveFlags are the flags of `meshreg serve`. Each one is also a MESHREG_*
// environment variable and a key of the YAML file given by --config; a flag
// on the command line wins over the environment, which wins over the file.
func serveFlags() []cli.Flag {
	nd, ad := node.DefaultConfig(), api.DefaultConfig()
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Usage: "YAML `FILE` whose keys are these flags' names", EnvVars: []string{"MESHREG_CONFIG"}},
		altsrc.NewStringFlag(&cli.StringFlag{Name: "data-dir", Value: nd.DataDir, Usage: "`DIR` holding blobs and metadata", EnvVars: []string{"MESHREG_DATA_DIR"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "listen", Value: "127.0.0.1:5000", Usage: "`HOST:PORT` of the registry API", EnvVars: []string{"MESHREG_LISTEN"}}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "p2p-listen", Value: cli.NewStringSlice(nd.P2P.ListenAddrs...), Usage: "libp2p listen `MULTIADDR` (repeatable)", EnvVars: []string{"MESHREG_P2P_LISTEN"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "advertise", Category: "P2P", Usage: "`ADDR` other nodes reach this one at (its Raft address): an IP (the --p2p-listen TCP port is used) or a multiaddr such as /ip4/10.0.0.5/tcp/4001; in a DaemonSet, the host IP (status.hostIP). Default: chosen among the interface addresses, never a bridge or loopback one when another exists", EnvVars: []string{"MESHREG_ADVERTISE"}}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "join", Usage: "join the cluster of this node: a multiaddr with /p2p/<id> or an http(s) URL of its API (repeatable)", EnvVars: []string{"MESHREG_JOIN"}}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "bootstrap-expect", Usage: "with --join: wait until `N` nodes (this one included) see each other, then the lowest peer id bootstraps them all", EnvVars: []string{"MESHREG_BOOTSTRAP_EXPECT"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "join-token", Usage: "`TOKEN` from `meshreg token create` on a member: admits this node when it joins (not needed with --cluster-key)", EnvVars: []string{"MESHREG_JOIN_TOKEN"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "cluster-key", Usage: "libp2p private-network key `FILE` (swarm.key format); nodes without it cannot connect", EnvVars: []string{"MESHREG_CLUSTER_KEY"}}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "voters", Value: nd.Voters, Usage: "how many Raft voters the leader keeps", EnvVars: []string{"MESHREG_VOTERS"}}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "stabilization-time", Value: nd.StabilizationTime, Usage: "a non-voter is promoted only after it was healthy and caught up this long", EnvVars: []string{"MESHREG_STABILIZATION_TIME"}}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "replicas", Value: nd.Replicas, Usage: "a manifest PUT returns once `N` nodes (or every live node, if fewer) hold each of its blobs", EnvVars: []string{"MESHREG_REPLICAS"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "region", Usage: "`REGION` this node runs in; blobs are fetched from peers in the same zone, then region, first", EnvVars: []string{"MESHREG_REGION"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "zone", Usage: "`ZONE` (within --region) this node runs in", EnvVars: []string{"MESHREG_ZONE"}}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "repair-interval", Value: nd.RepairInterval, Usage: "how often to check that held blobs have --replicas live copies and make missing ones", EnvVars: []string{"MESHREG_REPAIR_INTERVAL"}}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "peer-idle-timeout", Value: nd.PeerIdleTimeout, Usage: "abandon a blob transfer from a peer that sends nothing this long, and try the next holder", EnvVars: []string{"MESHREG_PEER_IDLE_TIMEOUT"}}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "reprovide-interval", Value: nd.ReprovideInterval, Usage: "how often to announce every held blob in the DHT again", EnvVars: []string{"MESHREG_REPROVIDE_INTERVAL"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "min-free-disk", Value: formatSize(nd.MinFreeDisk), Usage: "free `SIZE` kept on the data dir's filesystem for the metadata store: below it, pushes are refused with 507 until space is freed (0: off)", EnvVars: []string{"MESHREG_MIN_FREE_DISK"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "scrub-rate", Value: formatSize(nd.ScrubRate), Usage: "`SIZE` per second the background scrub reads to re-hash stored blobs (corrupt ones are quarantined and fetched again; 0: off)", EnvVars: []string{"MESHREG_SCRUB_RATE"}}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "scrub-interval", Value: nd.ScrubInterval, Usage: "pause between two scrub passes over every stored blob", EnvVars: []string{"MESHREG_SCRUB_INTERVAL"}}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "dead-server-timeout", Value: nd.DeadServerTimeout, Usage: "remove a member unreachable this long from the cluster for good", EnvVars: []string{"MESHREG_DEAD_SERVER_TIMEOUT"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error", EnvVars: []string{"MESHREG_LOG_LEVEL"}}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "log-format", Value: "text", Usage: "text or json", EnvVars: []string{"MESHREG_LOG_FORMAT"}}),
		altsrc.NewInt64Flag(&cli.Int64Flag{Name: "max-manifest-size", Value: ad.MaxManifestSize, Usage: "largest manifest accepted, in `BYTES`", EnvVars: []string{"MESHREG_MAX_MANIFEST_SIZE"}}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "upload-idle-timeout", Value: nd.UploadIdleTimeout, Usage: "expire upload sessions idle this long", EnvVars: []string{"MESHREG_UPLOAD_IDLE_TIMEOUT"}}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "body-idle-timeout", Value: ad.BodyIdleTimeout, Usage: "cut off a request whose body sends nothing this long", EnvVars: []string{"MESHREG_BODY_IDLE_TIMEOUT"}}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "client-idle-timeout", Value: ad.ClientIdleTimeout, Usage: "cut off a client that reads nothing of a response this long (renewed as bytes flow)", EnvVars: []string{"MESHREG_CLIENT_IDLE_TIMEOUT"}}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "max-writes-per-client", Value: ad.MaxWritesPerClient, Usage: "requests with a body (blob and manifest uploads) one client (IP address) may have in flight at once; more get 429", EnvVars: []string{"MESHREG_MAX_WRITES_PER_CLIENT"}}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "max-uploads", Value: nd.MaxUploads, Usage: "most upload sessions open on this node; more get 429", EnvVars: []string{"MESHREG_MAX_UPLOADS"}}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "max-uploads-per-client", Value: nd.MaxUploadsPerClient, Usage: "most upload sessions one client (IP address) may have open; more get 429", EnvVars: []string{"MESHREG_MAX_UPLOADS_PER_CLIENT"}}),
		altsrc.NewUint64Flag(&cli.Uint64Flag{Name: "snapshot-threshold", Value: nd.Consensus.SnapshotThreshold, Usage: "Raft log entries between metadata snapshots", EnvVars: []string{"MESHREG_SNAPSHOT_THRESHOLD"}}),
		altsrc.NewUint64Flag(&cli.Uint64Flag{Name: "trailing-logs", Value: nd.Consensus.TrailingLogs, Usage: "Raft log entries kept after a snapshot, for followers that lag a little", EnvVars: []string{"MESHREG_TRAILING_LOGS"}}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "snapshot-interval", Value: nd.Consensus.SnapshotInterval, Usage: "how often to check whether a snapshot is due", EnvVars: []string{"MESHREG_SNAPSHOT_INTERVAL"}}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "shutdown-timeout", Value: defaultShutdownTimeout, Usage: "how long in-flight requests may run after SIGTERM", EnvVars: []string{"MESHREG_SHUTDOWN_TIMEOUT"}}),
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
		Before: altsrc.InitInputSourceWithContext(flags, altsrc.NewYamlSourceFromFlagFunc("config")),
		Action: func(c *cli.Context) error {
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
