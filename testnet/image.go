package testnet

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// BuildImage builds the node image (deploy/Dockerfile, FROM scratch) as
// tag with the Docker engine: a static linux binary of ./cmd/meshreg,
// stamped with its git version (GitStamp; the image is labelled with it
// too), and an empty data/ directory in a build context of their own. It
// needs no base image and no registry. The classic builder is used: the
// engines here have no buildx.
func BuildImage(ctx context.Context, tag string) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "meshreg-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.Mkdir(filepath.Join(dir, "data"), 0o755); err != nil {
		return err
	}
	stamp := GitStamp(ctx, root)
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w "+stamp.Ldflags(), "-o", filepath.Join(dir, "meshreg"), "./cmd/meshreg")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if err := run(build); err != nil {
		return fmt.Errorf("testnet: building a static meshreg for the image: %w", err)
	}
	args := []string{"build", "-q", "-f", filepath.Join(root, "deploy", "Dockerfile"), "-t", tag}
	if stamp.Version != "" {
		args = append(args, "--build-arg", "VERSION="+stamp.Version, "--build-arg", "COMMIT="+stamp.Commit)
	}
	docker := exec.CommandContext(ctx, "docker", append(args, dir)...)
	docker.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	if err := run(docker); err != nil {
		return fmt.Errorf("testnet: docker build of the node image %s: %w", tag, err)
	}
	return nil
}

func run(cmd *exec.Cmd) error {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w\n%s", cmd.Args, err, out.String())
	}
	return nil
}
