package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The files `meshreg mirror containerd` manages, one directory per
// registry under the hosts dir (containerd's config_path):
//
//	/etc/containerd/certs.d/
//	├── docker.io/
//	│   ├── hosts.toml                  ours: starts with hostsTomlMarker
//	│   └── hosts.toml.meshreg-backup   the operator's file we replaced (once)
//	├── ghcr.io/hosts.toml
//	└── _default/hosts.toml             any registry without its own directory
const (
	hostsTomlName   = "hosts.toml"
	hostsTomlBackup = hostsTomlName + ".meshreg-backup"
	// hostsTomlMarker starts every hosts.toml we write: a file that starts
	// with it is replaced or removed without a backup.
	hostsTomlMarker = "# Written by `meshreg mirror containerd`"
	// maxHostsToml bounds how much of an existing hosts.toml is read to
	// find out whether it is ours.
	maxHostsToml = 1 << 20
	// defaultRegistryDir is containerd's directory for every registry that
	// has none of its own.
	defaultRegistryDir = "_default"
)

// mirrorRegistry is one --registries entry: the name clients pull by and
// the registry itself, containerd's fallback when the node fails.
type mirrorRegistry struct {
	Name   string // docker.io, 127.0.0.1:5000, _default
	Server string // https://registry-1.docker.io; "" for _default
}

// parseRegistries reads --registries entries: NAME or NAME=URL, where
// NAME is host[:port] or _default. The server of a bare NAME is
// https://NAME, except docker.io (https://registry-1.docker.io) and
// _default (none: containerd then uses the registry the image names).
func parseRegistries(entries []string) ([]mirrorRegistry, error) {
	var out []mirrorRegistry
	seen := map[string]bool{}
	for _, e := range entries {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		name, server, explicit := strings.Cut(e, "=")
		if err := validRegistryName(name); err != nil {
			return nil, fmt.Errorf("--registries %q: %w", e, err)
		}
		if seen[name] {
			return nil, fmt.Errorf("--registries: %s is given twice", name)
		}
		seen[name] = true
		switch {
		case explicit:
			u, err := url.Parse(server)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
				return nil, fmt.Errorf("--registries %q: the server %q is not an http(s) URL such as https://registry-1.docker.io", e, server)
			}
			server = strings.TrimSuffix(server, "/")
		case name == "docker.io":
			server = "https://registry-1.docker.io"
		case name == defaultRegistryDir:
			server = ""
		default:
			server = "https://" + name
		}
		out = append(out, mirrorRegistry{Name: name, Server: server})
	}
	if len(out) == 0 {
		return nil, errors.New("--registries: name at least one registry to mirror, e.g. --registries docker.io,ghcr.io")
	}
	return out, nil
}

// validRegistryName accepts what containerd looks up as a hosts directory:
// host[:port] (a DNS name, an IPv4 address or a bracketed IPv6 address) or
// _default. Anything else (a path, a scheme, "..") would write outside the
// registry's directory or never be read.
func validRegistryName(name string) error {
	if name == defaultRegistryDir {
		return nil
	}
	bad := func(why string) error {
		return fmt.Errorf("registry name %q %s: want host[:port] as in an image reference (docker.io, ghcr.io, 10.0.0.5:5000) or _default", name, why)
	}
	if name == "" {
		return bad("is empty")
	}
	if len(name) > 255 {
		return bad("is longer than 255 characters")
	}
	host, port := name, ""
	if strings.HasPrefix(name, "[") {
		end := strings.Index(name, "]")
		if end < 0 {
			return bad("has no closing ]")
		}
		host, port = name[1:end], strings.TrimPrefix(name[end+1:], ":")
		if name[end+1:] != "" && !strings.HasPrefix(name[end+1:], ":") {
			return bad("has text after ]")
		}
		if ip := net.ParseIP(host); ip == nil || ip.To4() != nil {
			return bad("has no IPv6 address in brackets")
		}
	} else if h, p, ok := strings.Cut(name, ":"); ok {
		host, port = h, p
		if port == "" {
			return bad("has an empty port")
		}
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || port[0] == '0' {
			return bad("has a port that is not 1-65535")
		}
	}
	if strings.HasPrefix(name, "[") {
		return nil
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 {
			return bad("has an empty or too long DNS label")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return bad("has a DNS label that starts or ends with -")
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return bad("has a character other than letters, digits, - and .")
			}
		}
	}
	return nil
}

// hostsConfig is what every hosts.toml we write says about the node.
type hostsConfig struct {
	Node        string        // the node's base URL, http(s)://HOST:PORT
	DialTimeout time.Duration // 0: containerd's default (30s)
	SkipVerify  bool          // an https node whose certificate the host does not trust
}

// hostsToml is the content of reg's hosts.toml: the node as the first
// host, for pull and resolve only, and the registry itself as the server
// containerd falls back to when the node refuses the connection, times out
// dialling or answers an error. A registry whose name is the node's own
// host:port is the node's own namespace: its server is the node, with no
// mirror in front.
func hostsToml(reg mirrorRegistry, cfg hostsConfig) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s: replaced when it runs again, removed by --restore.\n", hostsTomlMarker)
	nodeHost := urlHost(cfg.Node)
	if reg.Name == nodeHost {
		fmt.Fprintf(&b, "# %s is the meshreg node itself: no mirror in front of it.\n", reg.Name)
		fmt.Fprintf(&b, "server = %q\n", cfg.Node)
		if cfg.SkipVerify {
			b.WriteString("skip_verify = true\n")
		}
		return b.Bytes()
	}
	if reg.Server != "" {
		fmt.Fprintf(&b, "# The fallback when the node fails.\nserver = %q\n", reg.Server)
	} else {
		b.WriteString("# No server: the fallback is the registry each image names.\n")
	}
	fmt.Fprintf(&b, "\n[host.%q]\n", cfg.Node)
	b.WriteString("  capabilities = [\"pull\", \"resolve\"]\n")
	if cfg.DialTimeout > 0 {
		fmt.Fprintf(&b, "  dial_timeout = %q\n", cfg.DialTimeout.String())
	}
	if cfg.SkipVerify {
		b.WriteString("  skip_verify = true\n")
	}
	return b.Bytes()
}

// urlHost is the host[:port] of a base URL, as an image reference names it.
func urlHost(base string) string {
	u, err := url.Parse(base)
	if err != nil {
		return ""
	}
	return u.Host
}

// hostsChange is what writing or restoring one registry's file did.
type hostsChange struct {
	Path   string
	Action string // wrote, unchanged, backed up, restored, removed, ...
	Backup string // the backup file, when one was made or restored
}

func (c hostsChange) String() string {
	switch c.Action {
	case "backed up":
		return fmt.Sprintf("wrote %s (the file that was there is in %s)", c.Path, c.Backup)
	case "restored":
		return fmt.Sprintf("restored %s from %s", c.Path, c.Backup)
	}
	return c.Action + " " + c.Path
}

// writeHostsFile writes content as dir/<name>/hosts.toml, atomically
// (a temp file in the same directory, synced, then renamed over). A
// hosts.toml that we did not write is first moved to hosts.toml.meshreg-
// backup, unless a backup is already there: then nothing is changed and
// the error says which two files to sort out. Writing what is already
// there changes nothing.
func writeHostsFile(dir, name string, content []byte) (hostsChange, error) {
	regDir := filepath.Join(dir, name)
	path := filepath.Join(regDir, hostsTomlName)
	backup := filepath.Join(regDir, hostsTomlBackup)
	ch := hostsChange{Path: path, Action: "wrote"}
	if err := os.MkdirAll(regDir, 0o755); err != nil {
		return ch, fmt.Errorf("creating the directory for %s: %w", path, err)
	}
	old, ours, err := readHostsFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return ch, err
	case ours && bytes.Equal(old, content):
		ch.Action = "unchanged"
		return ch, nil
	case !ours:
		if _, err := os.Lstat(backup); err == nil {
			return ch, fmt.Errorf("%s was not written by meshreg and %s already holds an earlier file: move one of them away (or merge them), then run again", path, backup)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return ch, fmt.Errorf("checking for a backup of %s: %w", path, err)
		}
		if err := os.Rename(path, backup); err != nil {
			return ch, fmt.Errorf("backing up %s to %s: %w", path, backup, err)
		}
		ch.Action, ch.Backup = "backed up", backup
	}
	if err := writeFileAtomic(path, content, 0o644); err != nil {
		return ch, err
	}
	return ch, nil
}

// readHostsFile reads a hosts.toml and says whether we wrote it.
func readHostsFile(path string) (content []byte, ours bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, false, err
		}
		return nil, false, fmt.Errorf("reading %s: %w", path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxHostsToml))
	if err != nil {
		return nil, false, fmt.Errorf("reading %s: %w", path, err)
	}
	return b, bytes.HasPrefix(b, []byte(hostsTomlMarker)), nil
}

// restoreHostsFile undoes writeHostsFile for dir/<name>: our hosts.toml is
// removed and the backup, if any, put back. A hosts.toml we did not write
// is left alone (with a backup next to it, that is an error: which one is
// right is the operator's call). The registry's directory is removed when
// nothing is left in it.
func restoreHostsFile(dir, name string) (hostsChange, error) {
	regDir := filepath.Join(dir, name)
	path := filepath.Join(regDir, hostsTomlName)
	backup := filepath.Join(regDir, hostsTomlBackup)
	ch := hostsChange{Path: path, Action: "nothing to restore for"}
	_, ours, err := readHostsFile(path)
	present := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return ch, err
	}
	_, berr := os.Lstat(backup)
	hasBackup := berr == nil
	if berr != nil && !errors.Is(berr, fs.ErrNotExist) {
		return ch, fmt.Errorf("checking for %s: %w", backup, berr)
	}
	switch {
	case present && !ours && hasBackup:
		return ch, fmt.Errorf("%s was not written by meshreg (changed since?) and %s is there too: keep the one you want by hand", path, backup)
	case present && !ours:
		ch.Action = "left alone (not written by meshreg)"
		return ch, nil
	case hasBackup:
		if err := os.Rename(backup, path); err != nil {
			return ch, fmt.Errorf("restoring %s from %s: %w", path, backup, err)
		}
		ch.Action, ch.Backup = "restored", backup
		return ch, nil
	case present:
		if err := os.Remove(path); err != nil {
			return ch, fmt.Errorf("removing %s: %w", path, err)
		}
		ch.Action = "removed"
	}
	if entries, err := os.ReadDir(regDir); err == nil && len(entries) == 0 {
		_ = os.Remove(regDir) // best effort: an empty directory is harmless
	}
	return ch, nil
}

// managedRegistries lists the registry directories under dir that hold a
// hosts.toml we wrote or a backup of ours: what --restore without
// --registries restores.
func managedRegistries(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		_, ours, err := readHostsFile(filepath.Join(dir, e.Name(), hostsTomlName))
		_, berr := os.Lstat(filepath.Join(dir, e.Name(), hostsTomlBackup))
		if (err == nil && ours) || berr == nil {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return names, nil
}

// writeFileAtomic writes data to path through a temp file in the same
// directory, synced before it is renamed over path, so a reader (containerd
// reads hosts.toml at every pull) sees the old file or the new one, whole.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
