package testnet_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/testnet"
)

// TestBackupRestoreCluster: a backup with blobs of a 3-node cluster, taken
// through a follower, restored into a new node: with the old cluster gone,
// every tag resolves to the same digest through it, every manifest and blob
// comes back byte for byte (images, an index, a referrer), and a fresh node
// that joins the restored one pulls them too.
func TestBackupRestoreCluster(t *testing.T) {
	testnet.RequireProcess(t)
	nodes := testnet.StartCluster(t, 3, testnet.Options{})
	bin := testnet.Binary(t)
	crane, oras := testnet.Tool(t, "crane"), testnet.Tool(t, "oras")
	work := t.TempDir()
	cr := testnet.Runner{T: t, Path: crane, Dir: work}
	repo := testnet.UniqueRepo("e2e/backup")

	// Two images pushed through different nodes, a second tag, an index
	// of both, and a referrer of the first.
	push := func(n *testnet.Node, tag string, layers int) digest.Digest {
		args := []string{"append", "--insecure", "--oci-empty-base", "-t", n.Host() + "/" + repo + ":" + tag}
		for i := range layers {
			path := filepath.Join(work, fmt.Sprintf("%s-%d.tar", tag, i))
			if _, err := testnet.WriteLayerTar(path, tag, 3, 128<<10); err != nil {
				t.Fatal(err)
			}
			args = append(args, "-f", path)
		}
		cr.Run(args...)
		return craneDigest(cr, n.Host()+"/"+repo+":"+tag)
	}
	da := push(nodes[0], "a", 2)
	db := push(nodes[2], "b", 1)
	cr.Run("tag", "--insecure", nodes[1].Host()+"/"+repo+":a", "latest")
	cr.Run("index", "append", "--insecure", "-m", nodes[1].Host()+"/"+repo+"@"+da.String(),
		"-m", nodes[1].Host()+"/"+repo+"@"+db.String(), "-t", nodes[1].Host()+"/"+repo+":multi")
	or := testnet.Runner{T: t, Path: oras, Dir: work}
	writeFile(t, filepath.Join(work, "sig.json"), []byte(`{"signed":"`+da.String()+`"}`))
	var sig orasDesc
	orasJSON(t, or.Run("attach", "--plain-http", "--no-tty", "--format", "json", "--artifact-type", orasSigType,
		nodes[0].Host()+"/"+repo+"@"+da.String(), "sig.json:application/json"), &sig)

	tags := []string{"a", "b", "latest", "multi"}
	want := map[string][]byte{} // reference → manifest bytes
	for _, tag := range tags {
		want[tag] = cr.Run("manifest", "--insecure", nodes[0].Host()+"/"+repo+":"+tag)
	}
	want[sig.Digest.String()] = cr.Run("manifest", "--insecure", nodes[0].Host()+"/"+repo+"@"+sig.Digest.String())
	blobs := map[digest.Digest]bool{}
	for ref, mb := range want {
		var m ocispec.Manifest
		if err := json.Unmarshal(mb, &m); err != nil {
			t.Fatalf("manifest %s: %v", ref, err)
		}
		if m.Config.Digest != "" {
			blobs[m.Config.Digest] = true
		}
		for _, l := range m.Layers {
			blobs[l.Digest] = true
		}
	}
	if len(blobs) < 5 {
		t.Fatalf("only %d distinct blobs: the test's images are wrong", len(blobs))
	}

	// Backup through node 2, a follower or not: it fetches from its peers
	// what it does not hold.
	archive := filepath.Join(work, "backup.tar")
	mr := testnet.Runner{T: t, Path: bin, Dir: work}
	res := mr.Try("backup", "--node", nodes[1].URL(), "--out", archive, "--blobs")
	if res.Err != nil {
		t.Fatalf("meshreg backup: %v\n%s", res.Err, res.Stderr)
	}
	t.Logf("backup: %s", res.Stderr)
	if !strings.Contains(string(res.Stderr), "blobs") || !strings.Contains(string(res.Stderr), "/s") {
		t.Errorf("backup printed no progress on stderr: %q", res.Stderr)
	}
	if _, err := os.Stat(archive); err != nil {
		t.Fatal(err)
	}
	// The old cluster goes away: whatever the restored node serves comes
	// from the archive.
	oldIDs := map[string]bool{}
	for _, n := range nodes {
		st, err := n.Status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		oldIDs[st.NodeID] = true
		n.Stop()
	}

	// The restored node: a node's data dir, replaced by the backup.
	restored := testnet.StartNode(t, testnet.Options{})
	restored.Stop()
	out := mr.Run("restore", "--data-dir", restored.DataDir(), "--force", archive)
	t.Logf("restore: %s", out)
	restored.Restart()
	// A new identity, alone, at the address it listens on now.
	st, err := restored.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Raft.Members) != 1 || st.Raft.Members[0].ID != st.NodeID || st.Raft.Members[0].Address != st.RaftAddress {
		t.Errorf("restored node %s at %s: members %+v; want itself alone at its address", st.NodeID, st.RaftAddress, st.Raft.Members)
	}
	if oldIDs[st.NodeID] {
		t.Errorf("the restored node has the identity %s of an old node", st.NodeID)
	}

	check := func(n *testnet.Node, who string) {
		t.Helper()
		for ref, mb := range want {
			sep := ":"
			if strings.HasPrefix(ref, "sha256:") {
				sep = "@"
			}
			got := cr.Try("manifest", "--insecure", n.Host()+"/"+repo+sep+ref)
			if got.Err != nil {
				t.Errorf("%s: crane manifest %s: %v\n%s", who, ref, got.Err, got.Stderr)
				continue
			}
			if string(got.Stdout) != string(mb) {
				t.Errorf("%s: manifest %s differs from the original", who, ref)
			}
		}
		for _, tag := range tags {
			if d := craneDigest(cr, n.Host()+"/"+repo+":"+tag); d != digest.FromBytes(want[tag]) {
				t.Errorf("%s: crane digest %s = %s, want %s", who, tag, d, digest.FromBytes(want[tag]))
			}
		}
		for d := range blobs {
			got := cr.Try("blob", "--insecure", n.Host()+"/"+repo+"@"+d.String())
			if got.Err != nil || digest.FromBytes(got.Stdout) != d {
				t.Errorf("%s: crane blob %s: %v (%d bytes)", who, d, got.Err, len(got.Stdout))
			}
		}
		// The referrer is indexed as before.
		resp, err := n.HTTPClient().Get(n.URL() + "/v2/" + repo + "/referrers/" + da.String())
		if err != nil {
			t.Fatal(err)
		}
		var idx ocispec.Index
		err = json.NewDecoder(resp.Body).Decode(&idx)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || len(idx.Manifests) != 1 || idx.Manifests[0].Digest != sig.Digest {
			t.Errorf("%s: referrers of %s = %d %+v, %v; want %s", who, da, resp.StatusCode, idx.Manifests, err, sig.Digest)
		}
	}
	check(restored, "restored node")

	// A fresh node joins the restored one and reads everything through it.
	joiner := testnet.StartNode(t, testnet.Options{Args: []string{"--join", restored.URL(),
		"--join-token", testnet.JoinToken(t, restored, time.Hour)}})
	testnet.WaitConverged(t, []*testnet.Node{restored, joiner}, 2, testnet.ExpectedVoters(2, 3), 60*time.Second)
	check(joiner, "node joined to the restored one")
	// And writes through it are committed by the restored cluster.
	cr.Run("tag", "--insecure", joiner.Host()+"/"+repo+":a", "after-restore")
	if d := craneDigest(cr, restored.Host()+"/"+repo+":after-restore"); d != da {
		t.Errorf("tag pushed through the joiner resolves to %s on the restored node, want %s", d, da)
	}
}
