package p2p

import (
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"golang.org/x/sys/unix"
)

// boundAddr returns h's listen address that uses the protocol code (ma.P_TCP
// or ma.P_QUIC_V1), with the port the kernel gave it.
func boundAddr(t *testing.T, h *Host, code int) ma.Multiaddr {
	t.Helper()
	for _, a := range h.LibP2P().Network().ListenAddresses() {
		if _, err := a.ValueForProtocol(code); err == nil {
			return a
		}
	}
	t.Fatalf("host %s listens on no address with protocol %d", h.ID(), code)
	return nil
}

// TestListenPortInUse starts a second host on the TCP or QUIC port of a
// first one (libp2p would share it through SO_REUSEPORT and the two would
// then dial themselves), and on a port a plain socket of another program
// holds: NewHost must refuse, naming the port and the flag to change.
func TestListenPortInUse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		listen string
		code   int
		want   string // %s is the host:port
	}{
		{name: "tcp", listen: "/ip4/127.0.0.1/tcp/0", code: ma.P_TCP, want: "p2p port %s is in use by another process: pass --p2p-listen"},
		{name: "quic", listen: "/ip4/127.0.0.1/udp/0/quic-v1", code: ma.P_QUIC_V1, want: "p2p port %s (UDP) is in use by another process: pass --p2p-listen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			first := newTestHost(t, func(c *Config) { c.ListenAddrs = []string{tt.listen} })
			taken := boundAddr(t, first, tt.code)
			cfg := testConfig(t, t.TempDir())
			cfg.ListenAddrs = []string{taken.String()}
			second, err := NewHost(cfg)
			if err == nil {
				_ = second.Close()
				t.Fatalf("a second host started on %s, the port of the first", taken)
			}
			_, hostPort, _ := manet.DialArgs(taken)
			if want := strings.Replace(tt.want, "%s", hostPort, 1); !strings.Contains(err.Error(), want) {
				t.Errorf("NewHost on a taken port: %v\nwant it to say %q", err, want)
			}
		})
	}
	// The host's own sockets must be exclusive too: a program that asks
	// for SO_REUSEPORT (as libp2p does by default) must not share them.
	t.Run("reuseport socket", func(t *testing.T) {
		t.Parallel()
		h := newTestHost(t, nil)
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}); err != nil {
				return err
			}
			return serr
		}}
		for _, code := range []int{ma.P_TCP, ma.P_QUIC_V1} {
			network, hostPort, err := manet.DialArgs(boundAddr(t, h, code))
			if err != nil {
				t.Fatal(err)
			}
			var c io.Closer
			if code == ma.P_TCP {
				c, err = lc.Listen(context.Background(), network, hostPort)
			} else {
				c, err = lc.ListenPacket(context.Background(), network, hostPort)
			}
			if err == nil {
				_ = c.Close()
				t.Errorf("a socket with SO_REUSEPORT bound %s %s, which the host listens on", network, hostPort)
			}
		}
	})
	t.Run("plain socket", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		port := ln.Addr().(*net.TCPAddr).Port
		cfg := testConfig(t, t.TempDir())
		// TCP taken, QUIC free: the host must not start on QUIC alone.
		cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/" + strconv.Itoa(port), "/ip4/127.0.0.1/udp/" + strconv.Itoa(port) + "/quic-v1"}
		h, err := NewHost(cfg)
		if err == nil {
			_ = h.Close()
			t.Fatalf("host started with its TCP port %d held by another socket", port)
		}
		if want := "p2p port " + ln.Addr().String() + " is in use by another process: pass --p2p-listen"; !strings.Contains(err.Error(), want) {
			t.Errorf("NewHost: %v\nwant it to say %q", err, want)
		}
	})
}
