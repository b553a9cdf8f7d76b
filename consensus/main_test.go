package consensus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"

	"github.com/meshreg/meshreg/testnet/tlog"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogger sends logs to t.Log, so they show only when a test fails.
func testLogger(t testing.TB) *slog.Logger { return tlog.Logger(t, slog.LevelInfo) }

func testConfig(t testing.TB, dir string) Config {
	cfg := DefaultConfig()
	cfg.Dir = dir
	cfg.NodeID = "node-1"
	cfg.Logger = testLogger(t)
	return cfg
}

// openStore opens a store that is closed when the test ends.
func openStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open(%s): %v", cfg.Dir, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// openFSM opens an FSM on its own badger database in a temporary directory.
func openFSM(t testing.TB) *fsm {
	t.Helper()
	db, err := openBadger(t.TempDir(), false, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return &fsm{db: db, log: testLogger(t)}
}

// dump returns every key and value of the FSM state.
func dump(t testing.TB, f *fsm) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := f.db.View(func(t *badger.Txn) error {
		it := t.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out[string(it.Item().KeyCopy(nil))] = string(v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// manifest builds a record whose body is a small JSON document naming
// content, so that distinct contents have distinct digests.
func manifest(repo, content string, subject digest.Digest) ManifestRecord {
	body := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","content":%q}`, content)
	return ManifestRecord{
		Repo:         repo,
		Digest:       digest.FromString(body),
		MediaType:    "application/vnd.oci.image.manifest.v1+json",
		Body:         []byte(body),
		Subject:      subject,
		ArtifactType: "application/vnd.example+" + content,
		Annotations:  map[string]string{"org.example.content": content},
	}
}

func mustPut(t testing.TB, s *Store, m ManifestRecord, tag string) {
	t.Helper()
	var tags []string
	if tag != "" {
		tags = []string{tag}
	}
	if err := s.PutManifest(context.Background(), m, tags...); err != nil {
		t.Fatalf("PutManifest(%s, %s, tag %q): %v", m.Repo, m.Digest, tag, err)
	}
}

func wantNotFound(t testing.TB, what string, err error) {
	t.Helper()
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("%s: got error %v, want ErrNotFound", what, err)
	}
}
