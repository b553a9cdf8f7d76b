package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/blobstore"
	"github.com/meshreg/meshreg/consensus"
	"github.com/meshreg/meshreg/node/backup"
	"github.com/meshreg/meshreg/node/datadir"
	"github.com/meshreg/meshreg/p2p"
)

// testBackupArchive makes a real archive: the metadata of a one-node
// store holding two tags and a blob link, and that blob.
func testBackupArchive(t *testing.T) ([]byte, digest.Digest) {
	t.Helper()
	cfg := consensus.DefaultConfig()
	cfg.Dir, cfg.NodeID = t.TempDir(), "source"
	s, err := consensus.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	layer := []byte("the layer's bytes")
	ld := digest.FromBytes(layer)
	body := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[]}`, ld, len(layer))
	rec := consensus.ManifestRecord{Repo: "team/app", Digest: digest.FromString(body), MediaType: "application/vnd.oci.image.manifest.v1+json", Body: []byte(body)}
	if err := s.LinkBlob(ctx, "team/app", ld, int64(len(layer))); err != nil {
		t.Fatal(err)
	}
	if err := s.PutManifest(ctx, rec, "v1", "latest"); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	err = s.Backup(func(b *consensus.Backup) error {
		size, sum, err := b.StateSize()
		if err != nil {
			return err
		}
		w := backup.NewWriter(&buf)
		m := backup.Manifest{NodeID: "source", Index: b.Index, Term: b.Term, MetadataSize: size, MetadataSHA256: sum,
			WithBlobs: true, Blobs: 1, BlobBytes: int64(len(layer)), Manifests: 1, Tags: 2, Repositories: 1}
		if err := w.WriteManifest(m); err != nil {
			return err
		}
		pr, pw := io.Pipe()
		done := make(chan struct{})
		go func() { defer close(done); pw.CloseWithError(b.WriteState(pw)) }()
		err = w.WriteMetadata(size, pr)
		pr.Close()
		<-done // the snapshot's iterator is closed before Backup releases it
		if err != nil {
			return err
		}
		if err := w.WriteBlob(ld, int64(len(layer)), bytes.NewReader(layer)); err != nil {
			return err
		}
		return w.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), ld
}

func runRestore(t *testing.T, stdin []byte, args ...string) (string, error) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "backup.tar")
	if err := os.WriteFile(f, stdin, 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	app := newApp()
	app.Writer, app.ErrWriter = &out, io.Discard
	err := app.Run(append(append([]string{"meshreg", "restore"}, args...), f))
	return out.String(), err
}

// TestRestoreBuildsOneNodeCluster: restore makes a data dir whose node has
// a new identity, leads a cluster of itself and holds the tags and blobs.
func TestRestoreBuildsOneNodeCluster(t *testing.T) {
	clearMeshregEnv(t)
	arch, ld := testBackupArchive(t)
	dir := filepath.Join(t.TempDir(), "data")
	out, err := runRestore(t, arch, "--data-dir", dir)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if !strings.Contains(out, "1 manifests, 2 tags, 1 blobs") {
		t.Errorf("restore said %q", out)
	}
	if _, err := os.Stat(dir + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s.tmp is left behind: %v", dir, err)
	}
	id, err := p2p.IdentityID(dir)
	if err != nil {
		t.Fatal(err)
	}
	bs, err := blobstore.Open(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if f, _, err := bs.Open(ld); err != nil {
		t.Errorf("blob %s is not in the restored data dir: %v", ld, err)
	} else {
		b, _ := io.ReadAll(f)
		f.Close()
		if string(b) != "the layer's bytes" {
			t.Errorf("blob %s holds %q", ld, b)
		}
	}
	cfg := consensus.DefaultConfig()
	cfg.Dir, cfg.NodeID = filepath.Join(dir, "meta"), id.String()
	// The in-memory transport's address is the node id; the restored
	// configuration names the node by /p2p/<id> until it starts for real.
	s, err := consensus.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, tag := range []string{"v1", "latest"} {
		if _, err := s.ResolveTag("team/app", tag); err != nil {
			t.Errorf("tag %s after restore: %v", tag, err)
		}
	}
	members, err := s.Members()
	if err != nil || len(members) != 1 || members[0].ID != id.String() {
		t.Errorf("members %v, %v; want the new node alone", members, err)
	}
	if err := s.LinkBlob(context.Background(), "team/app", digest.FromString("x"), 1); err != nil {
		t.Errorf("a write to the restored cluster: %v", err)
	}
}

// TestRestoreRefusesNonEmptyDataDir: restore never mixes a backup into a
// data dir that holds something, unless told to replace it; and it takes
// the data dir's lock.
func TestRestoreRefusesNonEmptyDataDir(t *testing.T) {
	clearMeshregEnv(t)
	arch, _ := testBackupArchive(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "something"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := runRestore(t, arch, "--data-dir", dir)
	if err == nil || !strings.Contains(err.Error(), "not empty") || !strings.Contains(err.Error(), "something") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("restore into a non-empty dir: %v; want a refusal naming what is there and --force", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "something")); string(b) != "mine" {
		t.Fatal("the refused restore touched the data dir")
	}

	held, err := datadir.Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := runRestore(t, arch, "--data-dir", dir, "--force"); !errors.Is(err, datadir.ErrInUse) {
		t.Errorf("restore into a data dir a node holds: %v, want ErrInUse", err)
	}
	held.Close()

	if _, err := runRestore(t, arch, "--data-dir", dir, "--force"); err != nil {
		t.Fatalf("restore --force: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "something")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("--force kept the old content: %v", err)
	}
	if _, err := p2p.IdentityID(dir); err != nil {
		t.Errorf("no identity after restore --force: %v", err)
	}
}

// TestRestoreBadArchiveLeavesNothing: a truncated or altered archive is
// refused with a clear error, and leaves neither a data dir nor DIR.tmp.
func TestRestoreBadArchiveLeavesNothing(t *testing.T) {
	clearMeshregEnv(t)
	arch, _ := testBackupArchive(t)
	flip := bytes.Clone(arch)
	flip[bytes.Index(flip, []byte("the layer's"))] ^= 1
	for name, b := range map[string][]byte{
		"truncated in the metadata": arch[:2000],
		"truncated in the trailer":  arch[:bytes.Index(arch, []byte(`{"sha256":`))+20],
		"altered blob":              flip,
		"not an archive":            []byte("hello"),
	} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			_, err := runRestore(t, b, "--data-dir", dir)
			if !errors.Is(err, backup.ErrCorrupt) || !strings.Contains(err.Error(), "nothing was restored") {
				t.Fatalf("err = %v; want a corrupt-archive error saying nothing was restored", err)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the data dir restore created is left behind: %v", err)
			}
			if _, err := os.Stat(dir + ".tmp"); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s.tmp left behind", dir)
			}
		})
	}
}

// TestTrailingFlags: backup, restore, export and import read flags given
// after their argument, as their usage shows them.
func TestTrailingFlags(t *testing.T) {
	clearMeshregEnv(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{args: []string{"restore", "x.tar", "--data-dir"}, want: "--data-dir needs a value"},
		{args: []string{"restore", "x.tar", "--nope"}, want: "unknown flag --nope"},
		{args: []string{"restore", "x.tar"}, want: "--data-dir is required"},
		{args: []string{"restore", "x.tar", "y.tar", "--data-dir", "d"}, want: "one argument"},
		{args: []string{"export", "team/app:v1", "--node", "127.0.0.1:1"}, want: "--out is required"},
		{args: []string{"import", "x.tar", "--chunk-size=1KiB"}, want: "--chunk-size 1KiB: want 1MiB to 1GiB"},
		{args: []string{"backup", "--node", "127.0.0.1:1", "extra"}, want: "takes no arguments"},
	} {
		app := newApp()
		app.Writer, app.ErrWriter = io.Discard, io.Discard
		err := app.Run(append([]string{"meshreg"}, tc.args...))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("meshreg %v: %v, want %q", tc.args, err, tc.want)
		}
	}
	// Flags after the argument take effect: --force lets restore replace
	// what the data dir holds.
	arch, _ := testBackupArchive(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "old"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "b.tar")
	if err := os.WriteFile(f, arch, 0o644); err != nil {
		t.Fatal(err)
	}
	app := newApp()
	app.Writer, app.ErrWriter = io.Discard, io.Discard
	if err := app.Run([]string{"meshreg", "restore", "--data-dir", dir, f, "--force"}); err != nil {
		t.Fatalf("restore with a trailing --force: %v", err)
	}
}
