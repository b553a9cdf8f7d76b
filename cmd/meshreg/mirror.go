package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// mirrorCommand points a host's container runtime at its meshreg node:
// containerd through hosts.toml files, Docker through daemon.json.
func mirrorCommand() *cli.Command {
	node := func() *cli.StringFlag {
		return &cli.StringFlag{
			Name:    "node",
			Value:   "http://127.0.0.1:5000",
			Usage:   "`URL` of this host's meshreg node, as the runtime reaches it (HOST:PORT means plain HTTP)",
			EnvVars: []string{"MESHREG_NODE"},
		}
	}
	return &cli.Command{
		Name:  "mirror",
		Usage: "configure this host's containerd or Docker to pull through a meshreg node",
		Subcommands: []*cli.Command{
			{
				Name:  "containerd",
				Usage: "write <hosts-dir>/<registry>/hosts.toml: the node first, the registry itself as the fallback",
				Description: "containerd reads these files when its CRI registry config_path is the hosts dir, and ctr\n" +
					"when given --hosts-dir. A hosts.toml that meshreg did not write is kept as\n" +
					"hosts.toml.meshreg-backup (once) and put back by --restore.",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "hosts-dir", Value: "/etc/containerd/certs.d", Usage: "containerd's registry config_path `DIR`"},
					&cli.StringSliceFlag{Name: "registries", Usage: "registries to pull through the node: `NAME[=URL],...` (NAME is host[:port] as images name it, or _default; URL is the registry itself, default https://NAME, docker.io: https://registry-1.docker.io)"},
					node(),
					&cli.DurationFlag{Name: "dial-timeout", Value: 200 * time.Millisecond, Usage: "how long containerd tries to connect to the node before it falls back to the registry (0: containerd's default, 30s; containerd 1.7 and later)"},
					&cli.BoolFlag{Name: "skip-verify", Usage: "an https node whose certificate this host does not trust: containerd skips verifying it"},
					&cli.BoolFlag{Name: "restore", Usage: "undo: remove the files meshreg wrote and put the backups back (every registry in the hosts dir, or those of --registries)"},
					&cli.BoolFlag{Name: "dry-run", Usage: "print the files that would be written, change nothing"},
				},
				Action: mirrorContainerd,
			},
			{
				Name:  "docker",
				Usage: "print (or merge into daemon.json) the registry-mirrors entry for Docker; Docker mirrors Docker Hub only",
				Flags: []cli.Flag{
					node(),
					&cli.StringFlag{Name: "daemon-json", Usage: "merge the entry into `FILE` (e.g. /etc/docker/daemon.json), keeping its other keys; the file as it was is kept as FILE.meshreg-backup (once)"},
				},
				Action: mirrorDocker,
			},
		},
	}
}

func mirrorContainerd(c *cli.Context) error {
	if c.Args().Present() {
		return fmt.Errorf("meshreg mirror containerd takes no arguments, got %q: name registries with --registries", c.Args().Slice())
	}
	dir := c.String("hosts-dir")
	if dir == "" {
		return fmt.Errorf("--hosts-dir is empty: give containerd's registry config_path, e.g. /etc/containerd/certs.d")
	}
	out := c.App.Writer
	if c.Bool("restore") {
		var names []string
		if c.IsSet("registries") {
			regs, err := parseRegistries(c.StringSlice("registries"))
			if err != nil {
				return err
			}
			for _, r := range regs {
				names = append(names, r.Name)
			}
		} else {
			var err error
			if names, err = managedRegistries(dir); err != nil {
				return err
			}
		}
		if len(names) == 0 {
			fmt.Fprintf(out, "nothing to restore in %s\n", dir)
		}
		for _, n := range names {
			if c.Bool("dry-run") {
				fmt.Fprintf(out, "would restore %s/%s\n", dir, n)
				continue
			}
			ch, err := restoreHostsFile(dir, n)
			if err != nil {
				return err
			}
			fmt.Fprintln(out, ch)
		}
		return nil
	}
	base, err := nodeURL(c.String("node"))
	if err != nil {
		return err
	}
	if u, _ := url.Parse(base); u.Path != "" {
		return fmt.Errorf("--node %q: containerd takes a mirror's API at the root of its URL: give scheme://host:port only", c.String("node"))
	}
	if d := c.Duration("dial-timeout"); d < 0 || d > time.Minute {
		return fmt.Errorf("--dial-timeout %s: want 0 (containerd's default) up to 1m; a short one (200ms) makes the fallback quick when the node is down", d)
	}
	regs, err := parseRegistries(c.StringSlice("registries"))
	if err != nil {
		return err
	}
	cfg := hostsConfig{Node: base, DialTimeout: c.Duration("dial-timeout"), SkipVerify: c.Bool("skip-verify")}
	for _, r := range regs {
		content := hostsToml(r, cfg)
		if c.Bool("dry-run") {
			fmt.Fprintf(out, "# %s/%s/%s\n%s\n", dir, r.Name, hostsTomlName, content)
			continue
		}
		ch, err := writeHostsFile(dir, r.Name, content)
		if err != nil {
			return err
		}
		fmt.Fprintln(out, ch)
	}
	return nil
}

// maxDaemonJSON bounds the daemon.json read for merging.
const maxDaemonJSON = 1 << 20

// dockerMirrorEntry is what daemon.json needs for the node: the mirror,
// and an insecure-registries entry when the node speaks plain HTTP on an
// address that Docker does not already treat as insecure (127.0.0.0/8).
func dockerMirrorEntry(base string) (mirror, insecure string) {
	u, err := url.Parse(base)
	if err != nil {
		return base, ""
	}
	if u.Scheme == "http" {
		host := u.Hostname()
		ip := net.ParseIP(host)
		if !(host == "localhost" || ip != nil && ip.IsLoopback()) {
			insecure = u.Host
		}
	}
	return base, insecure
}

// mergeDaemonJSON adds the mirror (first, so Docker tries it before the
// others) and the insecure registry to a daemon.json document, keeping
// every other key as it was. An empty document is an empty object. It
// reports whether anything changed.
func mergeDaemonJSON(doc []byte, mirror, insecure string) ([]byte, bool, error) {
	m := map[string]json.RawMessage{}
	if strings.TrimSpace(string(doc)) != "" {
		if err := json.Unmarshal(doc, &m); err != nil {
			return nil, false, fmt.Errorf("it is not a JSON object: %w", err)
		}
	}
	changed := false
	add := func(key, v string, first bool) error {
		var list []string
		if raw, ok := m[key]; ok {
			if err := json.Unmarshal(raw, &list); err != nil {
				return fmt.Errorf("%q is not a list of strings: %w", key, err)
			}
		}
		for _, have := range list {
			if strings.TrimSuffix(have, "/") == strings.TrimSuffix(v, "/") {
				return nil
			}
		}
		if first {
			list = append([]string{v}, list...)
		} else {
			list = append(list, v)
		}
		raw, err := json.Marshal(list)
		if err != nil {
			return err
		}
		m[key] = raw
		changed = true
		return nil
	}
	if err := add("registry-mirrors", mirror, true); err != nil {
		return nil, false, err
	}
	if insecure != "" {
		if err := add("insecure-registries", insecure, false); err != nil {
			return nil, false, err
		}
	}
	if !changed {
		return doc, false, nil
	}
	out, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, false, err
	}
	return append(out, '\n'), true, nil
}

func mirrorDocker(c *cli.Context) error {
	if c.Args().Present() {
		return fmt.Errorf("meshreg mirror docker takes no arguments, got %q", c.Args().Slice())
	}
	base, err := nodeURL(c.String("node"))
	if err != nil {
		return err
	}
	mirror, insecure := dockerMirrorEntry(base)
	errw := c.App.ErrWriter
	if errw == nil {
		errw = os.Stderr
	}
	note := "Docker uses registry-mirrors for Docker Hub images (docker.io) only: images of other registries\n" +
		"(ghcr.io, quay.io, ...) do not go through the node; containerd (meshreg mirror containerd) mirrors any registry.\n" +
		"Docker reads the change on `systemctl reload docker` (SIGHUP) or a restart.\n"
	if insecure != "" {
		note += fmt.Sprintf("The node speaks plain HTTP on %s, which is not a loopback address: insecure-registries lets Docker use it.\n", insecure)
	}
	path := c.String("daemon-json")
	if path == "" {
		entry := map[string][]string{"registry-mirrors": {mirror}}
		if insecure != "" {
			entry["insecure-registries"] = []string{insecure}
		}
		b, _ := json.MarshalIndent(entry, "", "  ")
		fmt.Fprintf(c.App.Writer, "%s\n", b)
		fmt.Fprint(errw, "Merge this into /etc/docker/daemon.json (or pass --daemon-json FILE).\n"+note)
		return nil
	}
	var doc []byte
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(path); err == nil {
		if fi.Size() > maxDaemonJSON {
			return fmt.Errorf("%s is %d bytes, more than the %d a daemon.json may have here: check the file", path, fi.Size(), maxDaemonJSON)
		}
		mode = fi.Mode().Perm()
		if doc, err = os.ReadFile(path); err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
	} else if !os.IsNotExist(err) {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	merged, changed, err := mergeDaemonJSON(doc, mirror, insecure)
	if err != nil {
		return fmt.Errorf("%s: %w; fix the file, or merge the entry by hand (run without --daemon-json to print it)", path, err)
	}
	if !changed {
		fmt.Fprintf(c.App.Writer, "unchanged %s (it already has %s)\n", path, mirror)
		fmt.Fprint(errw, note)
		return nil
	}
	backup := path + ".meshreg-backup"
	if doc != nil {
		if _, err := os.Lstat(backup); os.IsNotExist(err) {
			if err := writeFileAtomic(backup, doc, mode); err != nil {
				return fmt.Errorf("backing up %s: %w", path, err)
			}
			fmt.Fprintf(c.App.Writer, "kept the file as it was in %s\n", backup)
		}
	}
	if err := writeFileAtomic(path, merged, mode); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "wrote %s: registry-mirrors has %s\n", path, mirror)
	fmt.Fprint(errw, note)
	return nil
}
