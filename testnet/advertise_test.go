package testnet_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/meshreg/meshreg/node"
	"github.com/meshreg/meshreg/testnet"
)

// forwardTCP accepts on listenIP (a fresh port) and pipes every connection
// to target, as a host port forwarded to a pod does. It stops when the test
// ends and returns the address it listens on.
func forwardTCP(t *testing.T, listenIP, target string) *net.TCPAddr {
	t.Helper()
	ln, err := net.Listen("tcp", listenIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				in.Close()
				continue
			}
			track(in)
			track(out)
			wg.Add(2)
			go func() { defer wg.Done(); _, _ = io.Copy(out, in); out.Close() }()
			go func() { defer wg.Done(); _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().(*net.TCPAddr)
}

// TestAdvertisedRaftAddress runs two nodes that listen on one address and
// are reached at another (a forwarded port, as a host IP forwarded to a
// pod): each is told its address with --advertise. The status of each
// node and the Raft configuration must hold the advertised addresses, and
// the second node must join through the first one's.
func TestAdvertisedRaftAddress(t *testing.T) {
	t.Parallel()
	const size = 2
	advertised := make([]string, size)
	nodes := testnet.StartInProcessCluster(t, size, func(i int, c *node.Config) {
		listen, err := testnet.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(listen)
		fwd := forwardTCP(t, fmt.Sprintf("127.0.0.%d", 2+i), listen)
		c.P2P.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/" + port}
		advertised[i] = fmt.Sprintf("/ip4/%s/tcp/%d", fwd.IP, fwd.Port)
		c.P2P.Advertise = advertised[i]
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := map[string]string{} // peer id → Raft address
	for i, n := range nodes {
		id := n.PeerID().String()
		want[id] = advertised[i] + "/p2p/" + id
		st, err := n.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.RaftAddress != want[id] {
			t.Errorf("node %d: status raft_address = %s, want %s", i, st.RaftAddress, want[id])
		}
	}
	for i, n := range nodes {
		st, err := n.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Raft.Members) != size {
			t.Fatalf("node %d: %d members in the Raft configuration, want %d", i, len(st.Raft.Members), size)
		}
		for _, m := range st.Raft.Members {
			if m.Address != want[m.ID] {
				t.Errorf("node %d: member %s has Raft address %s, want %s", i, m.ID, m.Address, want[m.ID])
			}
		}
	}
}
