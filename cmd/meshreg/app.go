package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

func newApp() *cli.App {
	return withUsageErrors(&cli.App{
		Name:  "meshreg",
		Usage: "a peer-to-peer distributed OCI container registry",
		Commands: []*cli.Command{
			serveCommand(),
			clusterCommand(),
			tokenCommand(),
			gcCommand(),
			recoverCommand(),
			backupCommand(),
			restoreCommand(),
			exportCommand(),
			importCommand(),
			mirrorCommand(),
			preloadCommand(),
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

// configFlag names the YAML file whose keys are the settings' flag names.
// It is where settings come from, not one of them: it has no category,
// and `serve --check` prints it only when one was read.
var configFlag = &cli.StringFlag{Name: "config", Usage: "YAML `FILE` whose keys are these flags' names", EnvVars: envVars("config")}

// serveFlags are the flags of `meshreg serve`: --config, then one per
// setting of serveConfig.settings. Each setting is also a MESHREG_*
// environment variable and a key of the YAML file given by --config; a
// flag on the command line wins over the environment, which wins over
// the file (loadConfigFile, config.go).
func serveFlags() []cli.Flag {
	flags := []cli.Flag{configFlag}
	for _, s := range defaultServeConfig().settings() {
		flags = append(flags, s.flag())
	}
	return flags
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
