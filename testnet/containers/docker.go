// Package containers drives the Docker engine through its CLI (os/exec, no
// SDK) for the container testnet: one bridge network per run, node
// containers on it, and the faults the runner injects into them — kill,
// graceful stop, pause, restart, network cuts (iptables) and link shaping
// (tc) inside each container's network namespace, entered from the host
// with nsenter.
//
// Everything a Docker value creates carries the label
// meshreg.testnet.run=<run id>, so Cleanup removes it all, even after a
// failure half-way. Methods may be called from several goroutines: each is
// one or a few docker/nsenter invocations and keeps no state of its own
// beyond what Docker holds.
package containers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"
)

// RunLabel is the label key every object of a run carries; its value is
// the run id.
const RunLabel = "meshreg.testnet.run"

// Docker is the engine of one testnet run.
type Docker struct {
	bin   string
	runID string
	log   *slog.Logger
}

// New checks that a Docker daemon answers and returns the engine for run
// runID (which must be unique per run: it names the network and labels
// everything created).
func New(ctx context.Context, runID string, log *slog.Logger) (*Docker, error) {
	bin, err := exec.LookPath("docker")
	if err != nil {
		return nil, fmt.Errorf("containers: no docker CLI in PATH (%w): install Docker", err)
	}
	d := &Docker{bin: bin, runID: runID, log: log}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := d.run(ctx, "info", "--format", "{{.ServerVersion}}"); err != nil {
		return nil, fmt.Errorf("containers: no Docker daemon reachable: %w; start dockerd or set DOCKER_HOST", err)
	}
	return d, nil
}

// RunID is the id labelling everything of this run.
func (d *Docker) RunID() string { return d.runID }

// ErrDocker wraps every failed docker invocation.
var ErrDocker = errors.New("docker command failed")

// run runs the docker CLI and returns its trimmed stdout; a failure names
// the command and carries its stderr.
func (d *Docker) run(ctx context.Context, args ...string) (string, error) {
	return runCmd(ctx, nil, d.bin, args...)
}

func runCmd(ctx context.Context, env []string, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return strings.TrimSpace(out.String()), fmt.Errorf("%w: %s %s: %v: %s", ErrDocker, bin, strings.Join(args, " "), err, clip(errb.String(), 2000))
	}
	return strings.TrimSpace(out.String()), nil
}

// RunCLI runs the docker CLI with extra environment variables (for the
// Docker-engine client step: build, push, pull, rmi) and returns stdout.
func (d *Docker) RunCLI(ctx context.Context, env []string, args ...string) (string, error) {
	return runCmd(ctx, env, d.bin, args...)
}

func clip(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// Network is a bridge network of the run.
type Network struct {
	Name    string
	Gateway string // the host's address on it
}

// CreateNetwork creates the run's bridge network, named after the run.
func (d *Docker) CreateNetwork(ctx context.Context) (*Network, error) {
	name := "meshreg-testnet-" + d.runID
	if _, err := d.run(ctx, "network", "create", "--driver", "bridge", "--label", RunLabel+"="+d.runID, name); err != nil {
		return nil, fmt.Errorf("containers: creating network %s: %w (a leftover network of an earlier run? `docker network prune --filter label=%s`)", name, err, RunLabel)
	}
	gw, err := d.run(ctx, "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Gateway}}{{end}}", name)
	if err != nil {
		return nil, fmt.Errorf("containers: inspecting network %s: %w", name, err)
	}
	return &Network{Name: name, Gateway: gw}, nil
}

// Cleanup removes every container (with its volumes) and network of the
// run. It uses a fresh context so that it runs even when the run's context
// is cancelled, and returns every failure joined.
func (d *Docker) Cleanup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	filter := "label=" + RunLabel + "=" + d.runID
	var errs []error
	ids, err := d.run(ctx, "ps", "-aq", "--filter", filter)
	if err != nil {
		errs = append(errs, err)
	}
	if ids != "" {
		args := append([]string{"rm", "-f", "-v"}, strings.Fields(ids)...)
		if _, err := d.run(ctx, args...); err != nil {
			errs = append(errs, err)
		}
	}
	nets, err := d.run(ctx, "network", "ls", "-q", "--filter", filter)
	if err != nil {
		errs = append(errs, err)
	}
	if nets != "" {
		args := append([]string{"network", "rm"}, strings.Fields(nets)...)
		if _, err := d.run(ctx, args...); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("containers: cleanup of run %s (remove by hand with `docker rm -f -v $(docker ps -aq --filter %s)`): %w", d.runID, filter, err)
	}
	d.log.Info("removed the run's containers and network", "run", d.runID)
	return nil
}

// CleanupAll removes the containers and networks of every testnet run on
// the engine, finished or not: for runs killed before their own Cleanup.
func CleanupAll(ctx context.Context, log *slog.Logger) error {
	d := &Docker{bin: "docker", log: log}
	var errs []error
	filter := "label=" + RunLabel
	if ids, err := d.run(ctx, "ps", "-aq", "--filter", filter); err != nil {
		errs = append(errs, err)
	} else if ids != "" {
		if _, err := d.run(ctx, append([]string{"rm", "-f", "-v"}, strings.Fields(ids)...)...); err != nil {
			errs = append(errs, err)
		}
	}
	if nets, err := d.run(ctx, "network", "ls", "-q", "--filter", filter); err != nil {
		errs = append(errs, err)
	} else if nets != "" {
		if _, err := d.run(ctx, append([]string{"network", "rm"}, strings.Fields(nets)...)...); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
