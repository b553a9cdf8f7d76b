package api

import (
	"net/http"
	"sync"

	"github.com/meshreg/meshreg/api/oci"
)

// writeGate bounds the requests with a body (blob uploads, chunks, manifest
// PUTs) that one client has in flight. Each holds a connection and a temp
// file for as long as its body trickles in, so without a bound a single
// client sending many slow bodies could hold every descriptor the node has.
type writeGate struct {
	limit int
	mu    sync.Mutex
	busy  map[string]int // client → requests in flight
}

func newWriteGate(limit int) *writeGate { return &writeGate{limit: limit, busy: map[string]int{}} }

// admit counts r against its client's bound and returns the release to
// call when it ends, or a TOOMANYREQUESTS error past the bound. Requests
// without a body are not counted.
func (g *writeGate) admit(r *http.Request) (release func(), err error) {
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
	default:
		return func() {}, nil
	}
	client := ClientFromContext(r.Context())
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.busy[client] >= g.limit {
		return nil, oci.Errorf(oci.TooManyRequests,
			"%d uploads from %s are in flight, the most one client may send at once (--max-writes-per-client): wait for one to finish", g.busy[client], client)
	}
	g.busy[client]++
	return func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.busy[client]--; g.busy[client] <= 0 {
			delete(g.busy, client)
		}
	}, nil
}
