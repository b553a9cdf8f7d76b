// Package helm_test lints and renders the chart in meshreg/ with the
// pinned helm (`make tools` installs it into .tools/bin; make test puts it
// first in PATH) and checks the rendered objects against the rules of the
// plain manifest (deploy/internal/kubecheck): selectors, ports, probes,
// volumes, and the container's command line and environment through the
// real binary's `serve --check`.
package helm_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshreg/meshreg/deploy/internal/kubecheck"
)

const (
	chartDir   = "meshreg"
	everything = "testdata/everything.yaml"
	dockerfile = "../Dockerfile"
	// plainManifest is the DaemonSet without Helm.
	plainManifest = "../kubernetes/meshreg.yaml"
	// htpasswd is user admin, password secret.
	htpasswd   = "admin:$2a$05$ol.usOOY2SkthFZAr/MOjO7/lgIe2mWVklw5Kk9tQzDfMdFdoN8ZC\n"
	rateLimits = "clients: {requests-per-second: 50, burst: 100}\n"
	policy     = "rules:\n  - users: [admin]\n    repos: [\"**\"]\n    allow: [pull, push, delete]\n  - users: [admin]\n    allow: [admin]\n"
)

// helmBin is the helm program: from PATH, else from the repository's
// .tools/bin. A missing helm fails the test: a skipped chart test would
// hide a broken chart.
func helmBin(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	p, err := filepath.Abs("../../.tools/bin/helm")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatal("helm not found in PATH nor in .tools/bin: run `make tools` (make test puts .tools/bin first in PATH)")
	}
	return p
}

// helm runs helm with args, with its config, cache and data in a temp
// dir, and returns stdout and stderr with the error.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, helmBin(t), args...)
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// render runs helm template for release in namespace with extra args
// (-f FILE, --set K=V) and parses the output.
func render(t *testing.T, release, namespace string, extra ...string) kubecheck.Objects {
	t.Helper()
	args := append([]string{"template", release, chartDir, "--namespace", namespace}, extra...)
	out, err := helm(t, args...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return kubecheck.Parse(t, strings.TrimSpace("helm template "+release+" "+strings.Join(extra, " ")), []byte(out))
}

func TestHelmLint(t *testing.T) {
	for _, values := range [][]string{nil, {"-f", everything}} {
		args := append([]string{"lint", "--strict", chartDir}, values...)
		if out, err := helm(t, args...); err != nil {
			t.Errorf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestChart renders the chart and checks the objects, building meshreg
// once for the three renders.
func TestChart(t *testing.T) {
	bin := kubecheck.Binary(t)
	t.Run("defaults", func(t *testing.T) { chartDefaults(t, bin) })
	t.Run("everything set", func(t *testing.T) { chartEverythingSet(t, bin) })
	t.Run("pod network", func(t *testing.T) { chartPodNetwork(t, bin) })
	t.Run("defaults equal the plain manifest", func(t *testing.T) { chartEqualsManifest(t, bin) })
}

// chartEqualsManifest: installed as the README says (release meshreg in
// the namespace meshreg), the chart runs the node as the plain manifest
// does: the same effective configuration, ports, probes, volumes, update
// strategy and resources.
func chartEqualsManifest(t *testing.T, bin string) {
	b, err := os.ReadFile(plainManifest)
	if err != nil {
		t.Fatal(err)
	}
	plain := kubecheck.Parse(t, plainManifest, b)
	chart := render(t, "meshreg", "meshreg")
	serve := kubecheck.Serve{Bin: bin, Dockerfile: dockerfile, Files: map[string]string{"MESHREG_CLUSTER_KEY": kubecheck.TestKey}}
	pc, cc := kubecheck.CheckServe(t, plain, serve), kubecheck.CheckServe(t, chart, serve)
	delete(pc, "cluster-key") // a temp file each
	delete(cc, "cluster-key")
	for k := range pc {
		if _, ok := cc[k]; !ok {
			cc[k] = nil
		}
	}
	for k, v := range cc {
		if !reflect.DeepEqual(pc[k], v) {
			t.Errorf("serve --check: %s is %v with the plain manifest, %v with the chart", k, pc[k], v)
		}
	}
	pe, ce := plain.Env(t, plain.Container(t)), chart.Env(t, chart.Container(t))
	if pe["MESHREG_ADVERTISE"] != ce["MESHREG_ADVERTISE"] {
		t.Errorf("MESHREG_ADVERTISE: plain manifest %q, chart %q", pe["MESHREG_ADVERTISE"], ce["MESHREG_ADVERTISE"])
	}
	ps, cs := plain.DaemonSet, chart.DaemonSet
	pcon, ccon := plain.Container(t), chart.Container(t)
	for _, d := range []struct {
		what         string
		plain, chart any
	}{
		{"updateStrategy", ps.UpdateStrategy, cs.UpdateStrategy},
		{"terminationGracePeriodSeconds", ps.Template.Spec.TerminationGracePeriodSeconds, cs.Template.Spec.TerminationGracePeriodSeconds},
		{"tolerations", ps.Template.Spec.Tolerations, cs.Template.Spec.Tolerations},
		{"ports", pcon.Ports, ccon.Ports},
		{"readinessProbe", pcon.ReadinessProbe.HTTPGet.Path + " " + pcon.ReadinessProbe.HTTPGet.Port, ccon.ReadinessProbe.HTTPGet.Path + " " + ccon.ReadinessProbe.HTTPGet.Port},
		{"livenessProbe", pcon.LivenessProbe.HTTPGet.Path + " " + pcon.LivenessProbe.HTTPGet.Port, ccon.LivenessProbe.HTTPGet.Path + " " + ccon.LivenessProbe.HTTPGet.Port},
		{"resources", pcon.Resources, ccon.Resources},
		{"securityContext", pcon.SecurityContext, ccon.SecurityContext},
		{"data volume", plain.Volume("data"), chart.Volume("data")},
		{"image", pcon.Image + " " + pcon.ImagePullPolicy, ccon.Image + " " + ccon.ImagePullPolicy},
	} {
		if !reflect.DeepEqual(d.plain, d.chart) {
			t.Errorf("%s: plain manifest %+v, chart %+v", d.what, d.plain, d.chart)
		}
	}
	if pv, cv := plain.Volume("cluster-key"), chart.Volume("cluster-key"); pv == nil || cv == nil || pv.Secret.SecretName != cv.Secret.SecretName {
		t.Errorf("cluster key Secret: plain manifest %+v, chart %+v", pv, cv)
	}
}

// chartDefaults: the default values give the plain manifest's DaemonSet.
func chartDefaults(t *testing.T, bin string) {
	m := render(t, "meshreg", "meshreg")
	kubecheck.CheckFit(t, m, kubecheck.Want{
		Name: "meshreg", Namespace: "meshreg",
		Image: "meshreg:dev", PullPolicy: "IfNotPresent",
		DataHostPath: "/var/lib/meshreg",
	})
	kubecheck.CheckDockerfile(t, m, dockerfile)
	got := kubecheck.CheckServe(t, m, kubecheck.Serve{
		Bin:        bin,
		Dockerfile: dockerfile,
		Files:      map[string]string{"MESHREG_CLUSTER_KEY": kubecheck.TestKey},
	})
	want := map[string]any{
		"bootstrap-expect": 3.0, "voters": 3.0, "replicas": 2.0,
		"log-format": "json", "log-level": "info", "shutdown-timeout": "30s",
		"join-token": "", "region": "", "zone": "",
	}
	checkValues(t, got, want)
	if j, _ := got["join"].([]any); len(j) != 1 || j[0] != "http://meshreg.meshreg.svc.cluster.local:5000" {
		t.Errorf("join = %v", got["join"])
	}

	spec := m.DaemonSet.Template.Spec
	if m.Namespace != nil || len(m.Secrets) != 0 || len(spec.InitContainers) != 0 {
		t.Errorf("defaults render a Namespace (%v), Secrets (%d) or init containers (%d)", m.Namespace, len(m.Secrets), len(spec.InitContainers))
	}
	if v := m.Volume("cluster-key"); v == nil || v.Secret == nil || v.Secret.SecretName != "meshreg-cluster-key" {
		t.Errorf("the cluster key is not the Secret meshreg-cluster-key, as in the plain manifest: %+v", v)
	}
	values, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(values), "kubectl -n meshreg create secret generic meshreg-cluster-key --from-file=swarm.key") {
		t.Error("values.yaml does not say how to create the cluster key Secret")
	}
	if spec.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q, want system-node-critical", spec.PriorityClassName)
	}
	if len(spec.Tolerations) != 1 || spec.Tolerations[0]["operator"] != "Exists" || len(spec.Tolerations[0]) != 1 {
		t.Errorf("tolerations %v, want every taint tolerated", spec.Tolerations)
	}
	for _, name := range []string{"MESHREG_TLS_CERT", "MESHREG_JOIN_TLS_CA", "MESHREG_AUTH_HTPASSWD", "MESHREG_AUTH_POLICY", "MESHREG_RATE_LIMITS", "MESHREG_MAX_DISK", "MESHREG_UPSTREAM", "MESHREG_JOIN_TOKEN"} {
		if m.Container(t).EnvVar(name) != nil {
			t.Errorf("defaults set %s: the values that are not set must not be rendered", name)
		}
	}
}

// chartEverythingSet: every value reaches the objects.
func chartEverythingSet(t *testing.T, bin string) {
	m := render(t, "edge", "registry", "-f", everything)
	kubecheck.CheckFit(t, m, kubecheck.Want{
		Name: "edge-meshreg", Namespace: "registry",
		Image: "registry.example.com/meshreg:v1.2.3", PullPolicy: "Always",
		DataHostPath: "/mnt/fast/meshreg",
	})
	kubecheck.CheckDockerfile(t, m, dockerfile)
	cert, key := selfSigned(t)
	got := kubecheck.CheckServe(t, m, kubecheck.Serve{
		Bin:        bin,
		Dockerfile: dockerfile,
		Files: map[string]string{
			"MESHREG_CLUSTER_KEY":   kubecheck.TestKey,
			"MESHREG_TLS_CERT":      cert,
			"MESHREG_TLS_KEY":       key,
			"MESHREG_AUTH_HTPASSWD": htpasswd,
			"MESHREG_AUTH_POLICY":   policy,
			"MESHREG_RATE_LIMITS":   rateLimits,
			"MESHREG_JOIN_TLS_CA":   cert,
		},
	})
	checkValues(t, got, map[string]any{
		"bootstrap-expect": 5.0, "voters": 5.0, "replicas": 3.0,
		"log-format": "text", "log-level": "debug", "shutdown-timeout": "1m0s",
		"join-token": "(set)", "region": "eu-west", "zone": "eu-west-1a",
		"min-free-disk": "1GiB", "scrub-rate": "8MiB", "repair-interval": "2m0s",
	})
	if j, _ := got["join"].([]any); len(j) != 1 || j[0] != "https://edge-meshreg.registry.svc.k8s.example:5000" {
		t.Errorf("join = %v, want https (tls is set) to the Service in the cluster domain", got["join"])
	}
	// Flags of later releases: once the binary has them, --check shows
	// what the chart set.
	for k, v := range map[string]any{"max-disk": "200GiB", "upstream": []any{"docker.io=https://registry-1.docker.io", "ghcr.io=https://ghcr.io"}} {
		if g, ok := got[k]; ok && !equalJSON(g, v) {
			t.Errorf("%s = %v, want %v", k, g, v)
		}
	}
	c := m.Container(t)
	env := m.Env(t, c)
	for k, v := range map[string]string{
		"MESHREG_MAX_DISK": "200GiB",
		"MESHREG_UPSTREAM": "docker.io=https://registry-1.docker.io,ghcr.io=https://ghcr.io",
		"MESHREG_TLS_CERT": "/etc/meshreg/tls/tls.crt", "MESHREG_TLS_KEY": "/etc/meshreg/tls/tls.key",
		"MESHREG_AUTH_HTPASSWD": "/etc/meshreg/auth/htpasswd", "MESHREG_AUTH_POLICY": "/etc/meshreg/policy/policy.yaml",
		"MESHREG_RATE_LIMITS": "/etc/meshreg/rate-limits/rate-limits.yaml", "MESHREG_JOIN_TLS_CA": "/etc/meshreg/tls/ca.crt",
	} {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
	// Each file from the Secret or ConfigMap the values name; mounted
	// as a directory (kubecheck.CheckServe refuses a subPath), so that
	// kubelet's updates reach the node, which re-reads them.
	for vol, want := range map[string]struct {
		source string
		items  []string
	}{
		"cluster-key": {"Secret edge-meshreg-cluster-key", []string{"key"}},
		"tls":         {"Secret meshreg-tls", []string{"tls.crt", "tls.key", "ca.crt"}},
		"auth":        {"Secret meshreg-auth", []string{"users"}},
		"policy":      {"ConfigMap meshreg-policy", []string{"access.yaml"}},
		"rate-limits": {"ConfigMap meshreg-limits", []string{"limits.yaml"}},
	} {
		v := m.Volume(vol)
		if v == nil {
			t.Errorf("no volume %s", vol)
			continue
		}
		source, items := kubecheck.VolumeSource(v)
		var keys []string
		for _, it := range items {
			keys = append(keys, it.Key)
		}
		if source != want.source || !slices.Equal(keys, want.items) {
			t.Errorf("volume %s mounts the keys %v of the %s, want %v of the %s", vol, keys, source, want.items, want.source)
		}
	}
	if s, ok := m.Secrets["edge-meshreg-cluster-key"]; !ok || s.Data["key"] != kubecheck.TestKey {
		t.Errorf("the chart did not create the cluster key Secret from clusterKey.value: %+v", m.Secrets)
	}
	if m.Volume("cluster-key").Secret.SecretName != "edge-meshreg-cluster-key" {
		t.Error("the pods do not mount the cluster key Secret the chart created")
	}

	spec := m.DaemonSet.Template.Spec
	if spec.PriorityClassName != "registry-critical" || spec.NodeSelector["node-role.example/registry"] != "true" ||
		len(spec.Tolerations) != 1 || spec.Tolerations[0]["key"] != "dedicated" {
		t.Errorf("priorityClassName %q, nodeSelector %v, tolerations %v: not the values'", spec.PriorityClassName, spec.NodeSelector, spec.Tolerations)
	}
	if m.DaemonSet.Template.Metadata.Labels["team"] != "platform" {
		t.Errorf("pod labels %v lack podLabels", m.DaemonSet.Template.Metadata.Labels)
	}
	if got := c.Resources.Limits["memory"]; got != "2Gi" {
		t.Errorf("memory limit %q, want the values' 2Gi", got)
	}

	// The containerd mirror: the node's image writes hosts.toml files
	// into the host's containerd config dir.
	if len(spec.InitContainers) != 1 {
		t.Fatalf("%d init containers, want the containerd mirror's", len(spec.InitContainers))
	}
	ic := spec.InitContainers[0]
	if ic.Image != c.Image || len(ic.Command) != 0 {
		t.Errorf("the init container runs %v %s, want the node's image %s and entrypoint", ic.Command, ic.Image, c.Image)
	}
	want := []string{"mirror", "containerd", "--hosts-dir", "/etc/containerd/certs.d", "--node", "https://127.0.0.1:5000", "--registries", "docker.io", "--registries", "ghcr.io"}
	if !slices.Equal(ic.Args, want) {
		t.Errorf("init container args %v, want %v", ic.Args, want)
	}
	// The real binary takes these arguments and would write what
	// containerd needs (--dry-run: it prints the files, writing nothing).
	out, err := exec.Command(bin, append(slices.Clone(ic.Args), "--dry-run")...).CombinedOutput()
	if err != nil {
		t.Fatalf("meshreg %s --dry-run: %v\n%s", strings.Join(ic.Args, " "), err, out)
	}
	for _, line := range []string{
		"# /etc/containerd/certs.d/docker.io/hosts.toml", `server = "https://registry-1.docker.io"`,
		"# /etc/containerd/certs.d/ghcr.io/hosts.toml", `server = "https://ghcr.io"`,
		`[host."https://127.0.0.1:5000"]`, `capabilities = ["pull", "resolve"]`,
	} {
		if !strings.Contains(string(out), line) {
			t.Errorf("meshreg %s --dry-run does not print %q:\n%s", strings.Join(ic.Args, " "), line, out)
		}
	}
	if v := m.Volume("containerd-config"); v == nil || v.HostPath == nil || v.HostPath.Path != "/etc/containerd/certs.d" || ic.MountOf("containerd-config") != "/etc/containerd/certs.d" {
		t.Errorf("the init container does not mount the host's /etc/containerd/certs.d: %+v", v)
	}
}

// chartPodNetwork: the locality from the pod's labels (KEP-4742), the
// pod's IP advertised when the p2p port is not a hostPort, and a join token
// from the operator's Secret.
func chartPodNetwork(t *testing.T, bin string) {
	m := render(t, "meshreg", "meshreg", "--set", "topologyFromPodLabels=true", "--set", "p2pHostPort=false",
		"--set", "joinToken.existingSecret=operators-token")
	kubecheck.CheckFit(t, m, kubecheck.Want{
		Name: "meshreg", Namespace: "meshreg",
		Image: "meshreg:dev", PullPolicy: "IfNotPresent",
		DataHostPath: "/var/lib/meshreg",
	})
	got := kubecheck.CheckServe(t, m, kubecheck.Serve{
		Bin:        bin,
		Dockerfile: dockerfile,
		Files:      map[string]string{"MESHREG_CLUSTER_KEY": kubecheck.TestKey},
	})
	checkValues(t, got, map[string]any{"region": kubecheck.Region, "zone": kubecheck.Zone, "join-token": "(set)"})
	if e := m.Container(t).EnvVar("MESHREG_JOIN_TOKEN"); e == nil || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil ||
		e.ValueFrom.SecretKeyRef.Name != "operators-token" || e.ValueFrom.SecretKeyRef.Key != "token" {
		t.Errorf("MESHREG_JOIN_TOKEN %+v, want the key token of the Secret operators-token", e)
	}
	if len(m.Secrets) != 0 {
		t.Errorf("the chart created Secrets %v for an existing one", m.Secrets)
	}
	if env := m.Env(t, m.Container(t)); env["MESHREG_ADVERTISE"] != kubecheck.PodIP {
		t.Errorf("MESHREG_ADVERTISE = %q, want the pod's IP", env["MESHREG_ADVERTISE"])
	}
}

// TestChartRefusesBadValues: mistakes fail at install time, naming what
// to fix, rather than starting pods that cannot work.
func TestChartRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  []string
		want string
	}{
		{"unknown key", []string{"bootstrap_expect=3"}, "bootstrap_expect"},
		{"no cluster key", []string{"clusterKey.existingSecret="}, "clusterKey.existingSecret"},
		{"two localities", []string{"region=eu", "topologyFromPodLabels=true"}, "exclude each other"},
		{"log format", []string{"logFormat=yaml"}, "logFormat"},
		{"upstream without URL", []string{"upstreams[0]=docker.io"}, "upstreams"},
		{"relative host path", []string{"data.hostPath=data"}, "hostPath"},
		{"mirrored registry with a path", []string{"containerdMirror.registries[0]=docker.io/library"}, "registries"},
		{"policy without users", []string{"auth.policyConfigMap=meshreg-policy"}, "auth.policyConfigMap needs auth.existingSecret"},
		{"join CA without TLS", []string{"tls.caKey=ca.crt"}, "tls.caKey needs tls.existingSecret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"template", "meshreg", chartDir, "--namespace", "meshreg"}
			for _, s := range tc.set {
				args = append(args, "--set", s)
			}
			out, err := helm(t, args...)
			if err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("helm %s: %v, want an error naming %q\n%s", strings.Join(args, " "), err, tc.want, out)
			}
		})
	}
}

func checkValues(t *testing.T, got, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if !equalJSON(got[k], v) {
			t.Errorf("serve --check: %s = %#v, want %#v", k, got[k], v)
		}
	}
}

func equalJSON(a, b any) bool {
	as, aok := a.([]any)
	bs, bok := b.([]any)
	if aok && bok {
		return slices.EqualFunc(as, bs, func(x, y any) bool { return x == y })
	}
	if a == nil && b == "" {
		return true
	}
	return a == b
}

// selfSigned is a certificate and key for 127.0.0.1, in PEM.
func selfSigned(t *testing.T) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "meshreg"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
}
