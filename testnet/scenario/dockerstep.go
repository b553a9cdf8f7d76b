package scenario

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/testnet"
)

var pushDigest = regexp.MustCompile(`digest: (sha256:[0-9a-f]{64})`)

// dockerStep is the real Docker engine as a client: it builds a tiny
// image FROM scratch holding a random file, pushes it to from through its
// port published on 127.0.0.1 (trusted without TLS), removes it locally,
// pulls it back through to's published port and compares the image id and
// digest. The push joins the acknowledged pushes, so the final checks
// cover it on every node too.
func (r *run) dockerStep(ctx context.Context, from, to *node) (err error) {
	start := time.Now()
	step := DockerStep{From: from.spec.Name, To: to.spec.Name}
	defer func() {
		step.Seconds = time.Since(start).Seconds()
		step.OK = err == nil
		if err != nil {
			step.Error = err.Error()
		}
		r.repMu.Lock()
		r.rep.Docker = append(r.rep.Docker, step)
		r.repMu.Unlock()
	}()
	dir, err := os.MkdirTemp("", "meshreg-testnet-docker-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "payload"), testnet.RandomBytes(256<<10), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY payload /payload\n"), 0o644); err != nil {
		return err
	}
	repo := "testnet/docker-" + testnet.RandomHex(4)
	hostOf := func(n *node) string { return strings.TrimPrefix(n.c.PublishedURL(), "http://") }
	pushRef := hostOf(from) + "/" + repo + ":v1"
	pullRef := hostOf(to) + "/" + repo + ":v1"
	cli := func(args ...string) (string, error) {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		// The engines here have no buildx: the classic builder.
		return r.d.RunCLI(cctx, []string{"DOCKER_BUILDKIT=0"}, args...)
	}
	defer func() { cli("rmi", "-f", pushRef, pullRef) }() // best effort: the images of this step only
	if _, err := cli("build", "-q", "-t", pushRef, dir); err != nil {
		return err
	}
	built, err := cli("image", "inspect", "-f", "{{.Id}}", pushRef)
	if err != nil {
		return err
	}
	step.ImageID = built
	out, err := cli("push", pushRef)
	if err != nil {
		return fmt.Errorf("docker push to %s: %w", from.spec.Name, err)
	}
	m := pushDigest.FindStringSubmatch(out)
	if m == nil {
		return fmt.Errorf("docker push printed no digest: %s", out)
	}
	step.Digest = m[1]
	if err := r.recordDockerPush(ctx, from, repo, digest.Digest(m[1])); err != nil {
		return err
	}
	if _, err := cli("rmi", "-f", pushRef); err != nil {
		return err
	}
	cli("rmi", "-f", built) // gone already, unless another tag holds it
	// The tag reaches to within the replication delay: a few tries.
	var pullErr error
	for range 5 {
		if _, pullErr = cli("pull", pullRef); pullErr == nil {
			break
		}
		sleep(ctx, 2*time.Second)
	}
	if pullErr != nil {
		return fmt.Errorf("docker pull through %s: %w", to.spec.Name, pullErr)
	}
	pulled, err := cli("image", "inspect", "-f", "{{.Id}} {{json .RepoDigests}}", pullRef)
	if err != nil {
		return err
	}
	id, digests, _ := strings.Cut(pulled, " ")
	if id != built {
		return fmt.Errorf("image id after pull through %s is %s, built %s", to.spec.Name, id, built)
	}
	if !strings.Contains(digests, step.Digest) {
		return fmt.Errorf("pulled image's RepoDigests %s lack the pushed %s", digests, step.Digest)
	}
	return nil
}

// recordDockerPush reads the manifest Docker pushed, so the final checks
// verify it and its blobs on every node.
func (r *run) recordDockerPush(ctx context.Context, n *node, repo string, d digest.Digest) error {
	body, _, _, err := testnet.NewClient(n.c.URL()).GetManifest(ctx, repo, "v1")
	if err != nil {
		return fmt.Errorf("reading the manifest docker pushed: %w", err)
	}
	var m ocispec.Manifest
	if err := jsonUnmarshal(body, &m); err != nil {
		return err
	}
	p := pushed{Repo: repo, Tag: "v1", Manifest: d, Blobs: append([]ocispec.Descriptor{m.Config}, m.Layers...),
		Bytes: int64(len(body)), Node: n.spec.Name, At: time.Now()}
	for _, b := range p.Blobs {
		p.Bytes += b.Size
	}
	r.hist.push(p, nil)
	return nil
}
