package consensus

import (
	"context"
	"testing"

	"github.com/meshreg/meshreg/consensus/state"
)

// TestStoreView: the store's pinned view shows what was applied, at the
// store's applied index, and refuses once the store is closed.
func TestStoreView(t *testing.T) {
	t.Parallel()
	s := openStore(t, testConfig(t, t.TempDir()))
	m := manifest("repo", "x", "")
	mustPut(t, s, m, "v1")
	if err := s.LinkBlob(context.Background(), "repo", m.Digest, 7); err != nil {
		t.Fatal(err)
	}
	var manifests []state.ManifestRef
	var links []state.BlobLinkRef
	err := s.View(func(v *state.View) error {
		if v.Index() != s.AppliedIndex() {
			t.Errorf("view at %d, store applied %d", v.Index(), s.AppliedIndex())
		}
		if err := v.Manifests(func(r state.ManifestRef) error { manifests = append(manifests, r); return nil }); err != nil {
			return err
		}
		return v.BlobLinks(func(l state.BlobLinkRef) error { links = append(links, l); return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(manifests) != 1 || manifests[0].Digest != m.Digest || len(manifests[0].Tags) != 1 {
		t.Errorf("Manifests = %+v", manifests)
	}
	if len(links) != 1 || links[0] != (state.BlobLinkRef{Repo: "repo", Digest: m.Digest, Size: 7}) {
		t.Errorf("BlobLinks = %+v", links)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.View(func(*state.View) error { return nil }); err == nil {
		t.Error("View after Close succeeded")
	}
}
