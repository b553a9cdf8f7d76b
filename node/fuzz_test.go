package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/node/replicate"
	"github.com/meshreg/meshreg/p2p"
	"github.com/meshreg/meshreg/testnet/tlog"
)

// FuzzControlMessages decodes arbitrary bytes as each JSON message of the
// node-to-node protocols, the way their handlers and callers decode them:
// never a panic, and what decodes encodes back to the same message.
func FuzzControlMessages(f *testing.F) {
	id := "12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf"
	for _, v := range []any{
		memberRequest{Op: "join", ID: id, Address: "/ip4/127.0.0.1/tcp/4001/p2p/" + id},
		memberRequest{Op: "remove", ID: id},
		memberResult{Error: "leader: no such member"},
		forwardResult{Code: "not_found", Msg: "consensus: not found", Index: 42},
		replicate.HasRequest{Digests: []digest.Digest{cfgDigest, layerDigest}},
		replicate.HasResult{Has: []bool{true, false}},
		replicate.Request{Digest: cfgDigest, Size: 2, From: []string{id}},
		replicate.Result{Error: "bad request"},
		infoAnswer{peerLabels: peerLabels{Region: "eu", Zone: "eu-1a"}, Load: 1.5},
		map[string]string{id: "/ip4/127.0.0.1/tcp/4001/p2p/" + id},
		map[string]uint64{"index": 7},
		p2p.BlobRequest{Digest: cfgDigest, Offset: 10, CompleteOnly: true},
		p2p.BlobAnswer{Status: p2p.BlobBusy, Size: 2, Redirect: []string{id}, Depth: 1},
	} {
		b, err := json.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"has":[true,false,true,true,true,true,true,true,true,true,true]}`))
	f.Add([]byte(`{"digests":["sha256:` + strings.Repeat("0", 64) + `", "x", null]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		roundTrip(t, b, &memberRequest{}, &memberRequest{})
		roundTrip(t, b, &memberResult{}, &memberResult{})
		roundTrip(t, b, &forwardResult{}, &forwardResult{})
		roundTrip(t, b, &replicate.HasRequest{}, &replicate.HasRequest{})
		roundTrip(t, b, &replicate.HasResult{}, &replicate.HasResult{})
		roundTrip(t, b, &replicate.Request{}, &replicate.Request{})
		roundTrip(t, b, &replicate.Result{}, &replicate.Result{})
		roundTrip(t, b, &infoAnswer{}, &infoAnswer{})
		roundTrip(t, b, &map[string]string{}, &map[string]string{})
		roundTrip(t, b, &p2p.BlobRequest{}, &p2p.BlobRequest{})
		roundTrip(t, b, &p2p.BlobAnswer{}, &p2p.BlobAnswer{})
	})
}

// roundTrip decodes b into v; when that works, v must encode to bytes that
// decode into again, which encodes to the same bytes: what one side
// decodes, the other side reads the same. (Equality of the values is too
// strict: an empty list and an absent one are the same message.)
func roundTrip(t *testing.T, b []byte, v, again any) {
	t.Helper()
	if json.Unmarshal(b, v) != nil {
		return
	}
	enc, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("%T decoded from %q does not encode: %v", v, b, err)
	}
	if err := json.Unmarshal(enc, again); err != nil {
		t.Fatalf("%T: %q re-encoded as %q, which does not decode: %v", v, b, enc, err)
	}
	if enc2, err := json.Marshal(again); err != nil || !bytes.Equal(enc, enc2) {
		t.Fatalf("%T: %q decoded as %+v and encoded as %q, which round-trips to %q (%v)", v, b, v, enc, enc2, err)
	}
}

// FuzzServeControl sends arbitrary requests from a peer that is not a
// member to the handlers of the node's control protocols that a stranger
// may reach (hello, has, replicate, info, index, blob), on a real one-node
// cluster: never a panic, an answer the caller can decode, and nothing
// served or fetched for a non-member.
func FuzzServeControl(f *testing.F) {
	n := openFuzzNode(f)
	stranger := strangerID(f)
	self := n.host.ID().String()
	for _, s := range []struct {
		proto byte
		msg   string
	}{
		{0, `{"seen":{"` + stranger.String() + `":"/ip4/127.0.0.1/tcp/1/p2p/` + stranger.String() + `"}}`},
		{0, `{"seen":{"` + self + `":"/ip4/10.0.0.1/tcp/4001/p2p/` + self + `"},"proof":"00"}`},
		{1, `{"digests":["` + cfgDigest + `","` + layerDigest + `"]}`},
		{2, `{"digest":"` + cfgDigest + `","size":2,"from":["` + stranger.String() + `"]}`},
		{3, ``},
		{4, ``},
		{5, `{"digest":"` + cfgDigest + `","offset":0,"no_redirect":true}`},
		{5, `{"digest":"sha256:zz","offset":-1}`},
	} {
		f.Add(s.proto, []byte(s.msg))
	}
	f.Fuzz(func(t *testing.T, proto byte, b []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		switch proto % 6 {
		case 0:
			out := n.serveHello(ctx, stranger, b)
			var theirs helloMessage
			if err := json.Unmarshal(out, &theirs); err != nil {
				t.Fatalf("hello answer %q does not decode: %v", out, err)
			}
			// A stranger proves neither the cluster key nor the join
			// token: it learns no peer.
			if len(theirs.Seen) != 0 {
				t.Fatalf("hello from a stranger answered with %d peers: %q", len(theirs.Seen), out)
			}
			for id, addr := range theirs.Seen {
				if _, err := peer.Decode(id); err != nil || !strings.HasSuffix(addr, "/p2p/"+id) {
					t.Fatalf("hello answer names %q at %q", id, addr)
				}
			}
		case 1:
			if out := n.replicas.ServeHas(ctx, stranger, b); len(out) != 0 {
				t.Fatalf("has from a non-member answered %q", out)
			}
		case 2:
			out := n.replicas.ServeReplicate(ctx, stranger, b)
			var res replicate.Result
			if err := json.Unmarshal(out, &res); err != nil || res.Error == "" {
				t.Fatalf("replicate from a non-member answered %q (%v)", out, err)
			}
			inflight := n.fetches.InProgress()
			if inflight != 0 {
				t.Fatalf("replicate from a non-member started %d fetches", inflight)
			}
		case 3:
			out := n.serveInfo(ctx, stranger, b)
			var a infoAnswer
			if err := json.Unmarshal(out, &a); err != nil {
				t.Fatalf("info answer %q does not decode: %v", out, err)
			}
		case 4:
			out := n.serveIndex(ctx, stranger, b)
			var res struct {
				Index uint64 `json:"index"`
				Error string `json:"error"`
			}
			if err := json.Unmarshal(out, &res); err != nil {
				t.Fatalf("index answer %q does not decode: %v", out, err)
			}
		case 5:
			var req p2p.BlobRequest
			if json.Unmarshal(b, &req) != nil {
				return // ServeBlobs resets the stream before the handler runs
			}
			answer, body := n.serveBlob(ctx, stranger, req)
			if body != nil {
				body.Close()
			}
			if answer.Status != p2p.BlobRefused || answer.Message == "" {
				t.Fatalf("blob request %+v from a non-member answered %+v", req, answer)
			}
		}
	})
}

// openFuzzNode opens a real one-node cluster (blobstore, badger, Raft,
// libp2p on loopback) in a temporary directory.
func openFuzzNode(f *testing.F) *Node {
	f.Helper()
	cfg := DefaultConfig()
	cfg.DataDir = f.TempDir()
	cfg.P2P.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	n, err := Open(cfg, tlog.Logger(f, slog.LevelError))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		if err := n.Close(); err != nil {
			f.Errorf("closing node: %v", err)
		}
	})
	return n
}

// strangerID is the peer id of a key that no cluster knows.
func strangerID(f *testing.F) peer.ID {
	f.Helper()
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		f.Fatal(err)
	}
	return id
}
