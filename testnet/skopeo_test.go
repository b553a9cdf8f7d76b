package testnet_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/testnet"
)

// TestSkopeoRoundTrip copies an image out of the registry into an OCI
// layout with skopeo, and back into a second repository, digests preserved,
// then lists and deletes with skopeo, as a skopeo user would.
func TestSkopeoRoundTrip(t *testing.T) {
	t.Parallel()
	n := testnet.StartNode(t, testnet.Options{})
	work := t.TempDir()
	crane := testnet.Runner{T: t, Path: testnet.Tool(t, "crane"), Dir: work}
	skopeo := testnet.Runner{T: t, Path: testnet.Tool(t, "skopeo"), Dir: work}
	repo, repo2 := testnet.UniqueRepo("e2e/skopeo"), testnet.UniqueRepo("e2e/skopeo-copy")
	src, dst := n.Host()+"/"+repo+":v1", n.Host()+"/"+repo2+":v1"

	// The source image, pushed with crane: two layers of random files.
	args := []string{"append", "--insecure", "--oci-empty-base", "-t", src}
	for i := range 2 {
		path := filepath.Join(work, fmt.Sprintf("layer%d.tar", i))
		if _, err := testnet.WriteLayerTar(path, fmt.Sprintf("layer%d", i), 3, 128<<10); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-f", path)
	}
	crane.Run(args...)
	want := craneDigest(crane, src)

	raw := skopeo.Run("--insecure-policy", "inspect", "--raw", "--tls-verify=false", "docker://"+src)
	if got := digest.FromBytes(raw); got != want {
		t.Fatalf("skopeo inspect --raw %s hashes to %s, want %s", src, got, want)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("manifest: %v\n%s", err, raw)
	}

	layout := filepath.Join(work, "layout")
	skopeo.Run("--insecure-policy", "copy", "--preserve-digests", "--src-tls-verify=false", "docker://"+src, "oci:"+layout+":v1")
	checkLayout(t, layout, want, m)

	skopeo.Run("--insecure-policy", "copy", "--preserve-digests", "--dest-tls-verify=false", "oci:"+layout+":v1", "docker://"+dst)
	if got := craneDigest(crane, dst); got != want {
		t.Errorf("after skopeo copy back, %s is %s, want %s", dst, got, want)
	}

	var tags struct{ Tags []string }
	if err := json.Unmarshal(skopeo.Run("--insecure-policy", "list-tags", "--tls-verify=false", "docker://"+n.Host()+"/"+repo2), &tags); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(tags.Tags, "v1") {
		t.Errorf("skopeo list-tags %s = %v, want v1", repo2, tags.Tags)
	}

	// skopeo delete removes the manifest the tag points at.
	skopeo.Run("--insecure-policy", "delete", "--tls-verify=false", "docker://"+dst)
	if res := skopeo.Try("--insecure-policy", "inspect", "--raw", "--tls-verify=false", "docker://"+dst); res.Err == nil {
		t.Errorf("after skopeo delete, %s still answers", dst)
	} else if !strings.Contains(string(res.Stderr), "manifest unknown") && !strings.Contains(string(res.Stderr), "MANIFEST_UNKNOWN") {
		t.Errorf("after skopeo delete, inspect fails without manifest unknown: %s", res.Stderr)
	}
	if got := craneDigest(crane, src); got != want {
		t.Errorf("deleting the copy changed the source: %s is %s, want %s", src, got, want)
	}
}
