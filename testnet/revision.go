package testnet

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ErrRevisionMissing is returned when a git revision the tests need is
// not in the clone (a shallow CI clone, typically).
var ErrRevisionMissing = errors.New("git revision not in this clone")

// BuildRevisionImage builds the node image of git revision rev of the
// repository holding the module, as tag: the revision's tree is exported
// (git archive) into a temp dir, removed afterwards, and built and
// stamped as BuildImage builds the working tree. It fails with
// ErrRevisionMissing, saying how to fetch it, when the clone lacks rev.
func BuildRevisionImage(ctx context.Context, rev, tag string) error {
	dir, err := os.MkdirTemp("", "meshreg-rev-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := ExportRevision(ctx, rev, dir); err != nil {
		return err
	}
	if err := BuildImageFrom(ctx, dir, tag, revisionStamp(ctx, rev)); err != nil {
		return fmt.Errorf("testnet: the image of revision %s: %w", rev, err)
	}
	return nil
}

// revisionStamp stamps a build of revision rev as GitStamp stamps the
// working tree's: its git describe and commit, the date now. (A revision
// older than package buildinfo ignores the stamp and says "dev".)
func revisionStamp(ctx context.Context, rev string) Stamp {
	root, err := ModuleRoot()
	if err != nil {
		return Stamp{}
	}
	out, err := exec.CommandContext(ctx, "git", "-C", root, "describe", "--tags", "--always", rev).Output()
	if err != nil {
		return Stamp{}
	}
	return Stamp{Version: strings.TrimSpace(string(out)), Commit: rev, Date: time.Now().UTC().Format(time.RFC3339)}
}

// ExportRevision writes the tree of git revision rev of the repository
// holding the module into dir (which must exist).
func ExportRevision(ctx context.Context, rev, dir string) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	if err := exec.CommandContext(ctx, "git", "-C", root, "cat-file", "-e", rev+"^{commit}").Run(); err != nil {
		return fmt.Errorf("testnet: %w: %s is not a commit of the clone in %s (a shallow clone?); fetch it with `git fetch --unshallow` or `git fetch origin %s` (.ci/run does)", ErrRevisionMissing, rev, root, rev)
	}
	cmd := exec.CommandContext(ctx, "git", "-C", root, "archive", "--format=tar", rev)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testnet: git archive %s: %w", rev, err)
	}
	xerr := untar(out, dir)
	_, _ = io.Copy(io.Discard, out) // let git finish writing if untar stopped early
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("testnet: git archive %s: %w: %s", rev, err, strings.TrimSpace(stderr.String()))
	}
	if xerr != nil {
		return fmt.Errorf("testnet: extracting git archive %s into %s: %w", rev, dir, xerr)
	}
	return nil
}

// untar extracts the directories, regular files and symlinks of a tar
// stream into dir, refusing any name that leaves it.
func untar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if !filepath.IsLocal(h.Name) {
			if h.Typeflag == tar.TypeXGlobalHeader {
				continue
			}
			return fmt.Errorf("entry %q leaves the directory", h.Name)
		}
		path := filepath.Join(dir, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(path, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o755|0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, path); err != nil {
				return err
			}
		case tar.TypeXGlobalHeader:
		default:
			return fmt.Errorf("entry %q: unsupported type %c", h.Name, h.Typeflag)
		}
	}
}
