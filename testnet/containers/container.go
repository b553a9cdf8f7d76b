package containers

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Spec describes a node container.
type Spec struct {
	Name    string            // container name, unique on the engine
	Image   string            // the node image
	Network *Network          // the run's network
	Port    int               // the container port published on 127.0.0.1 (random host port)
	Labels  map[string]string // besides the run label
	Args    []string          // the command (the image's ENTRYPOINT is kept)
	// VolumesFrom names a container (stopped or running) whose volumes
	// this one mounts: a new image on an old node's data.
	VolumesFrom string
}

// Container is a started container. Its address may change when it is
// started again, so IP and PublishedURL ask Docker each time they are
// refreshed by Refresh.
type Container struct {
	d    *Docker
	Name string
	ID   string
	port int

	mu        sync.Mutex
	ip        string
	published string // http://127.0.0.1:<host port>
	expected  string // why the last exit was deliberate ("" if none)
}

// Start creates and starts a container from spec, detached.
func (d *Docker) Start(ctx context.Context, s Spec) (*Container, error) {
	args := []string{"run", "-d", "--name", s.Name, "--network", s.Network.Name,
		"--label", RunLabel + "=" + d.runID, "-p", fmt.Sprintf("127.0.0.1::%d", s.Port)}
	for k, v := range s.Labels {
		args = append(args, "--label", k+"="+v)
	}
	if s.VolumesFrom != "" {
		args = append(args, "--volumes-from", s.VolumesFrom)
	}
	args = append(args, s.Image)
	args = append(args, s.Args...)
	id, err := d.run(ctx, args...)
	if err != nil {
		return nil, fmt.Errorf("containers: starting %s from %s: %w (is the image built? is the name taken by a leftover container?)", s.Name, s.Image, err)
	}
	c := &Container{d: d, Name: s.Name, ID: id, port: s.Port}
	if err := c.Refresh(ctx); err != nil {
		return c, err
	}
	d.log.Info("container started", "name", s.Name, "ip", c.IP(), "published", c.PublishedURL())
	return c, nil
}

// Refresh re-reads the container's IP and published port from Docker;
// call it after Start.
func (c *Container) Refresh(ctx context.Context) error {
	out, err := c.d.run(ctx, "inspect", "-f",
		`{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}} {{range $p, $b := .NetworkSettings.Ports}}{{if eq $p "`+strconv.Itoa(c.port)+`/tcp"}}{{range $b}}{{.HostPort}}{{end}}{{end}}{{end}}`, c.ID)
	if err != nil {
		return fmt.Errorf("containers: inspecting %s: %w", c.Name, err)
	}
	f := strings.Fields(out)
	if len(f) != 2 {
		return fmt.Errorf("containers: %s has no IP or no published port (%q): is it running?", c.Name, out)
	}
	c.mu.Lock()
	c.ip, c.published = f[0], "http://127.0.0.1:"+f[1]
	c.mu.Unlock()
	return nil
}

// IP is the container's address on the run's network.
func (c *Container) IP() string { c.mu.Lock(); defer c.mu.Unlock(); return c.ip }

// URL is the container's API on its network address (reachable from the
// host and from the other containers).
func (c *Container) URL() string { return fmt.Sprintf("http://%s:%d", c.IP(), c.port) }

// PublishedURL is the API as published on the host's 127.0.0.1, which the
// Docker daemon trusts without TLS.
func (c *Container) PublishedURL() string { c.mu.Lock(); defer c.mu.Unlock(); return c.published }

// Kill sends SIGKILL (kill -9): no shutdown of any kind.
func (c *Container) Kill(ctx context.Context) error {
	c.expect("killed")
	if _, err := c.d.run(ctx, "kill", "-s", "KILL", c.ID); err != nil {
		return fmt.Errorf("containers: kill -9 %s: %w", c.Name, err)
	}
	return nil
}

// Stop sends SIGTERM and waits up to timeout for a graceful exit, then
// SIGKILL (Docker's own escalation).
func (c *Container) Stop(ctx context.Context, timeout time.Duration) error {
	c.expect("stopped")
	if _, err := c.d.run(ctx, "stop", "-t", strconv.Itoa(int(timeout.Seconds())), c.ID); err != nil {
		return fmt.Errorf("containers: stopping %s: %w", c.Name, err)
	}
	return nil
}

// StartAgain starts the same container (same data volume) after a kill or
// stop, and refreshes its address, which may have changed.
func (c *Container) StartAgain(ctx context.Context) error {
	if _, err := c.d.run(ctx, "start", c.ID); err != nil {
		return fmt.Errorf("containers: starting %s again: %w", c.Name, err)
	}
	c.expect("")
	return c.Refresh(ctx)
}

// Rename gives the container another name on the engine, freeing its own
// for a successor (Docker's DNS on the network follows names). Name stays
// the name it was started with.
func (c *Container) Rename(ctx context.Context, name string) error {
	if _, err := c.d.run(ctx, "rename", c.ID, name); err != nil {
		return fmt.Errorf("containers: renaming %s to %s: %w", c.Name, name, err)
	}
	return nil
}

// Pause freezes every process of the container (cgroup freezer): the node
// stops answering but keeps its connections.
func (c *Container) Pause(ctx context.Context) error {
	if _, err := c.d.run(ctx, "pause", c.ID); err != nil {
		return fmt.Errorf("containers: pausing %s: %w", c.Name, err)
	}
	return nil
}

// Unpause thaws a paused container.
func (c *Container) Unpause(ctx context.Context) error {
	if _, err := c.d.run(ctx, "unpause", c.ID); err != nil {
		return fmt.Errorf("containers: unpausing %s: %w", c.Name, err)
	}
	return nil
}

// Remove removes the container for good, with its data volume.
func (c *Container) Remove(ctx context.Context) error {
	c.expect("removed")
	if _, err := c.d.run(ctx, "rm", "-f", "-v", c.ID); err != nil {
		return fmt.Errorf("containers: removing %s: %w", c.Name, err)
	}
	return nil
}

func (c *Container) expect(why string) { c.mu.Lock(); c.expected = why; c.mu.Unlock() }

// State is what Docker says of a container's process.
type State struct {
	Running  bool
	Paused   bool
	ExitCode int
	// Expected says why the container is down on purpose ("killed",
	// "stopped", "removed"), or "" if nobody stopped it.
	Expected string
}

// State reads the container's state.
func (c *Container) State(ctx context.Context) (State, error) {
	out, err := c.d.run(ctx, "inspect", "-f", "{{.State.Running}} {{.State.Paused}} {{.State.ExitCode}}", c.ID)
	if err != nil {
		return State{}, fmt.Errorf("containers: state of %s: %w", c.Name, err)
	}
	var s State
	if _, err := fmt.Sscanf(out, "%t %t %d", &s.Running, &s.Paused, &s.ExitCode); err != nil {
		return State{}, fmt.Errorf("containers: state of %s: parsing %q: %w", c.Name, out, err)
	}
	c.mu.Lock()
	s.Expected = c.expected
	c.mu.Unlock()
	return s, nil
}

// Logs returns the container's stdout and stderr, over every start.
func (c *Container) Logs(ctx context.Context) (string, error) {
	out, err := runCmdCombined(ctx, c.d.bin, "logs", c.ID)
	if err != nil {
		return out, fmt.Errorf("containers: logs of %s: %w", c.Name, err)
	}
	return out, nil
}

// PID is the host pid of the container's first process (0 when it is not
// running): the handle on its network namespace.
func (c *Container) PID(ctx context.Context) (int, error) {
	out, err := c.d.run(ctx, "inspect", "-f", "{{.State.Pid}}", c.ID)
	if err != nil {
		return 0, fmt.Errorf("containers: pid of %s: %w", c.Name, err)
	}
	pid, err := strconv.Atoi(out)
	if err != nil || pid == 0 {
		return 0, fmt.Errorf("containers: %s has no process (pid %q): is it running?", c.Name, out)
	}
	return pid, nil
}
