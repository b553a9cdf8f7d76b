package p2p

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/libp2p/go-libp2p/core/host"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Why the listen sockets must be exclusive: libp2p's TCP transport sets
// SO_REUSEPORT by default (to dial from the listen port, for NAT
// traversal), so a second meshreg given the same --p2p-listen would start
// without error, share the port with the first, and each would then reach
// itself when dialing the other. NewHost turns that off
// (tcp.DisableReuseport); a registry cluster has no use for hole punching.
// libp2p's QUIC sockets do not set SO_REUSEPORT (its "reuse" shares one
// socket between listening and dialing inside the process).

// checkPortsFree binds, then releases, every listen address that names a
// port (not 0), with no SO_REUSEPORT: a port another process holds fails
// here with an error that says which one and what to do, instead of libp2p
// starting on the addresses that are free (it fails only when every one
// does) or sharing a port through SO_REUSEPORT.
func checkPortsFree(addrs []string) error {
	var errs []error
	for _, s := range addrs {
		m, err := ma.NewMultiaddr(s)
		if err != nil {
			continue // Validate reports it
		}
		network, hostPort, err := manet.DialArgs(m)
		if err != nil {
			continue
		}
		if _, port, err := net.SplitHostPort(hostPort); err != nil || port == "0" {
			continue
		}
		switch network {
		case "tcp", "tcp4", "tcp6":
			ln, err := net.Listen(network, hostPort)
			if err != nil {
				errs = append(errs, listenError(hostPort, "", err))
				continue
			}
			_ = ln.Close()
		case "udp", "udp4", "udp6":
			pc, err := net.ListenPacket(network, hostPort)
			if err != nil {
				errs = append(errs, listenError(hostPort, " (UDP)", err))
				continue
			}
			_ = pc.Close()
		}
	}
	return errors.Join(errs...)
}

// listenError words a failure to bind hostPort. It wraps err, so a
// port in use is errors.Is(err, syscall.EADDRINUSE).
func listenError(hostPort, proto string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("p2p: p2p port %s%s is in use by another process: pass --p2p-listen with a free port (is another meshreg running?): %w",
			hostPort, proto, err)
	}
	return fmt.Errorf("p2p: cannot listen on %s%s: %w (check --p2p-listen)", hostPort, proto, err)
}

// checkAllListening fails when libp2p listens on fewer addresses than it
// was given: it starts as long as one of them works, and a node reachable
// on only part of its addresses fails later in ways that are hard to read.
func checkAllListening(h host.Host, want []string) error {
	got := h.Network().ListenAddresses()
	if len(got) >= len(want) {
		return nil
	}
	return fmt.Errorf("p2p: listening on %v only, of %v: check --p2p-listen (a port may be in use by another process)", got, want)
}
