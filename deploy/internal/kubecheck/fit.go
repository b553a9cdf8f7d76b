package kubecheck

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// The ports every meshreg DaemonSet uses: the registry API (also a
// hostPort, so the host's runtime pulls from 127.0.0.1:5000) and libp2p.
const (
	APIPort = 5000
	P2PPort = 4001
)

// Want is what a manifest must hold beyond the rules every one follows.
type Want struct {
	Name, Namespace   string // of the Service and the DaemonSet
	Image, PullPolicy string
	DataHostPath      string
}

// CheckFit checks that the objects fit together: selectors select the
// pods, the Service is headless and targets the container's ports, the
// probes hit /readyz and /healthz on the API port, the data dir is the
// host directory, the pods roll one at a time, and the Raft address the
// node advertises is one that other hosts reach.
func CheckFit(t testing.TB, m Objects, want Want) {
	t.Helper()
	ds := m.DaemonSet
	c := m.Container(t)
	for kind, meta := range map[string]Meta{"Service": m.ServiceMeta, "DaemonSet": m.DaemonSetMeta} {
		if meta.Name != want.Name || meta.Namespace != want.Namespace {
			t.Errorf("%s: the %s is %s/%s, want %s/%s", m.Source, kind, meta.Namespace, meta.Name, want.Namespace, want.Name)
		}
	}

	tmplLabels := ds.Template.Metadata.Labels
	if len(ds.Selector.MatchLabels) == 0 {
		t.Errorf("%s: the DaemonSet has no selector", m.Source)
	}
	for k, v := range ds.Selector.MatchLabels {
		if tmplLabels[k] != v {
			t.Errorf("%s: DaemonSet selector %s=%s does not match its template labels %v", m.Source, k, v, tmplLabels)
		}
	}
	if len(m.Service.Selector) == 0 {
		t.Errorf("%s: the Service selects nothing", m.Source)
	}
	for k, v := range m.Service.Selector {
		if tmplLabels[k] != v {
			t.Errorf("%s: Service selector %s=%s does not match the pods' labels %v", m.Source, k, v, tmplLabels)
		}
	}
	if m.Service.ClusterIP != "None" || !m.Service.PublishNotReadyAddresses {
		t.Errorf("%s: the Service is not headless with publishNotReadyAddresses: clusterIP %q, publishNotReadyAddresses %v",
			m.Source, m.Service.ClusterIP, m.Service.PublishNotReadyAddresses)
	}
	svcPorts := map[string]int{}
	for _, p := range m.Service.Ports {
		svcPorts[p.Name] = p.Port
		if target := c.PortNamed(t, p.TargetPort); target != p.Port {
			t.Errorf("%s: Service port %s: %d targets container port %d", m.Source, p.Name, p.Port, target)
		}
	}
	if svcPorts["api"] != APIPort || svcPorts["p2p"] != P2PPort {
		t.Errorf("%s: Service ports %v, want api %d and p2p %d", m.Source, svcPorts, APIPort, P2PPort)
	}

	if c.Image != want.Image || c.ImagePullPolicy != want.PullPolicy {
		t.Errorf("%s: image %s (%s), want %s (%s)", m.Source, c.Image, c.ImagePullPolicy, want.Image, want.PullPolicy)
	}
	if len(c.Command) != 0 {
		t.Errorf("%s: command %v overrides the image's ENTRYPOINT", m.Source, c.Command)
	}
	var api, p2p *Port
	for i, p := range c.Ports {
		switch p.Name {
		case "api":
			api = &c.Ports[i]
		case "p2p":
			p2p = &c.Ports[i]
		}
	}
	if api == nil || api.ContainerPort != APIPort || api.HostPort != APIPort || api.Protocol != "TCP" ||
		p2p == nil || p2p.ContainerPort != P2PPort || p2p.Protocol != "TCP" {
		t.Fatalf("%s: container ports %+v: want api %d with hostPort %d, p2p %d", m.Source, c.Ports, APIPort, APIPort, P2PPort)
	}

	env := m.Env(t, c)
	scheme := "HTTP"
	if env["MESHREG_TLS_CERT"] != "" {
		scheme = "HTTPS"
	}
	for _, pr := range []struct {
		name, path string
		p          *Probe
	}{{"readinessProbe", "/readyz", c.ReadinessProbe}, {"livenessProbe", "/healthz", c.LivenessProbe}} {
		if pr.p == nil {
			t.Errorf("%s: no %s", m.Source, pr.name)
			continue
		}
		if pr.p.HTTPGet.Path != pr.path || c.PortNamed(t, pr.p.HTTPGet.Port) != APIPort {
			t.Errorf("%s: %s GETs %s on port %s, want %s on the API port %d", m.Source, pr.name, pr.p.HTTPGet.Path, pr.p.HTTPGet.Port, pr.path, APIPort)
		}
		if got := pr.p.HTTPGet.Scheme; got != scheme && (got != "" || scheme != "HTTP") {
			t.Errorf("%s: %s uses scheme %q, want %s (MESHREG_TLS_CERT %q)", m.Source, pr.name, got, scheme, env["MESHREG_TLS_CERT"])
		}
	}

	if v := m.Volume("data"); v == nil || v.HostPath == nil || v.HostPath.Path != want.DataHostPath || v.HostPath.Type != "DirectoryOrCreate" {
		t.Errorf("%s: no volume data: hostPath %s, DirectoryOrCreate", m.Source, want.DataHostPath)
	}
	if got, want := c.MountOf("data"), env["MESHREG_DATA_DIR"]; got == "" || got != want {
		t.Errorf("%s: the data volume is mounted at %q, but MESHREG_DATA_DIR is %q", m.Source, got, want)
	}

	if ds.UpdateStrategy.Type != "RollingUpdate" || ds.UpdateStrategy.RollingUpdate.MaxUnavailable != 1 {
		t.Errorf("%s: updateStrategy %+v, want RollingUpdate with maxUnavailable 1", m.Source, ds.UpdateStrategy)
	}
	if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
		t.Errorf("%s: resources %+v: want cpu and memory requests and a memory limit", m.Source, c.Resources)
	}

	// The node runs as root (for the hostPath), so every container gets
	// nothing more than root's file ownership.
	for _, c := range append(append([]Container{}, ds.Template.Spec.InitContainers...), ds.Template.Spec.Containers...) {
		sc := c.SecurityContext
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || !sc.ReadOnlyRootFilesystem ||
			len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
			t.Errorf("%s: container %s: securityContext %+v, want no privilege escalation, a read-only root filesystem and every capability dropped", m.Source, c.Name, sc)
		}
	}

	// The Raft address: the pod's own view of its addresses is the pod
	// network; the host's IP is what stays the same across pod restarts,
	// and it reaches the pod only through a hostPort.
	adv := c.EnvVar("MESHREG_ADVERTISE")
	var field string
	if adv != nil && adv.ValueFrom != nil && adv.ValueFrom.FieldRef != nil {
		field = adv.ValueFrom.FieldRef.FieldPath
	}
	switch field {
	case "status.hostIP":
		if p2p.HostPort != p2p.ContainerPort {
			t.Errorf("%s: MESHREG_ADVERTISE is the host's IP, but the p2p port %d has hostPort %d: other hosts cannot reach it there", m.Source, p2p.ContainerPort, p2p.HostPort)
		}
	case "status.podIP":
		if p2p.HostPort != 0 {
			t.Errorf("%s: MESHREG_ADVERTISE is the pod's IP, but the p2p port has hostPort %d", m.Source, p2p.HostPort)
		}
	default:
		t.Errorf("%s: MESHREG_ADVERTISE is not set from status.hostIP (or status.podIP): the node would pick its Raft address itself", m.Source)
	}
}

// DockerfileEnv reads the ENV and EXPOSE instructions of the node image.
func DockerfileEnv(t testing.TB, path string) (env map[string]string, expose []string) {
	t.Helper()
	b, err := os.ReadFile(path)
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
					t.Fatalf("%s: ENV %q: only the KEY=VALUE form is handled here", path, l)
				}
				env[k] = strings.Trim(v, `"`)
			}
		case "EXPOSE":
			expose = append(expose, f[1:]...)
		}
	}
	if len(env) == 0 {
		t.Fatalf("%s: no ENV", path)
	}
	return env, expose
}

// CheckDockerfile checks that the container agrees with the image built
// from the Dockerfile at path: the same data dir and listen addresses
// where both set them, and every container port EXPOSEd.
func CheckDockerfile(t testing.TB, m Objects, path string) {
	t.Helper()
	c := m.Container(t)
	menv := m.Env(t, c)
	denv, expose := DockerfileEnv(t, path)
	for _, k := range []string{"MESHREG_DATA_DIR", "MESHREG_LISTEN", "MESHREG_P2P_LISTEN"} {
		if v, ok := menv[k]; ok && v != denv[k] {
			t.Errorf("%s: %s: %q, Dockerfile %q", m.Source, k, v, denv[k])
		}
	}
	if got := c.MountOf("data"); got != denv["MESHREG_DATA_DIR"] {
		t.Errorf("%s: the data volume is mounted at %q, the image's data dir is %q", m.Source, got, denv["MESHREG_DATA_DIR"])
	}
	for _, p := range c.Ports {
		found := false
		for _, e := range expose {
			found = found || e == strconv.Itoa(p.ContainerPort)+"/"+strings.ToLower(p.Protocol)
		}
		if !found {
			t.Errorf("%s: container port %s %d/%s is not EXPOSEd by the Dockerfile (%v)", m.Source, p.Name, p.ContainerPort, p.Protocol, expose)
		}
	}
	_, port, err := net.SplitHostPort(denv["MESHREG_LISTEN"])
	if err != nil || port != strconv.Itoa(c.PortNamed(t, "api")) {
		t.Errorf("%s: the image listens on %q, the api port is %d", m.Source, denv["MESHREG_LISTEN"], c.PortNamed(t, "api"))
	}
}
