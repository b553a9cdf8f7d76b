package kubecheck

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Binary is the meshreg binary the checks run: $MESHREG_E2E_BIN if set
// (make e2e builds it), else ./cmd/meshreg of this module, built into a
// temp dir.
func Binary(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("MESHREG_E2E_BIN"); bin != "" {
		return bin
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("no go command to build meshreg with (or set MESHREG_E2E_BIN)")
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out := filepath.Join(t.TempDir(), "meshreg")
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, "./cmd/meshreg")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/meshreg: %v\n%s", err, b)
	}
	return out
}

// moduleRoot is the nearest directory above the working directory that
// holds a go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Check runs `bin ARGS --check` in exactly env (nothing inherited) and
// returns the configuration it printed.
func Check(t testing.TB, bin string, args []string, env map[string]string) (map[string]any, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(append([]string{}, args...), "--check")...)
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

// TestKey is a valid cluster key (swarm.key format) for Files.
const TestKey = "/key/swarm/psk/1.0.0/\n/base16/\n00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n"

// Serve is how CheckServe runs the container.
type Serve struct {
	Bin        string // from Binary
	Dockerfile string // the image's ENV comes first, then the container's
	// Files holds the content of the files that environment variables
	// name inside mounted Secrets and ConfigMaps, by variable (MESHREG_CLUSTER_KEY: a
	// valid key). The checks write them to a temp dir and point the
	// variables there.
	Files map[string]string
}

// CheckServe runs the container's command line with --check in the
// container's environment (the image's ENV, overridden by the container's
// env, and nothing else) and checks the configuration the node would run
// with against the objects: it listens on the API port, keeps its data in
// the data volume, joins through the Service, holds the cluster key from a
// required Secret, and stops within the termination grace period. It
// returns the printed configuration for further checks.
func CheckServe(t testing.TB, m Objects, s Serve) map[string]any {
	t.Helper()
	c := m.Container(t)
	denv, _ := DockerfileEnv(t, s.Dockerfile)
	env := map[string]string{}
	for k, v := range denv {
		env[k] = v
	}
	for k, v := range m.Env(t, c) {
		env[k] = v
	}
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Fatalf("%s: args %v do not start with serve", m.Source, c.Args)
	}

	// The cluster key: --bootstrap-expect needs it (or a shared
	// --join-token), so it is a file in a required Secret's mount.
	keyPath := env["MESHREG_CLUSTER_KEY"]
	if keyPath == "" {
		t.Fatalf("%s: no MESHREG_CLUSTER_KEY: --bootstrap-expect needs the cluster key", m.Source)
	}
	files := s.mountFiles(t, m, c, env)
	keyVol := files["MESHREG_CLUSTER_KEY"]
	if v := m.Volume(keyVol); v == nil || v.Secret == nil || v.Secret.SecretName == "" || v.Secret.Optional {
		t.Errorf("%s: MESHREG_CLUSTER_KEY %s is not in the mount of a required Secret", m.Source, keyPath)
	}
	key := env["MESHREG_CLUSTER_KEY"]

	got, err := Check(t, s.Bin, c.Args, env)
	if err != nil {
		t.Fatalf("%s: meshreg %s --check with the container's env: %v", m.Source, strings.Join(c.Args, " "), err)
	}
	want := map[string]any{
		"listen":      "0.0.0.0:" + strconv.Itoa(c.PortNamed(t, "api")),
		"data-dir":    c.MountOf("data"),
		"cluster-key": key,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s = %#v, want %#v", m.Source, k, got[k], v)
		}
	}
	if n, _ := got["bootstrap-expect"].(float64); n < 1 {
		t.Errorf("%s: bootstrap-expect = %v, want the first rollout's host count", m.Source, got["bootstrap-expect"])
	}
	j, _ := got["join"].([]any)
	if len(j) != 1 {
		t.Errorf("%s: join = %v, want the Service", m.Source, got["join"])
	} else {
		checkJoin(t, m, j[0], env)
	}
	if p, _ := got["p2p-listen"].([]any); len(p) != 1 || p[0] != "/ip4/0.0.0.0/tcp/"+strconv.Itoa(c.PortNamed(t, "p2p")) {
		t.Errorf("%s: p2p-listen = %v, want the TCP port %d the pod exposes", m.Source, got["p2p-listen"], c.PortNamed(t, "p2p"))
	}
	// Once the binary has --advertise, it shows the address (as given,
	// or as a multiaddr holding it).
	if adv, ok := got["advertise"]; ok && !strings.Contains(fmt.Sprint(adv), env["MESHREG_ADVERTISE"]) {
		t.Errorf("%s: advertise = %v, want MESHREG_ADVERTISE %q", m.Source, adv, env["MESHREG_ADVERTISE"])
	}
	shutdown, err := time.ParseDuration(got["shutdown-timeout"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if grace := time.Duration(m.DaemonSet.Template.Spec.TerminationGracePeriodSeconds) * time.Second; grace <= shutdown {
		t.Errorf("%s: terminationGracePeriodSeconds %s is not longer than --shutdown-timeout %s", m.Source, grace, shutdown)
	}
	for _, v := range got {
		if s, ok := v.(string); ok && strings.Contains(s, strings.Split(TestKey, "\n")[2]) {
			t.Errorf("%s: serve --check printed the key's bytes", m.Source)
		}
	}

	// Without the key (and without a shared token), --bootstrap-expect
	// admits no one: refused at start.
	noKey := map[string]string{}
	for k, v := range env {
		if k != "MESHREG_CLUSTER_KEY" && k != "MESHREG_JOIN_TOKEN" {
			noKey[k] = v
		}
	}
	if _, err := Check(t, s.Bin, c.Args, noKey); err == nil || !strings.Contains(err.Error(), "--bootstrap-expect needs --cluster-key") {
		t.Errorf("%s: --check without the cluster key: %v, want --bootstrap-expect refused", m.Source, err)
	}

	// And the checks' own premise: the environment is read, and a broken
	// one is refused.
	if _, ok := env["MESHREG_BOOTSTRAP_EXPECT"]; !ok {
		t.Errorf("%s: no MESHREG_BOOTSTRAP_EXPECT", m.Source)
	}
	env["MESHREG_BOOTSTRAP_EXPECT"] = "three"
	if _, err := Check(t, s.Bin, c.Args, env); err == nil {
		t.Errorf("%s: meshreg accepted MESHREG_BOOTSTRAP_EXPECT=three; --check proves nothing", m.Source)
	}
	return got
}

// checkJoin: the node joins through the headless Service, by its cluster
// DNS name, on the API port, over https when the API serves TLS.
func checkJoin(t testing.TB, m Objects, join any, env map[string]string) {
	t.Helper()
	s, _ := join.(string)
	u, err := url.Parse(s)
	if err != nil {
		t.Errorf("%s: join %q: %v", m.Source, s, err)
		return
	}
	scheme := "http"
	if env["MESHREG_TLS_CERT"] != "" {
		scheme = "https"
	}
	svc := m.ServiceMeta.Name + "." + m.ServiceMeta.Namespace + ".svc."
	if u.Scheme != scheme || !strings.HasPrefix(u.Hostname()+".", svc) || u.Port() != strconv.Itoa(APIPort) {
		t.Errorf("%s: join %s, want %s://%s<cluster domain>:%d (the headless Service)", m.Source, s, scheme, svc, APIPort)
	}
}

// mountFiles points every environment variable whose value is a file in a
// Secret's mount at a temp file holding s.Files[variable], checks that the
// Secret provides that file (where its items name the files), and returns
// the volume of each such variable.
func (s Serve) mountFiles(t testing.TB, m Objects, c Container, env map[string]string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	vols := map[string]string{}
	for name, value := range env {
		for _, vm := range c.VolumeMounts {
			v := m.Volume(vm.Name)
			if v == nil || !strings.HasPrefix(value, strings.TrimSuffix(vm.MountPath, "/")+"/") {
				continue
			}
			src, items := VolumeSource(v)
			if src == "" {
				continue
			}
			vols[name] = vm.Name
			if vm.SubPath != "" {
				t.Errorf("%s: %s=%s comes through a subPath mount of the %s, which kubelet never updates: mount the volume's directory so that the node sees changes", m.Source, name, value, src)
			}
			file := strings.TrimPrefix(value, strings.TrimSuffix(vm.MountPath, "/")+"/")
			if len(items) > 0 {
				found := false
				for _, it := range items {
					found = found || it.Path == file
				}
				if !found {
					t.Errorf("%s: %s=%s, but the %s mounted there provides no %s", m.Source, name, value, src, file)
				}
			}
			content, ok := s.Files[name]
			if !ok {
				t.Fatalf("%s: %s names %s in the %s: the check has no content for it", m.Source, name, value, src)
			}
			p := filepath.Join(dir, vm.Name, file)
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(content), 0o400); err != nil {
				t.Fatal(err)
			}
			env[name] = p
		}
	}
	return vols
}
