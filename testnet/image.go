package testnet

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// BuildImage builds the node image of the working tree (the module the
// tests run in) as tag, stamped with its git version (GitStamp); see
// BuildImageFrom.
func BuildImage(ctx context.Context, tag string) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	return BuildImageFrom(ctx, root, tag, GitStamp(ctx, root))
}

// BuildImageFrom builds the node image (src/deploy/Dockerfile, FROM
// scratch) of the meshreg source tree at src as tag with the Docker
// engine: a static linux binary of src/cmd/meshreg, stamped with stamp
// (the image is labelled with it too), and an empty data/ directory in a
// build context of their own. It needs no base image and no registry. The
// classic builder is used: the engines here have no buildx.
func BuildImageFrom(ctx context.Context, src, tag string, stamp Stamp) error {
	dir, err := os.MkdirTemp("", "meshreg-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.Mkdir(filepath.Join(dir, "data"), 0o755); err != nil {
		return err
	}
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w "+stamp.Ldflags(), "-o", filepath.Join(dir, "meshreg"), "./cmd/meshreg")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if err := run(build); err != nil {
		return fmt.Errorf("testnet: building a static meshreg of %s for the image: %w", src, err)
	}
	args := []string{"build", "-q", "-f", filepath.Join(src, "deploy", "Dockerfile"), "-t", tag}
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
