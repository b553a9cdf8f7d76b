package notify

import (
	"crypto/rand"
	"encoding/hex"
	"time"

	"github.com/meshreg/meshreg/api"
)

// EventsMediaType is the Content-Type of every envelope sent, CNCF
// Distribution v3's (notifications/event.go): receivers written for
// Distribution read meshreg's events unchanged.
const EventsMediaType = "application/vnd.docker.distribution.events.v2+json"

// BlobMediaType is the target media type of blob events, as Distribution
// writes it; `ignoredmediatypes: [application/octet-stream]` leaves blob
// pushes out, as there.
const BlobMediaType = "application/octet-stream"

// The actions of events, Distribution's names.
const (
	ActionPush   = "push"
	ActionPull   = "pull"
	ActionMount  = "mount"
	ActionDelete = "delete"
)

// Envelope is the body of one POST: one or more events, oldest first.
type Envelope struct {
	Events []Event `json:"events,omitempty"`
}

// Event is one registry event with Distribution's field names and order
// (notifications.Event in distribution/distribution v3). Target's
// mediaType, digest and size are never omitted, as Distribution embeds an
// OCI descriptor whose fields are not omitempty.
type Event struct {
	ID        string        `json:"id,omitempty"`
	Timestamp time.Time     `json:"timestamp"`
	Action    string        `json:"action,omitempty"`
	Target    Target        `json:"target"`
	Request   RequestRecord `json:"request"`
	Actor     ActorRecord   `json:"actor"`
	Source    SourceRecord  `json:"source"`
}

// Target is what the event is about.
type Target struct {
	MediaType      string `json:"mediaType"`
	Digest         string `json:"digest"`
	Size           int64  `json:"size"`
	Length         int64  `json:"length,omitempty"` // Size again, for old receivers
	Repository     string `json:"repository,omitempty"`
	FromRepository string `json:"fromRepository,omitempty"`
	URL            string `json:"url,omitempty"`
	Tag            string `json:"tag,omitempty"`
}

// RequestRecord is the client request that caused the event.
type RequestRecord struct {
	ID        string `json:"id"`
	Addr      string `json:"addr,omitempty"`
	Host      string `json:"host,omitempty"`
	Method    string `json:"method"`
	UserAgent string `json:"useragent"`
}

// ActorRecord is who asked: the authenticated user, empty when anonymous.
type ActorRecord struct {
	Name string `json:"name,omitempty"`
}

// SourceRecord is the node that accepted the request and sent the event:
// the address the client reached it at and its peer id (stable across
// restarts, unlike Distribution's per-process id).
type SourceRecord struct {
	Addr       string `json:"addr,omitempty"`
	InstanceID string `json:"instanceID,omitempty"`
}

// maxField bounds each string a client chooses (user agent, host) in a
// stored event, so a queue of MaxPending events stays small.
const maxField = 512

func clip(s string) string {
	if len(s) > maxField {
		return s[:maxField]
	}
	return s
}

// newEvent turns what the API reported into Distribution's event.
func newEvent(e api.Event, id, instanceID string) Event {
	ev := Event{
		ID:        id,
		Timestamp: e.Time.UTC(),
		Action:    e.Action,
		Target: Target{
			MediaType: clip(e.MediaType), Digest: e.Digest, Size: e.Size, Length: e.Size,
			Repository: e.Repository, FromRepository: e.FromRepository, URL: clip(e.URL), Tag: e.Tag,
		},
		Request: RequestRecord{ID: e.RequestID, Addr: clip(e.ClientAddr), Host: clip(e.Host), Method: e.Method, UserAgent: clip(e.UserAgent)},
		Actor:   ActorRecord{Name: clip(e.User)},
		Source:  SourceRecord{Addr: e.SourceAddr, InstanceID: instanceID},
	}
	if ev.Timestamp.IsZero() {
		ev.Timestamp = time.Now().UTC()
	}
	return ev
}

// newID returns a random UUID (version 4), the form of Distribution's
// event ids.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}
