package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"time"

	"github.com/opencontainers/go-digest"
)

// Event is a write the registry acknowledged (or a pull it served), told
// to the Notifier by the node that served the request: each event comes
// from one node only, so a cluster reports each push once.
type Event struct {
	Action         string // push, mount, pull or delete (Distribution's names)
	Repository     string
	FromRepository string // a mount's source repository
	Digest         string // "" for a tag delete
	MediaType      string
	Size           int64
	Tag            string
	URL            string // where the content is, on the host the client used
	Time           time.Time

	// The request: an id shared by the events of one request, the
	// client's address (no port), the Host it asked, its method and user
	// agent, and the authenticated user ("" when anonymous).
	RequestID, ClientAddr, Host, Method, UserAgent, User string
	// SourceAddr is the address of this node that the client reached.
	SourceAddr string
}

// Notifier is told every event; it must return quickly (it queues), may
// be called concurrently, and reports its own failures (the write is
// done whatever happens to its notification).
type Notifier interface {
	Notify(ctx context.Context, e Event)
}

// The actions of events.
const (
	actionPush   = "push"
	actionMount  = "mount"
	actionPull   = "pull"
	actionDelete = "delete"
)

// blobMediaType is the media type of blob events, Distribution's.
const blobMediaType = "application/octet-stream"

// notify tells the Notifier about events of request r, filling in the
// request's fields; nothing when notifications are off.
func (h *Handler) notify(r *http.Request, events ...Event) {
	if h.cfg.Notifier == nil {
		return
	}
	id := requestID()
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	var source string
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		source = a.String()
	}
	now := time.Now()
	for _, e := range events {
		e.Time, e.RequestID, e.ClientAddr, e.Host, e.Method, e.UserAgent = now, id, clientAddr(r), r.Host, r.Method, r.UserAgent()
		e.User = identityFrom(r.Context()).User
		e.SourceAddr = source
		if e.URL != "" {
			e.URL = scheme + "://" + r.Host + e.URL
		}
		h.cfg.Notifier.Notify(r.Context(), e)
	}
}

// manifestURL and blobURL are the paths of content, for event targets.
func manifestURL(repo string, d digest.Digest) string {
	return "/v2/" + repo + "/manifests/" + d.String()
}
func blobURL(repo string, d digest.Digest) string { return "/v2/" + repo + "/blobs/" + d.String() }

// manifestMediaType is a pushed manifest's media type: the request's
// Content-Type, else the manifest's own mediaType field.
func manifestMediaType(contentType string, body []byte) string {
	if contentType != "" {
		return contentType
	}
	var m struct {
		MediaType string `json:"mediaType"`
	}
	_ = json.Unmarshal(body, &m)
	return m.MediaType
}

// requestID is a random id for the events of one request.
func requestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
