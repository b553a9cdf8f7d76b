package node

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/blobstore"
	"github.com/meshreg/meshreg/consensus"
	"github.com/meshreg/meshreg/node/nodefake"
	"github.com/meshreg/meshreg/p2p"
	"github.com/meshreg/meshreg/testnet/tlog"
)

// Conformance suites: every implementation of a seam (seams.go) passes the
// same tests, the real one and the in-memory fake of package nodefake, so
// what node's unit tests learn over the fakes holds over the real parts.

var (
	_ Metadata  = (*nodefake.Meta)(nil)
	_ Transport = (*nodefake.Transport)(nil)
	_ Providers = (*nodefake.Routing)(nil)
	_ BlobStore = adaptBlobs[*nodefake.Partial, *nodefake.Upload]{}
)

func TestMetadataConformance(t *testing.T) {
	t.Parallel()
	t.Run("consensus", func(t *testing.T) {
		t.Parallel()
		cfg := consensus.DefaultConfig()
		cfg.Dir = t.TempDir()
		cfg.NodeID = "node-1"
		cfg.Logger = tlog.Logger(t, slog.LevelWarn)
		s, err := consensus.Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		testMetadata(t, s, "node-1")
	})
	t.Run("nodefake", func(t *testing.T) {
		t.Parallel()
		testMetadata(t, nodefake.NewCluster().Join("node-1", "/ip4/127.0.0.1/tcp/1"), "node-1")
	})
}

// testMetadata checks m, the only member (and leader) of its cluster.
func testMetadata(t *testing.T, m Metadata, self string) {
	ctx := t.Context()
	deadline := time.Now().Add(10 * time.Second)
	for !m.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("never ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := m.Status(); st.State != consensus.Leader || st.LeaderID != self {
		t.Errorf("status of the only member: state %q, leader %q", st.State, st.LeaderID)
	}
	if ms, err := m.Members(); err != nil || !slices.ContainsFunc(ms, func(x consensus.Member) bool { return x.ID == self }) {
		t.Errorf("members %v, %v: want %s among them", ms, err, self)
	}
	// Watch: the current view, then a view after each membership change.
	view, views := m.Watch(ctx)
	if view.Role != consensus.Leader || view.LeaderID != self {
		t.Errorf("Watch: role %q, leader %q; want %s leading", view.Role, view.LeaderID, self)
	}
	if err := m.AddNonvoter(ctx, "node-watched", "/ip4/127.0.0.1/tcp/9/p2p/node-watched"); err != nil {
		t.Fatalf("AddNonvoter: %v", err)
	}
	select {
	case v := <-views:
		if v.MembershipIndex <= view.MembershipIndex {
			t.Errorf("Watch after a member was added: membership index %d, was %d", v.MembershipIndex, view.MembershipIndex)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch delivered nothing within 10s of a member added")
	}
	if err := m.RemoveServer(ctx, "node-watched"); err != nil {
		t.Fatalf("RemoveServer: %v", err)
	}
	// WaitApplied: at once for what is applied; until ctx ends for what is not.
	if err := m.WaitApplied(ctx, m.AppliedIndex()); err != nil {
		t.Errorf("WaitApplied(applied index): %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	if err := m.WaitApplied(short, m.AppliedIndex()+1000); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitApplied(an index never written) = %v; want the context's deadline", err)
	}
	cancel()
	// ReadIndex on the leader covers what it applied.
	if idx, err := m.ReadIndex(ctx); err != nil || idx < m.AppliedIndex() {
		t.Errorf("ReadIndex on the leader = %d, %v; want at least the applied index %d", idx, err, m.AppliedIndex())
	}
	notFound := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, consensus.ErrNotFound) {
			t.Errorf("%s: %v, want ErrNotFound", what, err)
		}
	}
	const repo = "conf/app"
	body := []byte(`{"schemaVersion":2}`)
	d := digest.FromBytes(body)
	_, err := m.ResolveTag(repo, "v1")
	notFound("tag before any write", err)
	_, err = m.Manifest(repo, d)
	notFound("manifest before any write", err)
	_, err = m.Tags(repo, "", -1)
	notFound("tags of a repository that does not exist", err)
	_, err = m.BlobLink(repo, d)
	notFound("blob link before any write", err)

	before := m.AppliedIndex()
	rec := consensus.ManifestRecord{Repo: repo, Digest: d, MediaType: "application/vnd.oci.image.manifest.v1+json", Body: body}
	if err := m.CheckPutManifest(rec, "v1", "v2"); err != nil {
		t.Fatalf("CheckPutManifest: %v", err)
	}
	if err := m.PutManifest(ctx, rec, "v1", "v2"); err != nil {
		t.Fatalf("PutManifest: %v", err)
	}
	if m.AppliedIndex() <= before {
		t.Errorf("applied index %d after a write, was %d", m.AppliedIndex(), before)
	}
	if got, err := m.ResolveTag(repo, "v1"); err != nil || got != d {
		t.Errorf("ResolveTag = %s, %v; want %s", got, err, d)
	}
	if got, err := m.Manifest(repo, d); err != nil || !bytes.Equal(got.Body, body) || got.MediaType != rec.MediaType {
		t.Errorf("Manifest = %+v, %v", got, err)
	}
	for _, tc := range []struct {
		last string
		n    int
		want []string
	}{{"", -1, []string{"v1", "v2"}}, {"v1", -1, []string{"v2"}}, {"", 1, []string{"v1"}}} {
		if got, err := m.Tags(repo, tc.last, tc.n); err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("Tags(after %q, %d) = %v, %v; want %v", tc.last, tc.n, got, err, tc.want)
		}
	}
	if got, err := m.Repositories("", -1); err != nil || !slices.Equal(got, []string{repo}) {
		t.Errorf("Repositories = %v, %v", got, err)
	}

	// A referrer is listed under its subject.
	refBody := []byte(`{"schemaVersion":2,"subject":1}`)
	ref := consensus.ManifestRecord{Repo: repo, Digest: digest.FromBytes(refBody), MediaType: rec.MediaType, Body: refBody,
		Subject: d, ArtifactType: "application/x-sig"}
	if err := m.PutManifest(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if got, err := m.Referrers(repo, d, "", "", -1); err != nil || len(got) != 1 || got[0].Digest != ref.Digest || got[0].ArtifactType != ref.ArtifactType {
		t.Errorf("Referrers = %+v, %v; want the one referrer", got, err)
	}
	if got, err := m.Referrers(repo, d, "application/other", "", -1); err != nil || len(got) != 0 {
		t.Errorf("Referrers of another type = %+v, %v; want none", got, err)
	}

	if err := m.DeleteTag(ctx, repo, "v2"); err != nil {
		t.Fatal(err)
	}
	_, err = m.ResolveTag(repo, "v2")
	notFound("deleted tag", err)
	notFound("deleting a deleted tag", m.DeleteTag(ctx, repo, "v2"))

	if err := m.LinkBlob(ctx, repo, d, 5); err != nil {
		t.Fatal(err)
	}
	if got, err := m.BlobLink(repo, d); err != nil || got != 5 {
		t.Errorf("BlobLink = %d, %v; want 5", got, err)
	}
	for _, md := range []digest.Digest{d, ref.Digest} {
		if err := m.DeleteManifest(ctx, repo, md); err != nil {
			t.Fatal(err)
		}
	}
	_, err = m.ResolveTag(repo, "v1")
	notFound("tag of a deleted manifest", err)
	_, err = m.Manifest(repo, d)
	notFound("deleted manifest", err)
	notFound("deleting a deleted manifest", m.DeleteManifest(ctx, repo, d))
	if got, err := m.Repositories("", -1); err != nil || !slices.Equal(got, []string{repo}) {
		t.Errorf("Repositories with a blob link left = %v, %v", got, err)
	}
	if err := m.UnlinkBlob(ctx, repo, d); err != nil {
		t.Fatal(err)
	}
	_, err = m.BlobLink(repo, d)
	notFound("unlinked blob", err)
	notFound("unlinking an unlinked blob", m.UnlinkBlob(ctx, repo, d))
	if got, err := m.Repositories("", -1); err != nil || len(got) != 0 {
		t.Errorf("Repositories once empty = %v, %v; want none", got, err)
	}
	if err := m.TransferLeadership(ctx); err == nil {
		t.Errorf("the only voter handed leadership to nobody")
	}
}

func TestTransportConformance(t *testing.T) {
	t.Parallel()
	t.Run("p2p", func(t *testing.T) {
		t.Parallel()
		host := func() Transport {
			cfg := p2p.DefaultConfig()
			cfg.DataDir = t.TempDir()
			cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
			cfg.Logger = tlog.Logger(t, slog.LevelWarn)
			h, err := p2p.NewHost(cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = h.Close() })
			return h
		}
		testTransport(t, host(), host())
	})
	t.Run("nodefake", func(t *testing.T) {
		t.Parallel()
		net := nodefake.NewNetwork()
		a, err := net.NewTransport()
		if err != nil {
			t.Fatal(err)
		}
		b, err := net.NewTransport()
		if err != nil {
			t.Fatal(err)
		}
		testTransport(t, a, b)
	})
}

// testTransport checks a and b, two fresh peers that do not know each
// other yet; b is closed at the end.
func testTransport(t *testing.T, a, b Transport) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for _, x := range []Transport{a, b} {
		if got, err := peer.IDFromPrivateKey(x.PrivateKey()); err != nil || got != x.ID() {
			t.Errorf("the identity key is that of %s (%v), not of %s", got, err, x.ID())
		}
		if !strings.HasSuffix(x.RaftAddress(), "/p2p/"+x.ID().String()) || len(x.Addrs()) == 0 ||
			!strings.HasSuffix(x.Addrs()[0].String(), "/p2p/"+x.ID().String()) {
			t.Errorf("addresses %v, raft %s: want full multiaddrs ending in /p2p/<id>", x.Addrs(), x.RaftAddress())
		}
	}
	if err := a.Connect(ctx, b.RaftAddress()); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if !a.Connected(b.ID()) {
		t.Errorf("not connected after Connect")
	}

	const echo, secret = protocol.ID("/conformance/echo/1"), protocol.ID("/conformance/secret/1")
	for _, p := range []protocol.ID{echo, secret} {
		b.HandleRequests(p, 1<<10, 5*time.Second, func(_ context.Context, from peer.ID, req []byte) []byte {
			return append([]byte(from.String()+":"), req...)
		})
	}
	b.SetAuthorizer(func(p peer.ID, proto protocol.ID) bool { return proto != secret })
	if got, err := a.Request(ctx, b.ID(), echo, []byte("hi"), 1<<10); err != nil || string(got) != a.ID().String()+":hi" {
		t.Errorf("Request = %q, %v; want the asker's id and the request back", got, err)
	}
	refused := b.RefusedStreams()
	if got, err := a.Request(ctx, b.ID(), secret, []byte("hi"), 1<<10); err == nil {
		t.Errorf("a refused protocol answered %q", got)
	}
	if b.RefusedStreams() <= refused {
		t.Errorf("refused streams %d, was %d: the refusal was not counted", b.RefusedStreams(), refused)
	}
	if _, err := a.Request(ctx, b.ID(), echo, []byte(strings.Repeat("x", 20)), 10); err == nil {
		t.Errorf("an answer over maxLen was accepted")
	}

	blob := []byte("0123456789")
	d := digest.FromBytes(blob)
	stalled := digest.FromString("stalled")
	stop := make(chan struct{})
	defer close(stop)
	b.ServeBlobs(time.Second, func(_ context.Context, _ peer.ID, req p2p.BlobRequest) (p2p.BlobAnswer, io.ReadCloser) {
		switch req.Digest {
		case d:
			return p2p.BlobAnswer{Status: p2p.BlobOK, Size: int64(len(blob))}, io.NopCloser(bytes.NewReader(blob[req.Offset:]))
		case stalled:
			return p2p.BlobAnswer{Status: p2p.BlobOK, Size: 100}, io.NopCloser(io.MultiReader(strings.NewReader("abc"),
				readerFunc(func([]byte) (int, error) { <-stop; return 0, io.EOF })))
		}
		return p2p.BlobAnswer{Status: p2p.BlobNotFound}, nil
	})
	answer, body, err := a.FetchBlob(ctx, b.ID(), p2p.BlobRequest{Digest: d, Offset: 3}, time.Second)
	if err != nil || answer.Status != p2p.BlobOK || answer.Size != int64(len(blob)) {
		t.Fatalf("FetchBlob = %+v, %v", answer, err)
	}
	got, err := io.ReadAll(body)
	body.Close()
	if err != nil || string(got) != "3456789" {
		t.Errorf("blob from offset 3 = %q, %v", got, err)
	}
	if answer, body, err := a.FetchBlob(ctx, b.ID(), p2p.BlobRequest{Digest: digest.FromString("none")}, time.Second); err != nil || answer.Status != p2p.BlobNotFound || body != nil {
		t.Errorf("FetchBlob of an unknown blob = %+v, %v, %v", answer, body, err)
	}
	answer, body, err = a.FetchBlob(ctx, b.ID(), p2p.BlobRequest{Digest: stalled}, 300*time.Millisecond)
	if err != nil || answer.Status != p2p.BlobOK {
		t.Fatalf("FetchBlob of the stalling blob = %+v, %v", answer, err)
	}
	start := time.Now()
	got, err = io.ReadAll(body)
	body.Close()
	if err == nil || string(got) != "abc" || time.Since(start) > 5*time.Second {
		t.Errorf("a stalled transfer gave %q, %v after %v; want the first bytes, then an error after the idle timeout", got, err, time.Since(start))
	}

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Request(ctx, b.ID(), echo, nil, 1<<10); err == nil {
		t.Errorf("a request to a closed peer succeeded")
	}
}

func TestProvidersConformance(t *testing.T) {
	t.Parallel()
	t.Run("p2p", func(t *testing.T) {
		t.Parallel()
		var hosts []*p2p.Host
		var rs []Providers
		for range 3 {
			cfg := p2p.DefaultConfig()
			cfg.DataDir = t.TempDir()
			cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
			cfg.Logger = tlog.Logger(t, slog.LevelWarn)
			h, err := p2p.NewHost(cfg)
			if err != nil {
				t.Fatal(err)
			}
			r, err := p2p.NewRouting(h, cfg.Logger)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = r.Close(); _ = h.Close() })
			hosts, rs = append(hosts, h), append(rs, r)
		}
		// The first and last know only the middle one: the DHT carries the
		// question across.
		for _, i := range []int{0, 2} {
			if err := hosts[i].Connect(t.Context(), hosts[1].RaftAddress()); err != nil {
				t.Fatal(err)
			}
		}
		testProviders(t, rs, []peer.ID{hosts[0].ID(), hosts[1].ID(), hosts[2].ID()})
	})
	t.Run("nodefake", func(t *testing.T) {
		t.Parallel()
		book := nodefake.NewProviderBook()
		ids := []peer.ID{"peer-a", "peer-b", "peer-c"}
		var rs []Providers
		for _, id := range ids {
			rs = append(rs, book.Routing(id))
		}
		testProviders(t, rs, ids)
	})
}

// testProviders checks three routings of one network, whose peers are ids.
func testProviders(t *testing.T, rs []Providers, ids []peer.ID) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for i, r := range rs {
		for r.RoutingTableSize() == 0 {
			if ctx.Err() != nil {
				t.Fatalf("routing %d: the routing table stayed empty", i)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	d := digest.FromString("a blob only the first holds")
	if err := rs[0].Provide(ctx, d); err != nil {
		t.Fatal(err)
	}
	if found, err := rs[2].FindProviders(ctx, d, 5); err != nil || !slices.Equal(found, ids[:1]) {
		t.Errorf("providers seen from the last = %v, %v; want [%s]", found, err, ids[0])
	}
	if found, _ := rs[2].FindProviders(ctx, digest.FromString("nobody has this"), 5); len(found) != 0 {
		t.Errorf("providers of an unknown blob = %v", found)
	}
}

// TestBlobStoreConformance checks the blob store on disk and the one in
// memory. Each subtest gets a fresh store and a hook that damages a held
// blob as a stray write to its file would.
func TestBlobStoreConformance(t *testing.T) {
	t.Parallel()
	t.Run("blobstore", func(t *testing.T) {
		t.Parallel()
		testBlobStore(t, func(t *testing.T) (BlobStore, func(digest.Digest)) {
			root := t.TempDir()
			s, err := blobstore.Open(root, tlog.Logger(t, slog.LevelWarn))
			if err != nil {
				t.Fatal(err)
			}
			return diskBlobs{s}, func(d digest.Digest) {
				enc := d.Encoded()
				path := filepath.Join(root, "blobs", string(d.Algorithm()), enc[:2], enc)
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				b[0] ^= 1
				if err := os.WriteFile(path, b, 0o600); err != nil {
					t.Fatal(err)
				}
				// The write's times may fall in the clock tick of the commit
				// (coarse file timestamps); an hour back, the stamp differs
				// for sure, as it does for any write a tick later.
				old := time.Now().Add(-time.Hour)
				if err := os.Chtimes(path, old, old); err != nil {
					t.Fatal(err)
				}
			}
		})
	})
	t.Run("nodefake", func(t *testing.T) {
		t.Parallel()
		testBlobStore(t, func(t *testing.T) (BlobStore, func(digest.Digest)) {
			s := nodefake.NewBlobs()
			return memBlobs(s), func(d digest.Digest) {
				if !s.Corrupt(d) {
					t.Fatalf("corrupting %s, which is not held", d)
				}
			}
		})
	})
}

// memBlobs is an in-memory blob store as the seam.
func memBlobs(s *nodefake.Blobs) BlobStore {
	return adaptBlobs[*nodefake.Partial, *nodefake.Upload]{s}
}

func testBlobStore(t *testing.T, open func(t *testing.T) (BlobStore, func(digest.Digest))) {
	for _, tc := range []struct {
		name string
		test func(t *testing.T, s BlobStore, corrupt func(digest.Digest))
	}{
		{"blobs", testBlobsPutAndRead},
		{"partial", testBlobsPartial},
		{"uploads", testBlobsUploads},
		{"corruption", testBlobsCorruption},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, corrupt := open(t)
			tc.test(t, s, corrupt)
		})
	}
}

func testBlobsPutAndRead(t *testing.T, s BlobStore, _ func(digest.Digest)) {
	ctx := t.Context()
	blob, d := randomBlob(30, 100<<10)
	if s.Held(d) {
		t.Fatal("an empty store holds a blob")
	}
	if _, _, err := s.OpenVerified(d); !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("OpenVerified of a missing blob: %v, want ErrNotFound", err)
	}
	if err := s.Verify(ctx, d, false, nil); !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("Verify of a missing blob: %v, want ErrNotFound", err)
	}
	if _, err := s.Put(d, bytes.NewReader(blob[1:])); !errors.Is(err, blobstore.ErrDigestMismatch) || s.Held(d) {
		t.Errorf("Put of the wrong bytes: %v, held %v; want ErrDigestMismatch and nothing kept", err, s.Held(d))
	}
	for _, bad := range []digest.Digest{"sha256:../../etc/passwd", "md5:d41d8cd98f00b204e9800998ecf8427e", ""} {
		if _, err := s.Put(bad, bytes.NewReader(nil)); err == nil || s.Held(bad) {
			t.Errorf("Put(%q) = %v, held %v; want a malformed digest refused", bad, err, s.Held(bad))
		}
	}
	if n, err := s.Put(d, bytes.NewReader(blob)); err != nil || n != int64(len(blob)) {
		t.Fatalf("Put = %d, %v", n, err)
	}
	if n, err := s.Put(d, bytes.NewReader(blob)); err != nil || n != int64(len(blob)) {
		t.Errorf("Put of a blob held already = %d, %v; want it to succeed", n, err)
	}
	if !s.Held(d) || s.Verify(ctx, d, true, nil) != nil {
		t.Errorf("a blob just put is not held, or fails verification")
	}
	var throttled int
	if err := s.Verify(ctx, d, true, func(n int) error { throttled += n; return nil }); err != nil || throttled != len(blob) {
		t.Errorf("a forced Verify throttled %d bytes, %v; want the %d of the blob", throttled, err, len(blob))
	}
	stop := errors.New("slow down")
	if err := s.Verify(ctx, d, true, func(int) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("Verify with a failing throttle: %v, want the throttle's error", err)
	}
	if count, bytes := s.Stats(); count != 1 || bytes != int64(len(blob)) {
		t.Errorf("Stats = %d blobs, %d bytes", count, bytes)
	}
	r, size, err := s.OpenVerified(d)
	if err != nil || size != int64(len(blob)) {
		t.Fatalf("OpenVerified = %d, %v", size, err)
	}
	got, _ := io.ReadAll(r)
	r.Close()
	if !bytes.Equal(got, blob) {
		t.Errorf("OpenVerified read %d bytes, not the blob", len(got))
	}
	// A range: seek, then read.
	r, _, err = s.OpenVerified(d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Seek(1000, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	part := make([]byte, 100)
	if _, err := io.ReadFull(r, part); err != nil || !bytes.Equal(part, blob[1000:1100]) {
		t.Errorf("range read at 1000: %v, match %v", err, bytes.Equal(part, blob[1000:1100]))
	}
	r.Close()

	// A partial copy arriving from a peer: committed only when it matches.
	other, od := randomBlob(31, 10<<10)
	p, err := s.NewPartial(od, int64(len(other)))
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(other)
	bad[0] ^= 1
	if _, err := p.Write(bad); err != nil {
		t.Fatal(err)
	}
	if err := p.Commit(); !errors.Is(err, blobstore.ErrDigestMismatch) {
		t.Errorf("commit of wrong bytes: %v, want ErrDigestMismatch", err)
	}
	if s.Held(od) {
		t.Errorf("wrong bytes are held")
	}
	p, err = s.NewPartial(od, int64(len(other)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Write(other); err != nil {
		t.Fatal(err)
	}
	if err := p.Commit(); err != nil || !s.Held(od) {
		t.Errorf("commit of the right bytes: %v, held %v", err, s.Held(od))
	}
	var walked []digest.Digest
	if err := s.Walk(func(d digest.Digest, _ int64) bool { walked = append(walked, d); return true }); err != nil {
		t.Fatal(err)
	}
	if slices.Sort(walked); !slices.Equal(walked, slices.Sorted(slices.Values([]digest.Digest{d, od}))) {
		t.Errorf("Walk saw %v", walked)
	}
	walked = nil
	if err := s.Walk(func(d digest.Digest, _ int64) bool { walked = append(walked, d); return false }); err != nil || len(walked) != 1 {
		t.Errorf("Walk told to stop at once saw %v, %v", walked, err)
	}
}

// testBlobsPartial: readers follow a partial copy while it grows, never
// get its last byte before it is verified, and learn of a failure.
func testBlobsPartial(t *testing.T, s BlobStore, _ func(digest.Digest)) {
	blob, d := randomBlob(32, 64<<10)
	p, err := s.NewPartial(d, int64(len(blob)))
	if err != nil {
		t.Fatal(err)
	}
	early, ok := p.NewReader()
	if !ok {
		t.Fatal("no reader of a partial just started")
	}
	defer early.Close()
	read := make(chan []byte, 1)
	go func() {
		b, err := io.ReadAll(early)
		if err != nil {
			t.Errorf("reader that started before the bytes: %v", err)
		}
		read <- b
	}()
	if _, err := p.Write(blob); err != nil {
		t.Fatal(err)
	}
	if p.Written() != int64(len(blob)) {
		t.Errorf("Written = %d, want %d", p.Written(), len(blob))
	}
	// Every byte is written but none verified: a reader gets all but the last.
	r, ok := p.NewReader()
	if !ok {
		t.Fatal("no reader of a partial in progress")
	}
	head := make([]byte, len(blob)-1)
	if _, err := io.ReadFull(r, head); err != nil || !bytes.Equal(head, blob[:len(blob)-1]) {
		t.Fatalf("reading all but the last byte before commit: %v", err)
	}
	select {
	case b := <-read:
		t.Fatalf("a reader finished (%d bytes) before the commit verified the blob", len(b))
	case <-time.After(50 * time.Millisecond):
	}
	if _, err := p.Write([]byte{0}); !errors.Is(err, blobstore.ErrDigestMismatch) {
		t.Errorf("a write past the size: %v, want ErrDigestMismatch", err)
	}
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if b := <-read; !bytes.Equal(b, blob) {
		t.Errorf("the early reader got %d bytes, not the blob", len(b))
	}
	if rest, err := io.ReadAll(r); err != nil || len(rest) != 1 || rest[0] != blob[len(blob)-1] {
		t.Errorf("the last byte after commit: %v, %v", rest, err)
	}
	r.Close()
	early.Close()
	if r, ok := p.NewReader(); ok {
		r.Close()
		t.Errorf("a reader of a committed partial whose readers are gone; want the store's copy instead")
	}
	if !s.Held(d) {
		t.Errorf("the committed partial is not held")
	}

	// A failed partial: its readers get ErrPartialFailed, and nothing is held.
	other, od := randomBlob(33, 1000)
	p, err = s.NewPartial(od, int64(len(other)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Write(other[:500]); err != nil {
		t.Fatal(err)
	}
	r, _ = p.NewReader()
	defer r.Close()
	failed := make(chan error, 1)
	go func() { _, err := io.ReadAll(r); failed <- err }()
	cause := errors.New("peer went away")
	p.Fail(cause)
	if err := <-failed; !errors.Is(err, blobstore.ErrPartialFailed) || !errors.Is(err, cause) {
		t.Errorf("a reader of a failed partial: %v, want ErrPartialFailed wrapping the cause", err)
	}
	if _, err := p.Write(other[500:]); err == nil {
		t.Errorf("a write after Fail succeeded")
	}
	if s.Held(od) {
		t.Errorf("a failed partial is held")
	}
	short, sd := randomBlob(34, 100)
	p, err = s.NewPartial(sd, int64(len(short)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Write(short[:50]); err != nil {
		t.Fatal(err)
	}
	if err := p.Commit(); !errors.Is(err, blobstore.ErrDigestMismatch) || s.Held(sd) {
		t.Errorf("commit of half the bytes: %v, held %v; want ErrDigestMismatch", err, s.Held(sd))
	}
}

func testBlobsUploads(t *testing.T, s BlobStore, _ func(digest.Digest)) {
	s.SetUploadLimits(blobstore.UploadLimits{PerStore: 2, PerOwner: 1})
	u, err := s.NewUploadFor("client")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.NewUploadFor("client"); err == nil {
		t.Errorf("a second upload past the per-client limit was opened")
	}
	if got, err := s.Upload(u.ID()); err != nil || got.ID() != u.ID() || s.OpenUploads() != 1 {
		t.Errorf("Upload(%s) = %v, %v; %d open", u.ID(), got, err, s.OpenUploads())
	}
	if removed := s.ExpireUploads(time.Hour); removed != 0 || s.OpenUploads() != 1 {
		t.Errorf("ExpireUploads(1h) removed %d of a session just used, %d left", removed, s.OpenUploads())
	}
	if removed := s.ExpireUploads(0); removed != 1 || s.OpenUploads() != 0 {
		t.Errorf("ExpireUploads(0) removed %d, %d left", removed, s.OpenUploads())
	}
	if _, err := s.Upload(u.ID()); !errors.Is(err, blobstore.ErrUploadNotFound) {
		t.Errorf("an expired session: %v, want ErrUploadNotFound", err)
	}
	for _, id := range []string{"", "../x", strings.Repeat("0", 32)} {
		if _, err := s.Upload(id); !errors.Is(err, blobstore.ErrUploadNotFound) {
			t.Errorf("Upload(%q): %v, want ErrUploadNotFound", id, err)
		}
	}

	// Chunks, a wrong digest (the session stays), the right one (it ends).
	blob, d := randomBlob(35, 30<<10)
	u, err = s.NewUploadFor("client")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.NewUploadFor(""); err != nil {
		t.Fatalf("a session without owner under the store's limit: %v", err)
	}
	if _, err := s.NewUploadFor("another"); !errors.Is(err, blobstore.ErrTooManyUploads) {
		t.Errorf("a third session past the store's limit of 2: %v, want ErrTooManyUploads", err)
	}
	for _, chunk := range [][]byte{blob[:10000], blob[10000:]} {
		if _, err := u.Append(bytes.NewReader(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := u.Append(io.MultiReader(bytes.NewReader([]byte("junk")), iotest.ErrReader(errors.New("client went away")))); err == nil || u.Size() != int64(len(blob)) {
		t.Errorf("a failed append: %v, size %d; want an error and the session as it was (%d)", err, u.Size(), len(blob))
	}
	if _, err := u.Commit(digest.FromString("other")); !errors.Is(err, blobstore.ErrDigestMismatch) || u.Size() != int64(len(blob)) {
		t.Errorf("commit under the wrong digest: %v, size %d; want ErrDigestMismatch, the session unchanged", err, u.Size())
	}
	if size, err := u.Commit(d); err != nil || size != int64(len(blob)) || !s.Held(d) {
		t.Fatalf("commit = %d, %v, held %v", size, err, s.Held(d))
	}
	if _, err := s.Upload(u.ID()); !errors.Is(err, blobstore.ErrUploadNotFound) {
		t.Errorf("a committed session: %v, want ErrUploadNotFound", err)
	}
	if _, err := u.Append(bytes.NewReader(blob)); !errors.Is(err, blobstore.ErrUploadNotFound) {
		t.Errorf("append to a committed session: %v, want ErrUploadNotFound", err)
	}
	c, err := s.NewUploadFor("client")
	if err != nil {
		t.Fatalf("the client's slot was not given back at commit: %v", err)
	}
	if err := c.Cancel(); err != nil || s.OpenUploads() != 1 {
		t.Errorf("Cancel: %v, %d open; want 1 (the ownerless one)", err, s.OpenUploads())
	}
	if err := c.Cancel(); !errors.Is(err, blobstore.ErrUploadNotFound) {
		t.Errorf("a second Cancel: %v, want ErrUploadNotFound", err)
	}
}

// testBlobsCorruption: a damaged copy is no longer held, fails Verify and
// reads with ErrCorrupt, is reported once through OnCorrupt and moved
// aside; a push of the right bytes heals it.
func testBlobsCorruption(t *testing.T, s BlobStore, corrupt func(digest.Digest)) {
	ctx := t.Context()
	type report struct {
		d    digest.Digest
		size int64
	}
	reports := make(chan report, 10)
	s.OnCorrupt(func(d digest.Digest, size int64, cause error) {
		if !errors.Is(cause, blobstore.ErrCorrupt) {
			t.Errorf("OnCorrupt cause %v, want ErrCorrupt", cause)
		}
		reports <- report{d, size}
	})
	blob, d := randomBlob(36, 20<<10)
	other, od := randomBlob(37, 20<<10)
	for _, b := range [][]byte{blob, other} {
		if _, err := s.Put(digest.FromBytes(b), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	reported := func(d digest.Digest, size int64) {
		t.Helper()
		select {
		case r := <-reports:
			if r.d != d || r.size != size {
				t.Errorf("OnCorrupt(%s, %d), want (%s, %d)", r.d, r.size, d, size)
			}
		default:
			t.Errorf("no OnCorrupt report of %s", d)
		}
		select {
		case r := <-reports:
			t.Errorf("a second report, of %s", r.d)
		default:
		}
	}

	corrupt(d)
	if s.Held(d) {
		t.Errorf("a blob written to since it was verified is held")
	}
	if err := s.Verify(ctx, d, false, nil); !errors.Is(err, blobstore.ErrCorrupt) {
		t.Errorf("Verify of a damaged blob: %v, want ErrCorrupt", err)
	}
	reported(d, int64(len(blob)))
	if s.Quarantined() != 1 || s.Held(d) {
		t.Errorf("quarantined %d, held %v; want 1 moved aside", s.Quarantined(), s.Held(d))
	}
	if count, _ := s.Stats(); count != 1 {
		t.Errorf("Stats count %d blobs, want the 1 left", count)
	}
	if err := s.Verify(ctx, d, true, nil); !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("Verify of a quarantined blob: %v, want ErrNotFound", err)
	}

	// Read: never the wrong bytes, the error before the end.
	corrupt(od)
	r, _, err := s.OpenVerified(od)
	if err == nil {
		got, rerr := io.ReadAll(r)
		r.Close()
		if !errors.Is(rerr, blobstore.ErrCorrupt) || len(got) == len(other) {
			t.Errorf("reading a damaged blob: %d bytes, %v; want ErrCorrupt before the end", len(got), rerr)
		}
	} else if !errors.Is(err, blobstore.ErrCorrupt) {
		t.Errorf("OpenVerified of a damaged blob: %v", err)
	}
	reported(od, int64(len(other)))
	if s.Quarantined() != 2 {
		t.Errorf("quarantined %d, want 2", s.Quarantined())
	}

	// A push of the right bytes brings it back.
	if _, err := s.Put(d, bytes.NewReader(blob)); err != nil || !s.Held(d) || s.Verify(ctx, d, true, nil) != nil {
		t.Errorf("a push after the quarantine: %v, held %v", err, s.Held(d))
	}
}

// TestFakesStayInTests: no production file imports the fakes (they are
// not durable, authenticated or bounded).
func TestFakesStayInTests(t *testing.T) {
	t.Parallel()
	const fakes = `"github.com/meshreg/meshreg/node/nodefake"`
	err := filepath.WalkDir("..", func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		b, err := os.ReadFile(path)
		if err == nil && bytes.Contains(b, []byte(fakes)) {
			t.Errorf("%s imports %s, which is for tests only", path, fakes)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
