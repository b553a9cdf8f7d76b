// Package kubernetes_test checks meshreg.yaml without a Kubernetes: the
// objects fit together, and the real binary accepts the container's
// command line and environment (`meshreg serve --check`). The rules are
// deploy/internal/kubecheck's, shared with the Helm chart's test.
package kubernetes_test

import (
	"os"
	"strings"
	"testing"

	"github.com/meshreg/meshreg/deploy/internal/kubecheck"
)

const (
	manifestFile = "meshreg.yaml"
	dockerfile   = "../Dockerfile"
)

func loadManifest(t *testing.T) kubecheck.Objects {
	t.Helper()
	b, err := os.ReadFile(manifestFile)
	if err != nil {
		t.Fatal(err)
	}
	m := kubecheck.Parse(t, manifestFile, b)
	if m.Namespace == nil || m.Namespace.Name != "meshreg" {
		t.Errorf("%s does not create the namespace meshreg", manifestFile)
	}
	if len(m.Secrets) != 0 {
		t.Errorf("%s holds Secrets: the cluster key is created by hand, never committed", manifestFile)
	}
	return m
}

func TestManifestObjectsFit(t *testing.T) {
	m := loadManifest(t)
	kubecheck.CheckFit(t, m, kubecheck.Want{
		Name: "meshreg", Namespace: "meshreg",
		Image: "meshreg:dev", PullPolicy: "IfNotPresent",
		DataHostPath: "/var/lib/meshreg",
	})
	if len(m.DaemonSet.Template.Spec.InitContainers) != 0 {
		t.Error("the DaemonSet has init containers")
	}
}

func TestManifestAgreesWithDockerfile(t *testing.T) {
	kubecheck.CheckDockerfile(t, loadManifest(t), dockerfile)
}

func TestBinaryAcceptsManifest(t *testing.T) {
	m := loadManifest(t)
	got := kubecheck.CheckServe(t, m, kubecheck.Serve{
		Bin:        kubecheck.Binary(t),
		Dockerfile: dockerfile,
		Files:      map[string]string{"MESHREG_CLUSTER_KEY": kubecheck.TestKey},
	})
	if got["bootstrap-expect"] != 3.0 {
		t.Errorf("bootstrap-expect = %v, want 3", got["bootstrap-expect"])
	}
	if !strings.Contains(m.Raw, "kubectl -n meshreg create secret generic meshreg-cluster-key") {
		t.Error("the manifest does not say how to create the cluster-key Secret")
	}
}
