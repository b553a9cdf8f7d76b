package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// swarmKeyHex is a libp2p private-network key used only by tests.
const swarmKeyHex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// clearMeshregEnv unsets every MESHREG_* variable for the test, so the
// environment the tests run in cannot leak into the configuration.
func clearMeshregEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "MESHREG_") {
			t.Setenv(k, "") // restored after the test
			os.Unsetenv(k)
		}
	}
}

// runCheck runs `meshreg serve --check args...` in process and returns
// what it printed on stdout.
func runCheck(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	app := newApp()
	app.Writer, app.ErrWriter = &out, io.Discard
	err := app.Run(append([]string{"meshreg", "serve", "--check"}, args...))
	return out.String(), err
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestServeCheckGoodConfig(t *testing.T) {
	clearMeshregEnv(t)
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data") // must not be created
	key := writeFile(t, filepath.Join(dir, "swarm.key"), "/key/swarm/psk/1.0.0/\n/base16/\n"+swarmKeyHex+"\n")
	conf := writeFile(t, filepath.Join(dir, "meshreg.yaml"), strings.Join([]string{
		"data-dir: " + dataDir,
		"voters: 5",               // only the file sets it
		"log-level: debug",        // the environment overrides it
		"listen: 127.0.0.1:1",     // the command line overrides it
		"upload-idle-timeout: 2h", // durations in the file
	}, "\n")+"\n")
	t.Setenv("MESHREG_LOG_LEVEL", "warn")
	t.Setenv("MESHREG_BOOTSTRAP_EXPECT", "3")
	t.Setenv("MESHREG_P2P_LISTEN", "/ip4/0.0.0.0/tcp/4001")
	t.Setenv("MESHREG_ADVERTISE", "10.0.0.5")

	// An address in use: --check must not bind it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	out, err := runCheck(t, "--config", conf, "--listen", ln.Addr().String(),
		"--join", "http://meshreg.meshreg.svc.cluster.local:5000", "--cluster-key", key)
	if err != nil {
		t.Fatalf("serve --check: %v", err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	want := map[string]any{
		"config":              conf,
		"data-dir":            dataDir,
		"listen":              ln.Addr().String(),
		"voters":              5.0,
		"log-level":           "warn",
		"bootstrap-expect":    3.0,
		"p2p-listen":          []any{"/ip4/0.0.0.0/tcp/4001"},
		"join":                []any{"http://meshreg.meshreg.svc.cluster.local:5000"},
		"cluster-key":         key,
		"upload-idle-timeout": "2h0m0s",
		"shutdown-timeout":    "30s",
		"replicas":            2.0,
		"advertise":           "10.0.0.5",
	}
	for k, v := range want {
		if !reflect.DeepEqual(got[k], v) {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
	if strings.Contains(out, swarmKeyHex) {
		t.Errorf("the output holds the cluster key's bytes:\n%s", out)
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("serve --check touched the data dir: stat: %v", err)
	}

	// The output reads back as a --config file (JSON is YAML) and gives the
	// same configuration.
	again := writeFile(t, filepath.Join(dir, "effective.yaml"), out)
	clearMeshregEnv(t)
	out2, err := runCheck(t, "--config", again)
	if err != nil {
		t.Fatalf("serve --check --config <its own output>: %v", err)
	}
	var got2 map[string]any
	if err := json.Unmarshal([]byte(out2), &got2); err != nil {
		t.Fatal(err)
	}
	got["config"] = again
	if !reflect.DeepEqual(got, got2) {
		t.Errorf("output read back as --config changed:\n%s\nvs\n%s", out, out2)
	}
}

func TestServeCheckBadConfig(t *testing.T) {
	dir := t.TempDir()
	badKey := writeFile(t, filepath.Join(dir, "bad.key"), "not a key\n")
	badYAML := writeFile(t, filepath.Join(dir, "bad.yaml"), "voters: [1, 2\n")
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string // in the error
	}{
		{name: "bootstrap-expect without join", args: []string{"--bootstrap-expect", "3"}, want: "--bootstrap-expect needs --join"},
		{name: "bad log level from env", env: map[string]string{"MESHREG_LOG_LEVEL": "loud"}, want: "--log-level"},
		{name: "listen without port", args: []string{"--listen", "0.0.0.0"}, want: "--listen"},
		{name: "bad p2p multiaddr", args: []string{"--p2p-listen", "/ip4/0.0.0.0/tcpp/4001"}, want: "listen address"},
		{name: "join without scheme", args: []string{"--join", "meshreg:5000"}, want: "--join"},
		{name: "join multiaddr without peer id", args: []string{"--join", "/ip4/10.0.0.1/tcp/4001"}, want: "/p2p/"},
		{name: "cluster key missing", args: []string{"--cluster-key", filepath.Join(dir, "nope")}, want: "--cluster-key"},
		{name: "cluster key malformed", args: []string{"--cluster-key", badKey}, want: "swarm.key"},
		{name: "cluster key with only QUIC", args: []string{"--cluster-key", writeFile(t, filepath.Join(dir, "ok.key"), "/key/swarm/psk/1.0.0/\n/base16/\n"+swarmKeyHex+"\n"), "--p2p-listen", "/ip4/0.0.0.0/udp/4001/quic-v1"}, want: "TCP"},
		{name: "advertise host:port", args: []string{"--advertise", "10.0.0.5:4001"}, want: "--advertise"},
		{name: "advertise with peer id", args: []string{"--advertise", "/ip4/10.0.0.5/tcp/4001/p2p/12D3KooWCxN29wQqEYJ6QZBxLchRD3qgTACnDrWwZt5QQQBmMRPr"}, want: "/p2p/"},
		{name: "zero voters", args: []string{"--voters", "0"}, want: "voters"},
		{name: "zero snapshot threshold", args: []string{"--snapshot-threshold", "0"}, want: "SnapshotThreshold"},
		{name: "empty data dir", args: []string{"--data-dir", ""}, want: "data dir"},
		{name: "config file missing", args: []string{"--config", filepath.Join(dir, "nope.yaml")}, want: "nope.yaml"},
		{name: "config file malformed", args: []string{"--config", badYAML}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearMeshregEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			out, err := runCheck(t, tc.args...)
			if err == nil {
				t.Fatalf("serve --check accepted it; printed:\n%s", out)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			if strings.Contains(out, `"data-dir"`) {
				t.Errorf("printed a configuration although it is invalid:\n%s", out)
			}
		})
	}
}
