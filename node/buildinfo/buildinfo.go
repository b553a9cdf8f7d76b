// Package buildinfo says which build of meshreg is running: its version,
// the commit it was built from and when, and the Go toolchain. The values
// come from -ldflags -X (set by `make build`, `make image` and the testnet
// image build), else from what the Go toolchain recorded in the binary
// (runtime/debug.ReadBuildInfo: the module version and the vcs.* settings),
// else "dev" and "unknown".
//
//	go build -ldflags "-X github.com/meshreg/meshreg/node/buildinfo.version=v1.2.3 \
//	  -X github.com/meshreg/meshreg/node/buildinfo.commit=$(git rev-parse HEAD) \
//	  -X github.com/meshreg/meshreg/node/buildinfo.date=$(date -u +%Y-%m-%dT%H:%M:%SZ)" ./cmd/meshreg
package buildinfo

import (
	"runtime"
	"runtime/debug"
	"strings"
)

// The -ldflags -X targets: the only package-level variables, set by the
// linker and never written at run time.
var (
	version string // e.g. `git describe --tags --always --dirty`
	commit  string // full commit hash
	date    string // build time, RFC 3339 UTC
)

// Package is the import path the -X flags name.
const Package = "github.com/meshreg/meshreg/node/buildinfo"

// Unknown stands for a commit or date the build did not record.
const Unknown = "unknown"

// Info describes one build.
type Info struct {
	Version string `json:"version"`
	Commit  string `json:"commit"`
	// Date is when the binary was built (from -X), or else the time of
	// the commit (vcs.time).
	Date string `json:"date"`
	// Modified is true when the build's work tree had uncommitted changes.
	Modified  bool   `json:"modified"`
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"` // GOOS/GOARCH
}

// Read returns the running binary's build information.
func Read() Info {
	bi, _ := debug.ReadBuildInfo()
	return resolve(bi, version, commit, date)
}

// resolve merges the -X values (which win when set) with what the
// toolchain recorded in bi (which may be nil).
func resolve(bi *debug.BuildInfo, xVersion, xCommit, xDate string) Info {
	info := Info{Version: "dev", Commit: Unknown, Date: Unknown, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi != nil {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			info.Version = v
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				info.Commit = s.Value
			case "vcs.time":
				info.Date = s.Value
			case "vcs.modified":
				info.Modified = s.Value == "true"
			}
		}
	}
	if xVersion != "" {
		info.Version = xVersion
		info.Modified = info.Modified || strings.HasSuffix(xVersion, "-dirty")
	}
	if xCommit != "" {
		info.Commit = xCommit
	}
	if xDate != "" {
		info.Date = xDate
	}
	return info
}

// ShortCommit is the commit cut to 12 hex digits, for one-line displays.
func (i Info) ShortCommit() string {
	if len(i.Commit) > 12 {
		return i.Commit[:12]
	}
	return i.Commit
}

// String is the one-line form `meshreg version` prints.
func (i Info) String() string {
	s := "meshreg " + i.Version + " (commit " + i.ShortCommit()
	if i.Modified {
		s += ", modified"
	}
	return s + ", built " + i.Date + ", " + i.GoVersion + ", " + i.Platform + ")"
}

// Ldflags returns the -ldflags -X arguments that stamp a build with v,
// commit c and date d (empty values are left out).
func Ldflags(v, c, d string) string {
	var parts []string
	for _, kv := range [][2]string{{"version", v}, {"commit", c}, {"date", d}} {
		if kv[1] != "" {
			parts = append(parts, "-X "+Package+"."+kv[0]+"="+kv[1])
		}
	}
	return strings.Join(parts, " ")
}
