package containers

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// blockChain is the iptables chain of our own in each container's network
// namespace: INPUT and OUTPUT jump to it, Unblock flushes it, so a heal
// never touches a rule it did not add.
const blockChain = "MESHREG-TESTNET"

// nsenter runs a host binary (iptables, tc) inside the container's network
// namespace.
func (c *Container) nsenter(ctx context.Context, args ...string) (string, error) {
	pid, err := c.PID(ctx)
	if err != nil {
		return "", err
	}
	all := append([]string{"-t", fmt.Sprint(pid), "-n"}, args...)
	return runCmd(ctx, nil, "nsenter", all...)
}

// Block drops every packet between the container and each of ips, both
// ways, including established connections. It adds to what is blocked
// already.
func (c *Container) Block(ctx context.Context, ips []string) error {
	if err := c.ensureChain(ctx); err != nil {
		return err
	}
	for _, ip := range ips {
		for _, rule := range [][]string{{"-s", ip}, {"-d", ip}} {
			args := append([]string{"iptables", "-w", "5", "-A", blockChain}, rule...)
			if _, err := c.nsenter(ctx, append(args, "-j", "DROP")...); err != nil {
				return fmt.Errorf("containers: blocking %s in %s: %w (needs root and iptables on the host)", ip, c.Name, err)
			}
		}
	}
	return nil
}

// Unblock removes every block of the container.
func (c *Container) Unblock(ctx context.Context) error {
	if _, err := c.nsenter(ctx, "iptables", "-w", "5", "-F", blockChain); err != nil {
		if strings.Contains(err.Error(), "No chain") || strings.Contains(err.Error(), "does not exist") {
			return nil // nothing was ever blocked in this namespace
		}
		return fmt.Errorf("containers: unblocking %s: %w", c.Name, err)
	}
	return nil
}

func (c *Container) ensureChain(ctx context.Context) error {
	if _, err := c.nsenter(ctx, "iptables", "-w", "5", "-N", blockChain); err != nil {
		if !strings.Contains(err.Error(), "exists") {
			return fmt.Errorf("containers: creating chain %s in %s: %w (needs root and iptables on the host)", blockChain, c.Name, err)
		}
		return nil // made by an earlier Block in this namespace, jumps included
	}
	for _, hook := range []string{"INPUT", "OUTPUT"} {
		if _, err := c.nsenter(ctx, "iptables", "-w", "5", "-I", hook, "-j", blockChain); err != nil {
			return fmt.Errorf("containers: hooking %s into %s of %s: %w", blockChain, hook, c.Name, err)
		}
	}
	return nil
}

// Shaping is what Shape managed to apply.
type Shaping struct {
	Rate           string
	Latency        time.Duration
	LatencyApplied bool
	Note           string // why latency was not applied, if it was not
}

// Shape limits the container's egress toward each of ips to rate (tc
// syntax: "20mbit") with an htb class picked by u32 filters, the rest of
// its traffic unlimited. If latency > 0 it tries a netem qdisc under that
// class; when the kernel lacks sch_netem the rate alone is applied and
// Note says so — the caller must report it, never pretend. Shape replaces
// any earlier shaping of the container.
func (c *Container) Shape(ctx context.Context, rate string, latency time.Duration, ips []string) (Shaping, error) {
	sh := Shaping{Rate: rate, Latency: latency}
	tc := func(args ...string) error {
		_, err := c.nsenter(ctx, append([]string{"tc"}, args...)...)
		return err
	}
	_ = tc("qdisc", "del", "dev", "eth0", "root") // none yet is fine
	steps := [][]string{
		{"qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "10"},
		{"class", "add", "dev", "eth0", "parent", "1:", "classid", "1:10", "htb", "rate", "10gbit"},
		{"class", "add", "dev", "eth0", "parent", "1:", "classid", "1:20", "htb", "rate", rate, "ceil", rate},
	}
	for _, ip := range ips {
		steps = append(steps, []string{"filter", "add", "dev", "eth0", "parent", "1:", "protocol", "ip", "prio", "1", "u32", "match", "ip", "dst", ip + "/32", "flowid", "1:20"})
	}
	for _, s := range steps {
		if err := tc(s...); err != nil {
			return sh, fmt.Errorf("containers: shaping %s (tc %s): %w (needs root, tc and sch_htb on the host)", c.Name, strings.Join(s, " "), err)
		}
	}
	if latency > 0 {
		err := tc("qdisc", "add", "dev", "eth0", "parent", "1:20", "handle", "20:", "netem", "delay", fmt.Sprintf("%dms", latency.Milliseconds()))
		switch {
		case err == nil:
			sh.LatencyApplied = true
		case strings.Contains(err.Error(), "unknown") || strings.Contains(err.Error(), "No such file"):
			sh.Note = "latency not applied: kernel lacks sch_netem"
		default:
			sh.Note = "latency not applied: " + clip(err.Error(), 200)
		}
	}
	return sh, nil
}

func runCmdCombined(ctx context.Context, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return out.String(), err
}
