package p2p

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	ma "github.com/multiformats/go-multiaddr"
)

// The address a node advertises is the one other members store in the Raft
// configuration and dial; identify and the DHT hand it out too, without
// this host's bridge addresses (advertisedAddrs).
// Listening on 0.0.0.0 (the default) gives libp2p every interface address,
// and the first of them is often Docker's bridge (172.17.0.1 on docker0,
// the same on every host that runs Docker): no other host reaches this
// node there. So the address is chosen (chooseRaftAddr):
//
//  1. --advertise, when given: an IP (the listen port is used) or a
//     multiaddr (in a DaemonSet, the host's IP from status.hostIP);
//  2. the address --p2p-listen binds, when it binds one address;
//  3. otherwise among this host's interface addresses (ChooseAdvertiseAddr):
//     never a bridge or loopback address when another exists, and the one
//     the route to a --join target leaves from before any other, then the
//     one of the default route.
//
// NewHost logs the choice at INFO: the address, its interface, and why.

// NetInterface is a network interface as address selection sees it.
type NetInterface struct {
	Name     string
	Loopback bool
	Down     bool
	Addrs    []netip.Addr
}

// RouteFunc returns the source address this host would use to reach host (a
// name or an IP), as the kernel's routing table says: connecting a UDP
// socket sends nothing and fills in the local address.
type RouteFunc func(host string) (netip.Addr, error)

// AdvertiseChoice is the address ChooseAdvertiseAddr picked, the interface
// that holds it and why, in words for the start-up log.
type AdvertiseChoice struct {
	Addr      netip.Addr
	Interface string
	Reason    string
}

// bridgeNamePrefixes name the interfaces of local virtual networks
// (container runtimes, CNI plugins, libvirt, overlay tunnels): their
// addresses are reachable from this host's containers, not from other
// hosts.
var bridgeNamePrefixes = []string{
	"docker", "br-", "cni", "cbr", "virbr", "veth", "kube-bridge", "kube-ipvs", "podman", "nerdctl",
	"lxcbr", "lxdbr", "flannel", "cali", "cilium", "weave", "vxlan", "tunl", "vnet",
}

// dockerDefaultNet is Docker's default bridge network: docker0 is
// 172.17.0.1 on every host that runs Docker, whatever it is named.
var dockerDefaultNet = netip.MustParsePrefix("172.17.0.0/16")

// Probe addresses for the default route (TEST-NET-1 and the IPv6
// documentation prefix: no such host answers, and nothing is sent).
const (
	defaultRouteProbe4 = "192.0.2.1"
	defaultRouteProbe6 = "2001:db8::1"
)

// ranks of a candidate address, best first.
const (
	rankReachable = iota
	rankBridge
	rankLinkLocal
	rankLoopback
)

func isBridgeName(name string) bool {
	for _, p := range bridgeNamePrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

type candidate struct {
	addr  netip.Addr
	iface string
	rank  int
}

func rankOf(iface NetInterface, a netip.Addr) int {
	switch {
	case iface.Loopback:
		return rankLoopback
	case a.IsLinkLocalUnicast():
		return rankLinkLocal
	case isBridgeName(iface.Name) || dockerDefaultNet.Contains(a):
		return rankBridge
	}
	return rankReachable
}

// ChooseAdvertiseAddr picks the address of ifaces (IPv4, or IPv6 if ipv6)
// that other hosts most probably reach: the source address of the route
// to the first of targets it has one to, else that of the default route,
// else the first address in interface order — each only if it is not on a
// bridge (see bridgeNamePrefixes, and Docker's 172.17.0.0/16), link-local
// or loopback. Only when every address is one of those does it pick one
// (bridge before link-local before loopback), and the reason says to pass
// --advertise. route may fail; it is a seam for tests.
func ChooseAdvertiseAddr(ifaces []NetInterface, ipv6 bool, targets []string, route RouteFunc) (AdvertiseChoice, error) {
	var cands []candidate
	for _, ifc := range ifaces {
		if ifc.Down {
			continue
		}
		for _, a := range ifc.Addrs {
			a = a.Unmap()
			if !a.IsValid() || a.Is6() != ipv6 || a.IsUnspecified() || a.IsMulticast() {
				continue
			}
			cands = append(cands, candidate{addr: a, iface: ifc.Name, rank: rankOf(ifc, a)})
		}
	}
	family := "IPv4"
	if ipv6 {
		family = "IPv6"
	}
	if len(cands) == 0 {
		return AdvertiseChoice{}, fmt.Errorf("p2p: no %s address on any interface that is up: pass --advertise", family)
	}
	reachable := func(src netip.Addr) (candidate, bool) {
		for _, c := range cands {
			if c.addr == src.Unmap() && c.rank == rankReachable {
				return c, true
			}
		}
		return candidate{}, false
	}
	for _, t := range targets {
		if src, err := route(t); err == nil {
			if c, ok := reachable(src); ok {
				return AdvertiseChoice{c.addr, c.iface, "the route to the --join target " + t + " leaves through it"}, nil
			}
		}
	}
	probe := defaultRouteProbe4
	if ipv6 {
		probe = defaultRouteProbe6
	}
	if src, err := route(probe); err == nil {
		if c, ok := reachable(src); ok {
			return AdvertiseChoice{c.addr, c.iface, "the default route leaves through it"}, nil
		}
	}
	best := cands[0]
	for _, c := range cands[1:] {
		if c.rank < best.rank {
			best = c
		}
	}
	reason := map[int]string{
		rankReachable: "first address not on a bridge, link-local or loopback interface",
		rankBridge:    "no address but bridge-like and loopback ones: other hosts probably cannot reach it; pass --advertise",
		rankLinkLocal: "no address but link-local and loopback ones: other hosts probably cannot reach it; pass --advertise",
		rankLoopback:  "no address but loopback: only this host can reach it; pass --advertise",
	}[best.rank]
	return AdvertiseChoice{best.addr, best.iface, reason}, nil
}

// systemInterfaces lists this host's interfaces and their addresses.
func systemInterfaces() ([]NetInterface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("p2p: listing network interfaces: %w", err)
	}
	var out []NetInterface
	for _, ifc := range ifs {
		ni := NetInterface{Name: ifc.Name, Loopback: ifc.Flags&net.FlagLoopback != 0, Down: ifc.Flags&net.FlagUp == 0}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
					ni.Addrs = append(ni.Addrs, ip.Unmap())
				}
			}
		}
		out = append(out, ni)
	}
	return out, nil
}

// routeTimeout bounds one route lookup (a name is resolved first).
const routeTimeout = 2 * time.Second

// systemRoute asks the kernel which source address reaches host, for IPv4
// or IPv6: it connects a UDP socket (which sends nothing) and reads its
// local address.
func systemRoute(ipv6 bool) RouteFunc {
	network := "udp4"
	if ipv6 {
		network = "udp6"
	}
	return func(host string) (netip.Addr, error) {
		d := net.Dialer{Timeout: routeTimeout}
		c, err := d.Dial(network, net.JoinHostPort(host, "9"))
		if err != nil {
			return netip.Addr{}, err
		}
		defer c.Close()
		ua, ok := c.LocalAddr().(*net.UDPAddr)
		if !ok {
			return netip.Addr{}, errors.New("not a UDP address")
		}
		return ua.AddrPort().Addr().Unmap(), nil
	}
}

// parseAdvertise checks an --advertise value: an IP address, or a
// multiaddr with an IP or DNS name and a TCP or QUIC port, without /p2p/.
func parseAdvertise(s string) (ip netip.Addr, m ma.Multiaddr, err error) {
	if ip, err := netip.ParseAddr(s); err == nil {
		if ip.IsUnspecified() || ip.IsMulticast() {
			return netip.Addr{}, nil, fmt.Errorf("p2p: --advertise %s: give an address other hosts can dial", s)
		}
		return ip.Unmap(), nil, nil
	}
	m, err = ma.NewMultiaddr(s)
	if err != nil {
		return netip.Addr{}, nil, fmt.Errorf("p2p: --advertise %q: want an IP address (10.0.0.5) or a multiaddr (/ip4/10.0.0.5/tcp/4001): %w", s, err)
	}
	if _, err := m.ValueForProtocol(ma.P_P2P); err == nil {
		return netip.Addr{}, nil, fmt.Errorf("p2p: --advertise %q: leave out /p2p/<id>, the node adds its own", s)
	}
	hasHost, hasPort := false, false
	for _, p := range []int{ma.P_IP4, ma.P_IP6, ma.P_DNS, ma.P_DNS4, ma.P_DNS6} {
		if _, err := m.ValueForProtocol(p); err == nil {
			hasHost = true
		}
	}
	for _, p := range []int{ma.P_TCP, ma.P_QUIC_V1} {
		if _, err := m.ValueForProtocol(p); err == nil {
			hasPort = true
		}
	}
	if !hasHost || !hasPort {
		return netip.Addr{}, nil, fmt.Errorf("p2p: --advertise %q: a multiaddr needs an address and a TCP or QUIC port, like /ip4/10.0.0.5/tcp/4001", s)
	}
	return netip.Addr{}, m, nil
}

// withIP returns base with its first component (the IP) replaced by ip.
func withIP(base ma.Multiaddr, ip netip.Addr) (ma.Multiaddr, error) {
	_, rest := ma.SplitFirst(base)
	proto := "/ip4/"
	if ip.Is6() {
		proto = "/ip6/"
	}
	return ma.NewMultiaddr(proto + ip.String() + rest.String())
}

// raftBase is the listen address the Raft address is built on: the first
// TCP one (it works with and without a private-network key), else the
// first.
func raftBase(listening []ma.Multiaddr) (ma.Multiaddr, error) {
	for _, a := range listening {
		if _, err := a.ValueForProtocol(ma.P_TCP); err == nil {
			return a, nil
		}
	}
	if len(listening) == 0 {
		return nil, errors.New("p2p: the host listens on no address")
	}
	return listening[0], nil
}

// advertised is the chosen address, the interface it is on ("" if not
// known) and why it was chosen; hidden are the addresses of this host that
// other hosts cannot reach (on bridges), left out of what identify and the
// DHT give out.
type advertised struct {
	addr   ma.Multiaddr
	iface  string
	reason string
	hidden map[netip.Addr]bool
}

// chooseRaftAddr picks the address to advertise (see the top of this
// file) from the addresses the host listens on (with their real ports).
func chooseRaftAddr(cfg Config, listening []ma.Multiaddr) (advertised, error) {
	base, err := raftBase(listening)
	if err != nil {
		return advertised{}, err
	}
	first, _ := ma.SplitFirst(base)
	if first == nil {
		return advertised{}, fmt.Errorf("p2p: listen address %s has no IP", base)
	}
	lip, err := netip.ParseAddr(first.Value())
	wildcard := err == nil && lip.IsUnspecified()
	// On 0.0.0.0 libp2p lists every interface's address: note the ones on
	// bridges, to leave them out of what identify gives peers.
	var list []NetInterface
	hidden := map[netip.Addr]bool{}
	if wildcard {
		ifaces := cfg.interfaces
		if ifaces == nil {
			ifaces = systemInterfaces
		}
		if list, err = ifaces(); err != nil {
			return advertised{}, err
		}
		for _, ifc := range list {
			for _, a := range ifc.Addrs {
				if r := rankOf(ifc, a.Unmap()); r == rankBridge || r == rankLinkLocal {
					hidden[a.Unmap()] = true
				}
			}
		}
	}
	if cfg.Advertise != "" {
		ip, m, err := parseAdvertise(cfg.Advertise)
		if err != nil {
			return advertised{}, err
		}
		if m == nil {
			if m, err = withIP(base, ip); err != nil {
				return advertised{}, fmt.Errorf("p2p: --advertise %s: %w", cfg.Advertise, err)
			}
		}
		return advertised{addr: m, reason: "--advertise", hidden: hidden}, nil
	}
	if !wildcard {
		return advertised{addr: base, reason: "the one address --p2p-listen binds"}, nil
	}
	route := cfg.route
	if route == nil {
		route = systemRoute
	}
	c, err := ChooseAdvertiseAddr(list, lip.Is6(), cfg.RouteTargets, route(lip.Is6()))
	if err != nil {
		return advertised{}, err
	}
	m, err := withIP(base, c.Addr)
	if err != nil {
		return advertised{}, err
	}
	return advertised{addr: m, iface: c.Interface, reason: c.Reason, hidden: hidden}, nil
}

// advertisedAddrs is a libp2p AddrsFactory: it adds the advertised
// address (libp2p may not listen on it, as with a host IP forwarded to a
// pod) and leaves out the addresses no other host reaches this one at
// (bridges, Docker's default network, link-local), so that identify and
// the DHT give peers the address that works. (libp2p sorts the list after
// this, so "first" cannot be had; leaving the others out can.) Loopback
// addresses stay: identify gives them only to peers on this host.
func advertisedAddrs(adv *atomic.Pointer[advertised]) func([]ma.Multiaddr) []ma.Multiaddr {
	return func(addrs []ma.Multiaddr) []ma.Multiaddr {
		a := adv.Load()
		if a == nil {
			return addrs
		}
		out := make([]ma.Multiaddr, 0, len(addrs)+1)
		out = append(out, a.addr)
		for _, x := range addrs {
			if x.Equal(a.addr) || a.unreachable(x) {
				continue
			}
			out = append(out, x)
		}
		return out
	}
}

// unreachable reports whether m is an address of this host on a bridge
// or link-local network, which other hosts cannot reach.
func (a *advertised) unreachable(m ma.Multiaddr) bool {
	first, _ := ma.SplitFirst(m)
	if first == nil {
		return false
	}
	ip, err := netip.ParseAddr(first.Value())
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	return a.hidden[ip] || dockerDefaultNet.Contains(ip) || ip.IsLinkLocalUnicast()
}
