package notify

import (
	"bytes"
	"encoding/json"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/meshreg/meshreg/api"
)

// TestEnvelopeGolden checks the JSON of an envelope against a golden
// file whose first two events are copied verbatim from CNCF Distribution
// v3's notifications/event_test.go (TestEventEnvelopeJSONFormat): a
// receiver written for Distribution reads meshreg's events unchanged.
// The tag delete and mount events follow Distribution's bridge.go.
func TestEnvelopeGolden(t *testing.T) {
	t.Parallel()
	tm, err := time.Parse(time.RFC3339, "2006-01-02T15:04:05Z")
	if err != nil {
		t.Fatal(err)
	}
	req := func(method string) api.Event {
		return api.Event{Time: tm, RequestID: "asdfasdf", ClientAddr: "client.local", Host: "registrycluster.local", Method: method,
			UserAgent: "test/0.1", User: "test-actor", SourceAddr: "hostname.local:port"}
	}
	manifest := req("PUT")
	manifest.Action, manifest.MediaType, manifest.Digest, manifest.Size = ActionPush, "application/vnd.docker.distribution.manifest.v2+json", "sha256:0123456789abcdef0", 1
	manifest.Repository, manifest.URL = "library/test", "http://example.com/v2/library/test/manifests/latest"
	layer := manifest
	layer.MediaType, layer.Digest, layer.Size = "application/vnd.docker.container.image.rootfs.diff+x-gtar", "sha256:3b3692957d439ac1928219a83fac91e7bf96c153725526874673ae1f2023f8d5", 2
	tagDelete := req("DELETE")
	tagDelete.Action, tagDelete.Repository, tagDelete.Tag = ActionDelete, "library/test", "latest"
	mount := req("POST")
	mount.User = "" // anonymous: an empty actor
	mount.Action, mount.Repository, mount.FromRepository, mount.MediaType = ActionMount, "library/other", "library/test", BlobMediaType
	mount.Digest, mount.Size, mount.URL = layer.Digest, 2, "http://example.com/v2/library/other/blobs/"+layer.Digest

	env := Envelope{Events: []Event{
		newEvent(manifest, "asdf-asdf-asdf-asdf-0", ""),
		newEvent(layer, "asdf-asdf-asdf-asdf-1", ""),
		newEvent(tagDelete, "asdf-asdf-asdf-asdf-2", "12D3KooWnode"),
		newEvent(mount, "asdf-asdf-asdf-asdf-3", "12D3KooWnode"),
	}}
	got, err := json.MarshalIndent(env, "", "   ")
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("testdata/envelope.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, bytes.TrimSpace(want)) {
		t.Errorf("envelope differs from testdata/envelope.json:\n%s", got)
	}
}

func TestNewIDIsUUID(t *testing.T) {
	t.Parallel()
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 1000 {
		id := newID()
		if !re.MatchString(id) || seen[id] {
			t.Fatalf("id %q is not a fresh UUIDv4", id)
		}
		seen[id] = true
	}
}

func TestClipBoundsClientFields(t *testing.T) {
	t.Parallel()
	long := string(bytes.Repeat([]byte("a"), 10_000))
	ev := newEvent(api.Event{Action: ActionPush, UserAgent: long, Host: long, User: long}, newID(), "n")
	if len(ev.Request.UserAgent) > maxField || len(ev.Request.Host) > maxField || len(ev.Actor.Name) > maxField {
		t.Fatalf("client-chosen fields not bounded: %d %d %d", len(ev.Request.UserAgent), len(ev.Request.Host), len(ev.Actor.Name))
	}
}
