package p2p

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"go.uber.org/goleak"

	"github.com/meshreg/meshreg/testnet/tlog"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogger sends logs to t.Log, so they show only when a test fails.
func testLogger(t testing.TB) *slog.Logger { return tlog.Logger(t, slog.LevelDebug) }

// testConfig listens on loopback TCP and QUIC with ephemeral ports.
func testConfig(t testing.TB, dir string) Config {
	cfg := DefaultConfig()
	cfg.DataDir = dir
	cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
	cfg.Logger = testLogger(t)
	return cfg
}

// newTestHost starts a host in a fresh directory, closed when the test ends.
// edit, if not nil, changes the config first.
func newTestHost(t testing.TB, edit func(*Config)) *Host {
	t.Helper()
	cfg := testConfig(t, t.TempDir())
	if edit != nil {
		edit(&cfg)
	}
	h, err := NewHost(cfg)
	if err != nil {
		t.Fatalf("NewHost: %v", err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return h
}

// addrOf returns h's first full multiaddr that uses the transport protocol
// code (ma.P_TCP or ma.P_QUIC_V1).
func addrOf(t testing.TB, h *Host, code int) string {
	t.Helper()
	for _, a := range h.Addrs() {
		if _, err := a.ValueForProtocol(code); err == nil {
			return a.String()
		}
	}
	t.Fatalf("host %s has no address with protocol %d: %v", h.ID(), code, h.Addrs())
	return ""
}

// echoProtocol is a test protocol whose handler echoes one line back.
const echoProtocol protocol.ID = "/meshreg/test/echo/1.0.0"

func serveEcho(h *Host) {
	h.LibP2P().SetStreamHandler(echoProtocol, func(s network.Stream) {
		defer s.Close()
		_, _ = io.Copy(s, s)
	})
}

// echo opens an echo stream from a to b within timeout and checks the reply.
func echo(ctx context.Context, a *Host, b peer.ID) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := a.LibP2P().NewStream(ctx, b, echoProtocol)
	if err != nil {
		return err
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	if _, err := s.Write([]byte("ping")); err != nil {
		return err
	}
	if err := s.CloseWrite(); err != nil {
		return err
	}
	got, err := io.ReadAll(s)
	if err != nil {
		return err
	}
	if string(got) != "ping" {
		return io.ErrUnexpectedEOF
	}
	return nil
}

// writeSwarmKey writes a random key in libp2p's swarm.key format.
func writeSwarmKey(t testing.TB) (path string, key []byte) {
	t.Helper()
	key = make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "swarm.key")
	body := "/key/swarm/psk/1.0.0/\n/base16/\n" + hex.EncodeToString(key) + "\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, key
}
