// Command testnet runs meshreg testnet scenarios in containers:
//
//	go run ./testnet/cmd/testnet run [-out DIR] [-keep] [-image TAG] testnet/scenarios/smoke.toml [more.toml]
//	go run ./testnet/cmd/testnet clean   # remove what runs left behind (-keep, or killed runs)
//
// It builds the node image once (and, for a scenario naming a previous
// revision, that revision's image), runs each scenario in turn (see package
// scenario), prints each report and writes it as JSON and Markdown under
// -out. It exits 1 when any check of any scenario fails.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/meshreg/meshreg/testnet/containers"
	"github.com/meshreg/meshreg/testnet/scenario"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testnet:", err)
		os.Exit(1)
	}
}

func usage(fs *flag.FlagSet) error {
	fmt.Fprintln(fs.Output(), "usage: testnet run [flags] SCENARIO.toml [SCENARIO.toml ...]\n       testnet clean")
	fs.PrintDefaults()
	return errors.New("usage")
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("testnet run", flag.ContinueOnError)
	out := fs.String("out", "testnet-out", "directory for reports and node logs (one subdirectory per scenario)")
	keep := fs.Bool("keep", false, "leave the containers and network of each run for debugging")
	image := fs.String("image", "meshreg-testnet:dev", "tag of the node image to build and run")
	noBuild := fs.Bool("no-build", false, "use -image (and a scenario's previous-release image, meshreg-testnet:prev-<12 hex>) as they are, without building them")
	verbose := fs.Bool("v", false, "debug logging")
	if len(args) == 1 && args[0] == "clean" {
		log := slog.New(slog.NewTextHandler(os.Stderr, nil))
		return containers.CleanupAll(ctx, log)
	}
	if len(args) == 0 || args[0] != "run" {
		return usage(fs)
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usage(fs)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	// Validate every file before anything starts.
	var scenarios []*scenario.Scenario
	for _, path := range fs.Args() {
		s, err := scenario.Load(path)
		if err != nil {
			return err
		}
		scenarios = append(scenarios, s)
	}
	if !*noBuild {
		log.Info("building the node image", "tag", *image)
		if err := scenario.BuildImage(ctx, *image); err != nil {
			return err
		}
	}
	var failed []string
	for _, s := range scenarios {
		opt := scenario.Options{Image: *image, OutDir: *out, Keep: *keep, Log: log}
		if s.Previous != "" {
			opt.PreviousImage = scenario.PreviousImageTag(s.Previous)
			if !*noBuild {
				log.Info("building the previous release's node image", "revision", s.Previous, "tag", opt.PreviousImage)
				if err := scenario.BuildRevisionImage(ctx, s.Previous, opt.PreviousImage); err != nil {
					return err
				}
			}
		}
		rep, err := scenario.Run(ctx, s, opt)
		fmt.Println(rep.Markdown())
		if err != nil || !rep.Passed {
			failed = append(failed, s.Name)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("scenarios failed: %v (reports and node logs in %s)", failed, *out)
	}
	return nil
}
