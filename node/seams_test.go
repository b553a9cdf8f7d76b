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

// TestBlobStoreConformance checks blobstore.Store, the one implementation
// of BlobStore: a fake would have to make blobstore.Partial and Upload
// values, which only the store can.
func TestBlobStoreConformance(t *testing.T) {
	t.Parallel()
	s, err := blobstore.Open(t.TempDir(), tlog.Logger(t, slog.LevelWarn))
	if err != nil {
		t.Fatal(err)
	}
	testBlobStore(t, diskBlobs{s})
}

func testBlobStore(t *testing.T, s BlobStore) {
	ctx := t.Context()
	blob, d := randomBlob(30, 100<<10)
	if s.Held(d) {
		t.Fatal("an empty store holds a blob")
	}
	if _, _, err := s.OpenVerified(d); !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("OpenVerified of a missing blob: %v, want ErrNotFound", err)
	}
	if n, err := s.Put(d, bytes.NewReader(blob)); err != nil || n != int64(len(blob)) {
		t.Fatalf("Put = %d, %v", n, err)
	}
	if !s.Held(d) || s.Verify(ctx, d, true, nil) != nil {
		t.Errorf("a blob just put is not held, or fails verification")
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
	if removed := s.ExpireUploads(0); removed != 1 || s.OpenUploads() != 0 {
		t.Errorf("ExpireUploads(0) removed %d, %d left", removed, s.OpenUploads())
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
