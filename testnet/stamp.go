package testnet

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshreg/meshreg/node/buildinfo"
)

// Stamp is what a build is stamped with (see package buildinfo).
type Stamp struct {
	Version, Commit, Date string
}

// GitStamp stamps a build of the module at root as `make build` does: the
// version from `git describe --tags --always --dirty`, the commit from
// `git rev-parse HEAD`, the date now. Outside a git work tree (or without
// git) it is empty and the build says "dev".
func GitStamp(ctx context.Context, root string) Stamp {
	git := func(args ...string) string {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(out))
	}
	v := git("describe", "--tags", "--always", "--dirty")
	if v == "" {
		return Stamp{}
	}
	return Stamp{Version: v, Commit: git("rev-parse", "HEAD"), Date: time.Now().UTC().Format(time.RFC3339)}
}

// Ldflags are the -X flags that set the stamp ("" for an empty one).
func (s Stamp) Ldflags() string { return buildinfo.Ldflags(s.Version, s.Commit, s.Date) }

// BuildMeshregWith builds ./cmd/meshreg of the module at root into outDir
// with extra linker flags (such as Stamp.Ldflags) and returns the binary's
// path.
func BuildMeshregWith(ctx context.Context, root, outDir, ldflags string) (string, error) {
	out := filepath.Join(outDir, "meshreg")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", ldflags, "-o", out, "./cmd/meshreg")
	cmd.Dir = root
	if err := run(cmd); err != nil {
		return "", fmt.Errorf("testnet: go build ./cmd/meshreg (in %s): %w", root, err)
	}
	return out, nil
}
