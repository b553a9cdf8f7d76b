// Package kubernetes_test checks meshreg.yaml without a Kubernetes: the
// objects fit together, and the real binary accepts the container's
// command line and environment (`meshreg serve --check`).
package kubernetes_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

const (
	manifestFile = "meshreg.yaml"
	dockerfile   = "../Dockerfile"
	joinURL      = "http://meshreg.meshreg.svc.cluster.local:5000"
	// hostIPStandIn is what the tests give an env var whose value comes
	// from the downward API's status.hostIP.
	hostIPStandIn = "192.0.2.10"
)

type object struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string            `yaml:"name"`
		Namespace string            `yaml:"namespace"`
		Labels    map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec yaml.Node `yaml:"spec"`
}

type serviceSpec struct {
	ClusterIP                string            `yaml:"clusterIP"`
	PublishNotReadyAddresses bool              `yaml:"publishNotReadyAddresses"`
	Selector                 map[string]string `yaml:"selector"`
	Ports                    []struct {
		Name       string `yaml:"name"`
		Port       int    `yaml:"port"`
		TargetPort string `yaml:"targetPort"`
		Protocol   string `yaml:"protocol"`
	} `yaml:"ports"`
}

type probe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
}

type container struct {
	Name            string   `yaml:"name"`
	Image           string   `yaml:"image"`
	ImagePullPolicy string   `yaml:"imagePullPolicy"`
	Command         []string `yaml:"command"`
	Args            []string `yaml:"args"`
	Env             []struct {
		Name      string     `yaml:"name"`
		Value     *string    `yaml:"value"`
		ValueFrom *valueFrom `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
		HostPort      int    `yaml:"hostPort"`
		Protocol      string `yaml:"protocol"`
	} `yaml:"ports"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type daemonSetSpec struct {
	Selector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	} `yaml:"selector"`
	UpdateStrategy struct {
		Type          string `yaml:"type"`
		RollingUpdate struct {
			MaxUnavailable int `yaml:"maxUnavailable"`
		} `yaml:"rollingUpdate"`
	} `yaml:"updateStrategy"`
	Template struct {
		Metadata struct {
			Labels map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Spec struct {
			TerminationGracePeriodSeconds int         `yaml:"terminationGracePeriodSeconds"`
			InitContainers                []container `yaml:"initContainers"`
			Containers                    []container `yaml:"containers"`
			Volumes                       []struct {
				Name     string `yaml:"name"`
				HostPath *struct {
					Path string `yaml:"path"`
					Type string `yaml:"type"`
				} `yaml:"hostPath"`
				Secret *struct {
					SecretName string `yaml:"secretName"`
					Optional   bool   `yaml:"optional"`
				} `yaml:"secret"`
			} `yaml:"volumes"`
		} `yaml:"spec"`
	} `yaml:"template"`
}

type manifest struct {
	raw       string
	namespace object
	service   serviceSpec
	ds        daemonSetSpec
}

func loadManifest(t *testing.T) manifest {
	t.Helper()
	b, err := os.ReadFile(manifestFile)
	if err != nil {
		t.Fatal(err)
	}
	m := manifest{raw: string(b)}
	want := map[string]string{"Namespace": "v1", "Service": "v1", "DaemonSet": "apps/v1"}
	seen := map[string]bool{}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	for i := 0; ; i++ {
		var o object
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		if o.Kind == "" {
			t.Fatalf("document %d has no kind", i)
		}
		if want[o.Kind] != o.APIVersion {
			t.Errorf("%s: apiVersion %q, want %q", o.Kind, o.APIVersion, want[o.Kind])
		}
		if seen[o.Kind] {
			t.Errorf("two %s objects", o.Kind)
		}
		seen[o.Kind] = true
		if o.Metadata.Name != "meshreg" {
			t.Errorf("%s is named %q, want meshreg", o.Kind, o.Metadata.Name)
		}
		var spec any
		switch o.Kind {
		case "Namespace":
			m.namespace = o
			continue
		case "Service":
			spec = &m.service
		case "DaemonSet":
			spec = &m.ds
		}
		if o.Metadata.Namespace != "meshreg" {
			t.Errorf("%s is in namespace %q, want meshreg", o.Kind, o.Metadata.Namespace)
		}
		if err := decodeSpec(&o.Spec, spec); err != nil {
			t.Fatalf("%s spec: %v", o.Kind, err)
		}
	}
	for k := range want {
		if !seen[k] {
			t.Fatalf("no %s in %s", k, manifestFile)
		}
	}
	return m
}

// decodeSpec decodes a spec into the types above, which name only the
// fields the test checks (others are ignored, not rejected).
func decodeSpec(n *yaml.Node, v any) error {
	return n.Decode(v)
}

func (m manifest) container(t *testing.T) container {
	t.Helper()
	cs := m.ds.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("the DaemonSet has %d containers, want 1", len(cs))
	}
	return cs[0]
}

// env is the container's environment as the manifest sets it: values,
// and hostIPStandIn for a fieldRef on status.hostIP; other valueFrom
// entries are reported.
func (c container) env(t *testing.T) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		if e.Value == nil && fieldRef(e.ValueFrom) == "status.hostIP" {
			env[e.Name] = hostIPStandIn
			continue
		}
		if e.Value == nil {
			t.Errorf("env %s has no literal value; the test cannot run the binary with it", e.Name)
			continue
		}
		env[e.Name] = *e.Value
	}
	return env
}

// valueFrom is an env var's valueFrom; only fieldRef is read.
type valueFrom struct {
	FieldRef *struct {
		FieldPath string `yaml:"fieldPath"`
	} `yaml:"fieldRef"`
}

// fieldRef is the fieldPath of a valueFrom's fieldRef, "" if it has none.
func fieldRef(v *valueFrom) string {
	if v == nil || v.FieldRef == nil {
		return ""
	}
	return v.FieldRef.FieldPath
}

func (c container) portNamed(t *testing.T, name string) int {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	if n, err := strconv.Atoi(name); err == nil {
		return n
	}
	t.Fatalf("container has no port named %q", name)
	return 0
}

func (c container) mountOf(volume string) string {
	for _, vm := range c.VolumeMounts {
		if vm.Name == volume {
			return vm.MountPath
		}
	}
	return ""
}

// dockerfileEnv reads the ENV and EXPOSE instructions of the node image.
func dockerfileEnv(t *testing.T) (env map[string]string, expose []string) {
	t.Helper()
	b, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	// Join continuation lines, drop comments.
	var lines []string
	var cur strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			cur.WriteString(strings.TrimSuffix(l, "\\") + " ")
			continue
		}
		cur.WriteString(l)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	env = map[string]string{}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "ENV":
			for _, kv := range f[1:] {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					t.Fatalf("Dockerfile: ENV %q: only the KEY=VALUE form is handled here", l)
				}
				env[k] = strings.Trim(v, `"`)
			}
		case "EXPOSE":
			expose = append(expose, f[1:]...)
		}
	}
	if len(env) == 0 {
		t.Fatal("Dockerfile: no ENV")
	}
	return env, expose
}

func TestManifestObjectsFit(t *testing.T) {
	m := loadManifest(t)
	ds := m.ds
	c := m.container(t)

	tmplLabels := ds.Template.Metadata.Labels
	if len(ds.Selector.MatchLabels) == 0 {
		t.Error("the DaemonSet has no selector")
	}
	for k, v := range ds.Selector.MatchLabels {
		if tmplLabels[k] != v {
			t.Errorf("DaemonSet selector %s=%s does not match its template labels %v", k, v, tmplLabels)
		}
	}
	if len(m.service.Selector) == 0 {
		t.Error("the Service selects nothing")
	}
	for k, v := range m.service.Selector {
		if tmplLabels[k] != v {
			t.Errorf("Service selector %s=%s does not match the pods' labels %v", k, v, tmplLabels)
		}
	}
	if m.service.ClusterIP != "None" || !m.service.PublishNotReadyAddresses {
		t.Errorf("the Service is not headless with publishNotReadyAddresses: clusterIP %q, publishNotReadyAddresses %v",
			m.service.ClusterIP, m.service.PublishNotReadyAddresses)
	}
	svcPorts := map[string]int{}
	for _, p := range m.service.Ports {
		svcPorts[p.Name] = p.Port
		if target := c.portNamed(t, p.TargetPort); target != p.Port {
			t.Errorf("Service port %s: %d targets container port %d", p.Name, p.Port, target)
		}
	}
	if svcPorts["api"] != 5000 || svcPorts["p2p"] != 4001 {
		t.Errorf("Service ports %v, want api 5000 and p2p 4001", svcPorts)
	}

	if c.Image != "meshreg:dev" || c.ImagePullPolicy != "IfNotPresent" {
		t.Errorf("image %s (%s), want meshreg:dev (IfNotPresent)", c.Image, c.ImagePullPolicy)
	}
	if len(c.Command) != 0 {
		t.Errorf("command %v overrides the image's ENTRYPOINT", c.Command)
	}
	if len(ds.Template.Spec.InitContainers) != 0 {
		t.Error("the DaemonSet has init containers")
	}
	var api, p2p bool
	for _, p := range c.Ports {
		switch p.Name {
		case "api":
			api = p.ContainerPort == 5000 && p.HostPort == 5000 && p.Protocol == "TCP"
		case "p2p":
			p2p = p.ContainerPort == 4001 && p.HostPort == 4001 && p.Protocol == "TCP"
		}
	}
	if !api || !p2p {
		t.Errorf("container ports %+v: want api 5000 with hostPort 5000, p2p 4001 with hostPort 4001", c.Ports)
	}
	// The Raft address other nodes store and dial is the host's IP (the
	// p2p hostPort forwards it to the pod): not a bridge address, and the
	// same after the pod is recreated.
	advertise := ""
	for _, e := range c.Env {
		if e.Name == "MESHREG_ADVERTISE" {
			advertise = fieldRef(e.ValueFrom)
		}
	}
	if advertise != "status.hostIP" {
		t.Errorf("MESHREG_ADVERTISE comes from %q, want a fieldRef on status.hostIP", advertise)
	}

	for _, pr := range []struct {
		name, path string
		p          *probe
	}{{"readinessProbe", "/readyz", c.ReadinessProbe}, {"livenessProbe", "/healthz", c.LivenessProbe}} {
		if pr.p == nil {
			t.Errorf("no %s", pr.name)
			continue
		}
		if pr.p.HTTPGet.Path != pr.path || c.portNamed(t, pr.p.HTTPGet.Port) != 5000 {
			t.Errorf("%s GETs %s on port %s, want %s on the API port 5000", pr.name, pr.p.HTTPGet.Path, pr.p.HTTPGet.Port, pr.path)
		}
	}

	var dataOK bool
	for _, v := range ds.Template.Spec.Volumes {
		if v.Name == "data" && v.HostPath != nil {
			dataOK = v.HostPath.Path == "/var/lib/meshreg" && v.HostPath.Type == "DirectoryOrCreate"
		}
	}
	if !dataOK {
		t.Error("no volume data: hostPath /var/lib/meshreg, DirectoryOrCreate")
	}
	if got, want := c.mountOf("data"), c.env(t)["MESHREG_DATA_DIR"]; got == "" || got != want {
		t.Errorf("the data volume is mounted at %q, but MESHREG_DATA_DIR is %q", got, want)
	}

	if ds.UpdateStrategy.Type != "RollingUpdate" || ds.UpdateStrategy.RollingUpdate.MaxUnavailable != 1 {
		t.Errorf("updateStrategy %+v, want RollingUpdate with maxUnavailable 1", ds.UpdateStrategy)
	}
	if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
		t.Errorf("resources %+v: want cpu and memory requests and a memory limit", c.Resources)
	}
}

func TestManifestAgreesWithDockerfile(t *testing.T) {
	m := loadManifest(t)
	c := m.container(t)
	menv := c.env(t)
	denv, expose := dockerfileEnv(t)
	for _, k := range []string{"MESHREG_DATA_DIR", "MESHREG_LISTEN", "MESHREG_P2P_LISTEN"} {
		if v, ok := menv[k]; ok && v != denv[k] {
			t.Errorf("%s: manifest %q, Dockerfile %q", k, v, denv[k])
		}
	}
	if got := c.mountOf("data"); got != denv["MESHREG_DATA_DIR"] {
		t.Errorf("the data volume is mounted at %q, the image's data dir is %q", got, denv["MESHREG_DATA_DIR"])
	}
	for _, p := range c.Ports {
		found := false
		for _, e := range expose {
			found = found || e == strconv.Itoa(p.ContainerPort)+"/"+strings.ToLower(p.Protocol)
		}
		if !found {
			t.Errorf("container port %s %d/%s is not EXPOSEd by the Dockerfile (%v)", p.Name, p.ContainerPort, p.Protocol, expose)
		}
	}
	_, port, err := net.SplitHostPort(denv["MESHREG_LISTEN"])
	if err != nil || port != strconv.Itoa(c.portNamed(t, "api")) {
		t.Errorf("the image listens on %q, the api port is %d", denv["MESHREG_LISTEN"], c.portNamed(t, "api"))
	}
}

// buildMeshreg compiles ./cmd/meshreg of this module.
func buildMeshreg(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command to build meshreg with")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out := filepath.Join(t.TempDir(), "meshreg")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/meshreg")
	cmd.Dir = "../.." // the module root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/meshreg: %v\n%s", err, b)
	}
	return out
}

// check runs the container's command line with --check in the
// container's environment: the image's ENV, overridden by the manifest's
// env, and nothing else.
func check(t *testing.T, bin string, args []string, env map[string]string) (map[string]any, error) {
	t.Helper()
	cmd := exec.Command(bin, append(append([]string{}, args...), "--check")...)
	cmd.Env = []string{}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, errors.New(err.Error() + ": " + stderr.String())
	}
	var got map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("meshreg serve --check printed no JSON: %v\n%s", err, stdout.String())
	}
	return got, nil
}

func TestBinaryAcceptsManifest(t *testing.T) {
	m := loadManifest(t)
	c := m.container(t)
	bin := buildMeshreg(t)
	denv, _ := dockerfileEnv(t)
	env := map[string]string{}
	for k, v := range denv {
		env[k] = v
	}
	for k, v := range c.env(t) {
		env[k] = v
	}
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Fatalf("args %v do not start with serve", c.Args)
	}

	// The cluster key: --bootstrap-expect needs it (or a shared
	// --join-token), so the manifest sets it to a file in the Secret's
	// mount, and the Secret is required. A temp file stands in for the
	// mounted Secret.
	keyPath := env["MESHREG_CLUSTER_KEY"]
	if keyPath == "" {
		t.Fatal("the manifest sets no MESHREG_CLUSTER_KEY: --bootstrap-expect needs the cluster key")
	}
	mount := c.mountOf("cluster-key")
	if mount == "" || filepath.Dir(keyPath) != mount {
		t.Errorf("MESHREG_CLUSTER_KEY %s is not in the cluster-key volume's mount %q", keyPath, mount)
	}
	var secretOK bool
	for _, v := range m.ds.Template.Spec.Volumes {
		if v.Name == "cluster-key" && v.Secret != nil {
			secretOK = v.Secret.SecretName != "" && !v.Secret.Optional
		}
	}
	if !secretOK {
		t.Error("the cluster-key volume is not a required Secret")
	}
	if !regexp.MustCompile(`kubectl -n meshreg create secret generic meshreg-cluster-key`).MatchString(m.raw) {
		t.Error("the manifest does not say how to create the cluster-key Secret")
	}
	const keyHex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	key := filepath.Join(t.TempDir(), filepath.Base(keyPath))
	if err := os.WriteFile(key, []byte("/key/swarm/psk/1.0.0/\n/base16/\n"+keyHex+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	env["MESHREG_CLUSTER_KEY"] = key

	got, err := check(t, bin, c.Args, env)
	if err != nil {
		t.Fatalf("meshreg %s --check with the manifest's env: %v", strings.Join(c.Args, " "), err)
	}
	want := map[string]any{
		"listen":           "0.0.0.0:5000",
		"data-dir":         "/data",
		"bootstrap-expect": 3.0,
		"cluster-key":      key,
		"advertise":        hostIPStandIn,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
	if j, _ := got["join"].([]any); len(j) != 1 || j[0] != joinURL {
		t.Errorf("join = %v, want [%s]", got["join"], joinURL)
	}
	if p, _ := got["p2p-listen"].([]any); len(p) != 1 || p[0] != "/ip4/0.0.0.0/tcp/4001" {
		t.Errorf("p2p-listen = %v, want the TCP port 4001 the pod exposes", got["p2p-listen"])
	}
	shutdown, err := time.ParseDuration(got["shutdown-timeout"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if grace := time.Duration(m.ds.Template.Spec.TerminationGracePeriodSeconds) * time.Second; grace <= shutdown {
		t.Errorf("terminationGracePeriodSeconds %s is not longer than --shutdown-timeout %s", grace, shutdown)
	}
	// Without the key, --bootstrap-expect admits no one: refused at start.
	delete(env, "MESHREG_CLUSTER_KEY")
	if _, err := check(t, bin, c.Args, env); err == nil || !strings.Contains(err.Error(), "--bootstrap-expect needs --cluster-key") {
		t.Errorf("--check without the cluster key: %v, want --bootstrap-expect refused", err)
	}
	env["MESHREG_CLUSTER_KEY"] = key
	for _, v := range got {
		if s, ok := v.(string); ok && strings.Contains(s, keyHex) {
			t.Error("serve --check printed the key's bytes")
		}
	}

	// And the test's own premise: a broken environment is refused.
	env["MESHREG_BOOTSTRAP_EXPECT"] = "three"
	if _, err := check(t, bin, c.Args, env); err == nil {
		t.Error("meshreg accepted MESHREG_BOOTSTRAP_EXPECT=three; --check proves nothing")
	}
}
