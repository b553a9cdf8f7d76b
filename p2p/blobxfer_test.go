package p2p

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/opencontainers/go-digest"
)

// serveBytes makes h serve one blob from memory.
func serveBytes(h *Host, blob []byte) digest.Digest {
	d := digest.FromBytes(blob)
	h.ServeBlobs(5*time.Second, func(ctx context.Context, from peer.ID, req BlobRequest) (BlobAnswer, io.ReadCloser) {
		if req.Digest != d {
			return BlobAnswer{Status: BlobNotFound}, nil
		}
		return BlobAnswer{Status: BlobOK, Size: int64(len(blob))}, io.NopCloser(bytes.NewReader(blob[req.Offset:]))
	})
	return d
}

func TestFetchBlobFromAnOffset(t *testing.T) {
	t.Parallel()
	holder, fetcher := newTestHost(t, nil), newTestHost(t, nil)
	blob := make([]byte, 3<<20+7)
	rand.Read(blob)
	d := serveBytes(holder, blob)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := fetcher.Connect(ctx, addrOf(t, holder, ma.P_TCP)); err != nil {
		t.Fatal(err)
	}

	answer, body, err := fetcher.FetchBlob(ctx, holder.ID(), BlobRequest{Digest: d, Offset: 1 << 20}, 5*time.Second)
	if err != nil || answer.Status != BlobOK {
		t.Fatalf("FetchBlob = %+v, %v", answer, err)
	}
	got, err := io.ReadAll(body)
	body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if answer.Size != int64(len(blob)) || !bytes.Equal(got, blob[1<<20:]) {
		t.Fatalf("got size %d and %d bytes from offset 1 MiB; want size %d and the tail", answer.Size, len(got), len(blob))
	}

	answer, body, err = fetcher.FetchBlob(ctx, holder.ID(), BlobRequest{Digest: digest.FromString("other")}, 5*time.Second)
	if err != nil || answer.Status != BlobNotFound || body != nil {
		t.Fatalf("FetchBlob of an unknown blob = %+v, %v, %v", answer, body, err)
	}
}

// TestBusyRedirectCarriesAddresses: a busy holder names the peer it is
// serving and that peer's addresses, so a fetcher that never met it (a
// follower of the metadata meeting another) can dial it; addresses given
// for a peer the answer does not name are not kept.
func TestBusyRedirectCarriesAddresses(t *testing.T) {
	t.Parallel()
	busy, relay, fetcher, other := newTestHost(t, nil), newTestHost(t, nil), newTestHost(t, nil), newTestHost(t, nil)
	blob := make([]byte, 64<<10)
	rand.Read(blob)
	d := serveBytes(relay, blob)
	otherAddr := addrOf(t, other, ma.P_TCP)
	busy.ServeBlobs(5*time.Second, func(ctx context.Context, from peer.ID, req BlobRequest) (BlobAnswer, io.ReadCloser) {
		return BlobAnswer{Status: BlobBusy, Redirect: []string{relay.ID().String()}}, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// busy knows relay (it serves it); fetcher knows only busy.
	if err := relay.Connect(ctx, addrOf(t, busy, ma.P_TCP)); err != nil {
		t.Fatal(err)
	}
	if err := fetcher.Connect(ctx, addrOf(t, busy, ma.P_TCP)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := fetcher.FetchBlob(ctx, relay.ID(), BlobRequest{Digest: d}, 5*time.Second); err == nil {
		t.Fatal("the fetcher dialled a peer it knows no address of: the test proves nothing")
	}
	answer, _, err := fetcher.FetchBlob(ctx, busy.ID(), BlobRequest{Digest: d}, 5*time.Second)
	if err != nil || answer.Status != BlobBusy || len(answer.RedirectAddrs) == 0 {
		t.Fatalf("FetchBlob from the busy holder = %+v, %v; want busy with the relay's addresses", answer, err)
	}
	answer, body, err := fetcher.FetchBlob(ctx, relay.ID(), BlobRequest{Digest: d}, 5*time.Second)
	if err != nil || answer.Status != BlobOK {
		t.Fatalf("FetchBlob from the relay named by the redirect = %+v, %v", answer, err)
	}
	got, err := io.ReadAll(body)
	body.Close()
	if err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("read %d bytes, %v; want the blob", len(got), err)
	}
	// A hostile answer cannot plant addresses for peers it does not name.
	fetcher.keepRedirectAddrs(BlobAnswer{Status: BlobBusy, Redirect: []string{relay.ID().String()}, RedirectAddrs: []string{otherAddr}})
	if addrs := fetcher.h.Peerstore().Addrs(other.ID()); len(addrs) != 0 {
		t.Errorf("kept %v for a peer the redirect does not name", addrs)
	}
}

func TestFindProvidersThroughTheDHT(t *testing.T) {
	t.Parallel()
	a, b, c := newTestHost(t, nil), newTestHost(t, nil), newTestHost(t, nil)
	var routers []*Routing
	for _, h := range []*Host{a, b, c} {
		r, err := NewRouting(h, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		routers = append(routers, r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// a and c know only b; the DHT must carry c's question to a's record.
	for _, h := range []*Host{a, c} {
		if err := h.Connect(ctx, addrOf(t, b, ma.P_TCP)); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range routers {
		for r.RoutingTableSize() == 0 {
			if ctx.Err() != nil {
				t.Fatal("the routing table stayed empty")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	d := digest.FromString("a blob only a holds")
	if err := routers[0].Provide(ctx, d); err != nil {
		t.Fatal(err)
	}
	found, err := routers[2].FindProviders(ctx, d, 5)
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0] != a.ID() {
		t.Fatalf("providers of %s seen from c = %v, want [%s]", d, found, a.ID())
	}
	if found, _ := routers[2].FindProviders(ctx, digest.FromString("nobody has this"), 5); len(found) != 0 {
		t.Fatalf("providers of an unknown blob = %v", found)
	}
}

func TestDigestCIDWrapsTheDigest(t *testing.T) {
	d := digest.FromString("hello")
	c, err := DigestCID(d)
	if err != nil {
		t.Fatal(err)
	}
	// The CIDv1 raw sha2-256 of "hello", as `ipfs add --raw-leaves --cid-version 1` names it.
	if got, want := c.String(), "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"; got != want {
		t.Fatalf("DigestCID(%s) = %s, want %s", d, got, want)
	}
	if _, err := DigestCID("md5:abcd"); err == nil {
		t.Fatal("DigestCID of an md5 digest: want an error")
	}
}
