package p2p

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
)

func TestChooseAdvertiseAddr(t *testing.T) {
	t.Parallel()
	ip := netip.MustParseAddr
	lo := NetInterface{Name: "lo", Loopback: true, Addrs: []netip.Addr{ip("127.0.0.1"), ip("::1")}}
	docker0 := NetInterface{Name: "docker0", Addrs: []netip.Addr{ip("172.17.0.1"), ip("fe80::42:acff:fe11:1")}}
	eth0 := NetInterface{Name: "eth0", Addrs: []netip.Addr{ip("10.0.0.5"), ip("fe80::1")}}
	eth1 := NetInterface{Name: "eth1", Addrs: []netip.Addr{ip("192.168.7.5")}}
	// routes maps a target to the source address the kernel would use.
	routes := func(m map[string]string) RouteFunc {
		return func(host string) (netip.Addr, error) {
			if s, ok := m[host]; ok {
				return ip(s), nil
			}
			return netip.Addr{}, errors.New("network is unreachable")
		}
	}
	tests := []struct {
		name       string
		ifaces     []NetInterface
		ipv6       bool
		targets    []string
		routes     map[string]string
		want       string
		wantIface  string
		wantReason string // a substring
	}{
		{
			name:   "docker0 listed first, no routes: never the bridge",
			ifaces: []NetInterface{lo, docker0, eth0},
			want:   "10.0.0.5", wantIface: "eth0", wantReason: "first address not on a bridge",
		},
		{
			name:   "docker default network by address, interface renamed",
			ifaces: []NetInterface{lo, {Name: "dkr", Addrs: []netip.Addr{ip("172.17.0.1")}}, eth0},
			want:   "10.0.0.5", wantIface: "eth0",
		},
		{
			name: "bridges of every kind skipped",
			ifaces: []NetInterface{lo,
				{Name: "br-3f2a1b", Addrs: []netip.Addr{ip("172.18.0.1")}},
				{Name: "cni0", Addrs: []netip.Addr{ip("10.244.0.1")}},
				{Name: "virbr0", Addrs: []netip.Addr{ip("192.168.122.1")}},
				{Name: "kube-bridge", Addrs: []netip.Addr{ip("10.32.0.1")}},
				{Name: "vethab12", Addrs: []netip.Addr{ip("169.254.3.3")}},
				{Name: "podman0", Addrs: []netip.Addr{ip("10.88.0.1")}},
				{Name: "cbr0", Addrs: []netip.Addr{ip("10.100.0.1")}},
				eth1},
			want: "192.168.7.5", wantIface: "eth1",
		},
		{
			name:    "the route to the join target wins over interface order",
			ifaces:  []NetInterface{lo, docker0, eth0, eth1},
			targets: []string{"192.168.7.9"},
			routes:  map[string]string{"192.168.7.9": "192.168.7.5", "192.0.2.1": "10.0.0.5"},
			want:    "192.168.7.5", wantIface: "eth1", wantReason: "--join target 192.168.7.9",
		},
		{
			name:    "a join target behind the bridge does not pick the bridge",
			ifaces:  []NetInterface{lo, docker0, eth0},
			targets: []string{"172.17.0.4"},
			routes:  map[string]string{"172.17.0.4": "172.17.0.1"},
			want:    "10.0.0.5", wantIface: "eth0",
		},
		{
			name:    "a loopback join target does not pick loopback",
			ifaces:  []NetInterface{lo, eth0},
			targets: []string{"127.0.0.1"},
			routes:  map[string]string{"127.0.0.1": "127.0.0.1"},
			want:    "10.0.0.5", wantIface: "eth0",
		},
		{
			name:    "unreachable join target: the default route",
			ifaces:  []NetInterface{lo, docker0, eth0, eth1},
			targets: []string{"meshreg.example"},
			routes:  map[string]string{"192.0.2.1": "192.168.7.5"},
			want:    "192.168.7.5", wantIface: "eth1", wantReason: "default route",
		},
		{
			name:   "a route source this host does not listen on is ignored",
			ifaces: []NetInterface{lo, eth0},
			routes: map[string]string{"192.0.2.1": "10.9.9.9"},
			want:   "10.0.0.5", wantIface: "eth0",
		},
		{
			name:   "down interfaces are skipped",
			ifaces: []NetInterface{lo, {Name: "eth0", Down: true, Addrs: []netip.Addr{ip("10.0.0.5")}}, eth1},
			want:   "192.168.7.5", wantIface: "eth1",
		},
		{
			name:   "only a bridge besides loopback: the bridge, with a warning reason",
			ifaces: []NetInterface{lo, docker0},
			want:   "172.17.0.1", wantIface: "docker0", wantReason: "--advertise",
		},
		{
			name:   "a container on Docker's default network: its eth0",
			ifaces: []NetInterface{lo, {Name: "eth0", Addrs: []netip.Addr{ip("172.17.0.3")}}},
			want:   "172.17.0.3", wantIface: "eth0", wantReason: "--advertise",
		},
		{
			name:   "only loopback",
			ifaces: []NetInterface{lo},
			want:   "127.0.0.1", wantIface: "lo", wantReason: "only this host",
		},
		{
			name:   "ipv6: global address, not link-local or bridge",
			ifaces: []NetInterface{lo, docker0, {Name: "eth0", Addrs: []netip.Addr{ip("fe80::1"), ip("10.0.0.5"), ip("2001:db8:5::5")}}},
			ipv6:   true,
			want:   "2001:db8:5::5", wantIface: "eth0",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ChooseAdvertiseAddr(tt.ifaces, tt.ipv6, tt.targets, routes(tt.routes))
			if err != nil {
				t.Fatalf("ChooseAdvertiseAddr: %v", err)
			}
			if got.Addr.String() != tt.want || got.Interface != tt.wantIface {
				t.Errorf("chose %s on %s (%s), want %s on %s", got.Addr, got.Interface, got.Reason, tt.want, tt.wantIface)
			}
			if !strings.Contains(got.Reason, tt.wantReason) {
				t.Errorf("reason %q does not say %q", got.Reason, tt.wantReason)
			}
		})
	}
	t.Run("no address at all", func(t *testing.T) {
		t.Parallel()
		if got, err := ChooseAdvertiseAddr([]NetInterface{{Name: "eth0", Addrs: []netip.Addr{ip("10.0.0.5")}}}, true, nil, routes(nil)); err == nil {
			t.Errorf("chose %v with no IPv6 address, want an error", got)
		}
	})
}

// TestHostAdvertises starts hosts on 0.0.0.0, where libp2p sees every
// interface address, with a bridge-like interface listed before the one
// other hosts reach (all on loopback here, so that a peer can dial them):
// the Raft address must be the reachable one, or the --advertise address
// when given, identify must give it out and no bridge address, and a peer
// must connect through it.
func TestHostAdvertises(t *testing.T) {
	t.Parallel()
	ip := netip.MustParseAddr
	ifaces := func() ([]NetInterface, error) {
		return []NetInterface{
			{Name: "lo", Loopback: true, Addrs: []netip.Addr{ip("127.0.0.1")}},
			{Name: "docker0", Addrs: []netip.Addr{ip("127.0.0.3")}},
			{Name: "eth0", Addrs: []netip.Addr{ip("127.0.0.4")}},
		}, nil
	}
	noRoute := func(bool) RouteFunc {
		return func(string) (netip.Addr, error) { return netip.Addr{}, errors.New("unreachable") }
	}
	tests := []struct {
		name      string
		advertise string
		wantIP    string // the Raft address starts with /ip4/<wantIP>/tcp/<listen port>
		wantFixed string // or is exactly this (a multiaddr --advertise)
		dial      bool
	}{
		{name: "chosen", wantIP: "127.0.0.4", dial: true},
		{name: "advertise IP", advertise: "127.0.0.5", wantIP: "127.0.0.5", dial: true},
		{name: "advertise multiaddr", advertise: "/ip4/10.1.2.3/tcp/4001", wantFixed: "/ip4/10.1.2.3/tcp/4001"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newTestHost(t, func(c *Config) {
				c.ListenAddrs = []string{"/ip4/0.0.0.0/tcp/0"}
				c.Advertise = tt.advertise
				c.interfaces, c.route = ifaces, noRoute
			})
			port, err := boundAddr(t, h, ma.P_TCP).ValueForProtocol(ma.P_TCP)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.wantFixed
			if want == "" {
				want = "/ip4/" + tt.wantIP + "/tcp/" + port
			}
			want += "/p2p/" + h.ID().String()
			if got := h.RaftAddress(); got != want {
				t.Errorf("RaftAddress = %s, want %s", got, want)
			}
			addrs := h.Addrs()
			found := false
			for _, a := range addrs {
				found = found || a.String() == want
				if s := a.String(); strings.HasPrefix(s, "/ip4/127.0.0.3/") || strings.HasPrefix(s, "/ip4/172.17.") {
					t.Errorf("Addrs gives out %s, a bridge address", s)
				}
			}
			if !found {
				t.Errorf("Addrs = %v, want %s among them", addrs, want)
			}
			if !tt.dial {
				return
			}
			other := newTestHost(t, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := other.Connect(ctx, h.RaftAddress()); err != nil {
				t.Errorf("Connect to the Raft address: %v", err)
			}
		})
	}
}

func TestConfigValidateAdvertise(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		advertise, wantErr string
		key                bool
	}{
		{"/ip4/10.0.0.5/udp/4001/quic-v1", "QUIC", true},
		{"/ip4/10.0.0.5/tcp/4001", "", true},
		{"10.0.0.5", "", false},
		{"fd00::5", "", false},
		{"/ip4/10.0.0.5/tcp/4001", "", false},
		{"/dns4/node-a.example/tcp/4001", "", false},
		{"/ip4/10.0.0.5/udp/4001/quic-v1", "", false},
		{"0.0.0.0", "other hosts can dial", false},
		{"10.0.0.5:4001", "want an IP address", false},
		{"/ip4/10.0.0.5", "TCP or QUIC port", false},
		{"/ip4/10.0.0.5/tcp/4001/p2p/12D3KooWCxN29wQqEYJ6QZBxLchRD3qgTACnDrWwZt5QQQBmMRPr", "leave out /p2p/", false},
	} {
		c := DefaultConfig()
		c.DataDir = "d"
		c.Advertise = tt.advertise
		if tt.key {
			c.PrivateNetworkKey = make([]byte, 32)
		}
		err := c.Validate()
		if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("Validate with Advertise %q: %v, want error %q", tt.advertise, err, tt.wantErr)
		}
	}
}
