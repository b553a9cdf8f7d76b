package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/api"
)

// recorder is a Notifier that keeps what it is told.
type recorder struct {
	mu     sync.Mutex
	events []api.Event
}

func (r *recorder) Notify(_ context.Context, e api.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) take() []api.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	evs := r.events
	r.events = nil
	return evs
}

func summary(evs []api.Event) string {
	var s []string
	for _, e := range evs {
		s = append(s, fmt.Sprintf("%s %s %s tag=%s from=%s", e.Action, e.Repository, e.MediaType, e.Tag, e.FromRepository))
	}
	return strings.Join(s, "; ")
}

// TestNotifications: each write the registry acknowledged is told to the
// Notifier once, with the request's fields (Distribution's events: a push
// per tag, a delete per tag, manifest or blob, a pull per manifest or
// whole-blob GET); refused writes, HEADs and ranged reads are not.
func TestNotifications(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	r := newRegistry(t, t.TempDir(), func(c *api.Config) { c.Notifier = rec })
	m := r.image("team/app", "1")
	blobs := rec.take()
	if got := summary(blobs); got != "push team/app application/octet-stream tag= from=; push team/app application/octet-stream tag= from=" {
		t.Fatalf("blob pushes: %s", got)
	}
	resp, body := r.pushManifest("team/app", "v1", ocispec.MediaTypeImageManifest, m)
	expect(t, resp, body, http.StatusCreated, "")
	d := digest.FromBytes(m)
	evs := rec.take()
	if len(evs) != 1 {
		t.Fatalf("manifest push by tag: %s", summary(evs))
	}
	e := evs[0]
	if e.Action != "push" || e.Repository != "team/app" || e.Tag != "v1" || e.Digest != d.String() || e.Size != int64(len(m)) ||
		e.MediaType != ocispec.MediaTypeImageManifest || e.URL != r.url+"/v2/team/app/manifests/"+d.String() || e.Method != "PUT" ||
		e.ClientAddr != "127.0.0.1" || e.UserAgent == "" || e.RequestID == "" || e.SourceAddr == "" || e.Host == "" || e.Time.IsZero() {
		t.Fatalf("manifest push event %+v", e)
	}

	resp, body = r.do("PUT", "/v2/team/app/manifests/"+d.String()+"?tag=a&tag=b", m, "Content-Type", ocispec.MediaTypeImageManifest)
	expect(t, resp, body, http.StatusCreated, "")
	evs = rec.take()
	if got := summary(evs); len(evs) != 2 || evs[0].Tag != "a" || evs[1].Tag != "b" || evs[0].RequestID != evs[1].RequestID {
		t.Fatalf("push by digest with two tags: %s", got)
	}

	// Without a Content-Type, the manifest's own mediaType.
	m2 := r.image("team/app", "2")
	rec.take()
	resp, body = r.do("PUT", "/v2/team/app/manifests/untyped", m2)
	expect(t, resp, body, http.StatusCreated, "")
	if evs = rec.take(); len(evs) != 1 || evs[0].MediaType != ocispec.MediaTypeImageManifest {
		t.Fatalf("push without Content-Type: %+v", evs)
	}

	// Reads: a pull per GET of a manifest or a whole blob, not HEAD, not a range.
	r.do("GET", "/v2/team/app/manifests/v1", nil)
	r.do("HEAD", "/v2/team/app/manifests/v1", nil)
	layer := blobs[1].Digest
	r.do("GET", "/v2/team/app/blobs/"+layer, nil)
	r.do("GET", "/v2/team/app/blobs/"+layer, nil, "Range", "bytes=0-9")
	r.do("HEAD", "/v2/team/app/blobs/"+layer, nil)
	evs = rec.take()
	if got := summary(evs); got != "pull team/app "+ocispec.MediaTypeImageManifest+" tag=v1 from=; pull team/app application/octet-stream tag= from=" {
		t.Fatalf("reads: %s", got)
	}

	resp, body = r.do("POST", "/v2/other/blobs/uploads/?mount="+layer+"&from=team/app", nil)
	expect(t, resp, body, http.StatusCreated, "")
	if evs = rec.take(); len(evs) != 1 || evs[0].Action != "mount" || evs[0].FromRepository != "team/app" || evs[0].Size != 4096 {
		t.Fatalf("mount: %+v", evs)
	}

	// Refused writes tell nothing.
	r.pushManifest("team/app", "bad", ocispec.MediaTypeImageManifest, []byte(`{"schemaVersion":2,"layers":[{"digest":"`+digest.FromString("x").String()+`","size":1}]}`))
	r.do("DELETE", "/v2/team/app/manifests/absent", nil)
	if evs = rec.take(); len(evs) != 0 {
		t.Fatalf("refused writes told: %s", summary(evs))
	}

	resp, body = r.do("DELETE", "/v2/team/app/manifests/a", nil)
	expect(t, resp, body, http.StatusAccepted, "")
	resp, body = r.do("DELETE", "/v2/team/app/manifests/"+d.String(), nil)
	expect(t, resp, body, http.StatusAccepted, "")
	resp, body = r.do("DELETE", "/v2/other/blobs/"+layer, nil)
	expect(t, resp, body, http.StatusAccepted, "")
	evs = rec.take()
	if len(evs) != 3 || evs[0].Tag != "a" || evs[0].Digest != "" || evs[1].Digest != d.String() || evs[1].Tag != "" ||
		evs[2].Digest != layer || evs[2].Repository != "other" {
		t.Fatalf("deletes: %+v", evs)
	}
	for _, e := range evs {
		if e.Action != "delete" || e.Method != "DELETE" {
			t.Fatalf("delete event %+v", e)
		}
	}
}
