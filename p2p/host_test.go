package p2p

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	ok := DefaultConfig()
	ok.DataDir = "d"
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr string
	}{
		{name: "default with dir", edit: func(*Config) {}},
		{name: "no data dir", edit: func(c *Config) { c.DataDir = "" }, wantErr: "DataDir"},
		{name: "no listen addrs", edit: func(c *Config) { c.ListenAddrs = nil }, wantErr: "listen address"},
		{name: "bad listen addr", edit: func(c *Config) { c.ListenAddrs = []string{"127.0.0.1:4001"} }, wantErr: "127.0.0.1:4001"},
		{name: "short pnet key", edit: func(c *Config) { c.PrivateNetworkKey = []byte("short") }, wantErr: "want 32"},
		{name: "pnet key with QUIC only", edit: func(c *Config) {
			c.PrivateNetworkKey = make([]byte, 32)
			c.ListenAddrs = []string{DefaultQUICListenAddr}
		}, wantErr: "TCP"},
		{name: "pnet key with TCP and QUIC", edit: func(c *Config) { c.PrivateNetworkKey = make([]byte, 32) }},
		{name: "low above high", edit: func(c *Config) { c.LowWater, c.HighWater = 10, 5 }, wantErr: "watermarks"},
		{name: "zero high", edit: func(c *Config) { c.LowWater, c.HighWater = 0, 0 }, wantErr: "watermarks"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			c.ListenAddrs = append([]string(nil), ok.ListenAddrs...)
			tt.edit(&c)
			err := c.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate: %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate: %v, want an error mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestIdentityPersists(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	start := func() string {
		h, err := NewHost(testConfig(t, dir))
		if err != nil {
			t.Fatalf("NewHost: %v", err)
		}
		id := h.ID().String()
		if err := h.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		return id
	}
	first, second := start(), start()
	if first != second {
		t.Errorf("peer id changed across restarts: %s then %s", first, second)
	}
	fi, err := os.Stat(filepath.Join(dir, "p2p", "identity.key"))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("identity.key mode %v, want 0600", perm)
	}
	if other := newTestHost(t, nil); other.ID().String() == first {
		t.Errorf("a new data dir got the same peer id %s", first)
	}
}

func TestIdentityCorrupt(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "p2p"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "p2p", "identity.key"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if h, err := NewHost(testConfig(t, dir)); err == nil {
		_ = h.Close()
		t.Fatal("NewHost with a corrupt identity key: got nil error")
	}
}

func TestConnect(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		code int
	}{
		{name: "tcp", code: ma.P_TCP},
		{name: "quic", code: ma.P_QUIC_V1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a, b := newTestHost(t, nil), newTestHost(t, nil)
			serveEcho(b)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := a.Connect(ctx, addrOf(t, b, tt.code)); err != nil {
				t.Fatalf("Connect: %v", err)
			}
			conns := a.LibP2P().Network().ConnsToPeer(b.ID())
			if len(conns) == 0 {
				t.Fatal("no connection after Connect")
			}
			if _, err := conns[0].RemoteMultiaddr().ValueForProtocol(tt.code); err != nil {
				t.Errorf("connection over %s, want %s", conns[0].RemoteMultiaddr(), tt.name)
			}
			if err := echo(ctx, a, b.ID()); err != nil {
				t.Errorf("echo: %v", err)
			}
		})
	}
}

func TestConnectBadAddr(t *testing.T) {
	t.Parallel()
	a := newTestHost(t, nil)
	for _, addr := range []string{"not a multiaddr", "/ip4/127.0.0.1/tcp/1"} {
		if err := a.Connect(context.Background(), addr); err == nil {
			t.Errorf("Connect(%q): got nil error", addr)
		}
	}
}

func TestPrivateNetwork(t *testing.T) {
	t.Parallel()
	path, key := writeSwarmKey(t)
	loaded, err := LoadPrivateNetworkKey(path)
	if err != nil {
		t.Fatalf("LoadPrivateNetworkKey: %v", err)
	}
	if !bytes.Equal(loaded, key) {
		t.Fatal("LoadPrivateNetworkKey returned a different key")
	}
	_, otherKey := writeSwarmKey(t)
	withKey := func(k []byte) func(*Config) { return func(c *Config) { c.PrivateNetworkKey = k } }

	a, b := newTestHost(t, withKey(key)), newTestHost(t, withKey(key))
	for _, addr := range a.Addrs() {
		if _, err := addr.ValueForProtocol(ma.P_UDP); err == nil {
			t.Errorf("private host listens on %s, want TCP only", addr)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Connect(ctx, addrOf(t, a, ma.P_TCP)); err != nil {
		t.Fatalf("same key: Connect: %v", err)
	}

	public, stranger := newTestHost(t, nil), newTestHost(t, withKey(otherKey))
	tests := []struct {
		name     string
		from, to *Host
	}{
		{name: "no key to key", from: public, to: a},
		{name: "key to no key", from: a, to: public},
		{name: "other key to key", from: stranger, to: a},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const bound = 2 * time.Second
			ctx, cancel := context.WithTimeout(context.Background(), bound)
			defer cancel()
			start := time.Now()
			err := tt.from.Connect(ctx, addrOf(t, tt.to, ma.P_TCP))
			if err == nil {
				t.Fatal("Connect: got nil error, want refusal")
			}
			if d := time.Since(start); d > bound+time.Second {
				t.Errorf("Connect took %v, want under %v", d, bound)
			}
			t.Logf("refused after %v: %v", time.Since(start).Round(time.Millisecond), err)
		})
	}
}

func TestLoadPrivateNetworkKeyErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, path, wantErr string
	}{
		{name: "missing", path: filepath.Join(dir, "nope"), wantErr: "no such file"},
		{name: "no header", path: write("raw", "00112233\n"), wantErr: "swarm.key"},
		{name: "bad encoding", path: write("enc", "/key/swarm/psk/1.0.0/\n/base99/\n00\n"), wantErr: "swarm.key"},
		{name: "short key", path: write("short", "/key/swarm/psk/1.0.0/\n/base16/\n0011\n"), wantErr: "swarm.key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadPrivateNetworkKey(tt.path)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("LoadPrivateNetworkKey: %v, want an error mentioning %q", err, tt.wantErr)
			}
		})
	}
}

// TestUserAgentReachesPeers: what a host says it runs is what its peers
// read (node/features.go decides from it which commands the cluster can
// apply).
func TestUserAgentReachesPeers(t *testing.T) {
	t.Parallel()
	a := newTestHost(t, func(c *Config) { c.UserAgent = "meshreg/v9.9.9 ops/7" })
	b := newTestHost(t, func(c *Config) { c.UserAgent = "meshreg/v1.0.0 ops/6" })
	if got := a.AgentVersion(b.ID()); got != "" {
		t.Fatalf("before any connection, AgentVersion = %q, want empty", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Connect(ctx, addrOf(t, b, ma.P_TCP)); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for a.AgentVersion(b.ID()) == "" || b.AgentVersion(a.ID()) == "" {
		if time.Now().After(deadline) {
			t.Fatalf("identify did not complete: a sees %q, b sees %q", a.AgentVersion(b.ID()), b.AgentVersion(a.ID()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := a.AgentVersion(b.ID()); got != "meshreg/v1.0.0 ops/6" {
		t.Errorf("a reads b as %q", got)
	}
	if got := b.AgentVersion(a.ID()); got != "meshreg/v9.9.9 ops/7" {
		t.Errorf("b reads a as %q", got)
	}
}
