package scenario

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/p2p"
	"github.com/meshreg/meshreg/testnet"
)

// The hostile actions: what an attacker on the scenario's network, with no
// credentials and no cluster key, tries against the nodes. Each records
// what every attempt got in the report (Report.Hostile); an attempt the
// cluster did not refuse, or an answer outside what a registry may give, is
// a failure of the run.
//
//	intrude       a libp2p host that is not a member opens every cluster
//	              protocol of every running node (has, blob, index, info,
//	              hello, replicate), forwards a delete of an acknowledged
//	              tag to the leader, asks the leader to remove a follower,
//	              and sends a follower a Raft AppendEntries with a higher
//	              term (last: a stranger's term disturbs the leadership)
//	flood         count upload POSTs to the target within for; the target
//	              must keep taking pushes (a probe push right after)
//	slow-readers  count clients open a GET of the largest blob of image
//	              through the target and read nothing for for; the node
//	              must cut them within for, and serve others meanwhile
//	junk-methods  count requests with made-up HTTP methods: each must get
//	              a 4xx, and /metrics must not grow a series per method
//	oversized     a manifest PUT with 20,000 ?tag= (past Go's 10,000
//	              parameter limit), one with 10,000 tags of 60 characters
//	              (650 KB of URL), a 2 MiB header, a 5 MiB manifest: each
//	              must get a 4xx, and no node may fall over
var hostileActions = []string{"intrude", "flood", "slow-readers", "junk-methods", "oversized"}

// Bounds on the hostile actions, whatever a file says.
const (
	maxFloodCount   = 20000
	maxSlowReaders  = 500
	maxJunkMethods  = 20000
	maxHostileFor   = 5 * time.Minute
	floodWorkers    = 32
	hostileDeadline = 15 * time.Second // one attempt of intrude or oversized
)

// HostileResult is one attempt of a hostile action and what it got.
type HostileResult struct {
	Action  string `json:"action"`
	Node    string `json:"node"`
	Attempt string `json:"attempt"`
	Answer  string `json:"answer"`
	Refused bool   `json:"refused"`
}

// SeriesCount is a node's number of /metrics series when the load began
// and at the end.
type SeriesCount struct {
	Node   string `json:"node"`
	Before int    `json:"before"`
	After  int    `json:"after"`
	Bound  int    `json:"bound"`
}

// seriesBound is how many series a node may have at the end: growth with
// the load (new routes, peers, status codes) is bounded by a constant, an
// explosion (a series per request) is not.
func seriesBound(before int) int { return 2*before + 200 }

func (r *run) hostile(ctx context.Context, n *node, e Event) error {
	switch e.Action {
	case "flood":
		return r.flood(ctx, n, e)
	case "slow-readers":
		return r.slowReaders(ctx, n, e)
	case "junk-methods":
		return r.junkMethods(ctx, n, e)
	case "oversized":
		return r.oversized(ctx, n)
	}
	return fmt.Errorf("hostile action %q not implemented", e.Action)
}

// record adds a result to the report, and a failure when the attempt was
// not refused.
func (r *run) record(res HostileResult) {
	res.Answer = clipErr(res.Answer, 300)
	r.repMu.Lock()
	r.rep.Hostile = append(r.rep.Hostile, res)
	r.repMu.Unlock()
	if !res.Refused {
		r.rep.fail("hostile %s on %s: %s was not refused: %s", res.Action, res.Node, res.Attempt, res.Answer)
	}
	r.log.Info("hostile", "action", res.Action, "node", res.Node, "attempt", res.Attempt, "refused", res.Refused, "answer", res.Answer)
}

// The node-to-node protocols, as an attacker who read the source names
// them.
const (
	protoForward   = "/meshreg/forward/1.0.0"
	protoMember    = "/meshreg/member/1.0.0"
	protoHello     = "/meshreg/hello/1.0.0"
	protoIndex     = "/meshreg/index/1.0.0"
	protoInfo      = "/meshreg/info/1.0.0"
	protoHas       = "/meshreg/has/1.0.0"
	protoReplicate = "/meshreg/replicate/1.0.0"
	// opDeleteTag is the consensus command byte of a tag delete; the
	// command is that byte and then JSON.
	opDeleteTag = 3
)

// intrude runs the non-member host's attempts (see hostileActions).
func (r *run) intrude(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "meshreg-intruder-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg := p2p.DefaultConfig()
	cfg.DataDir = dir
	cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.Logger = r.log.With("intruder", true)
	h, err := p2p.NewHost(cfg)
	if err != nil {
		return fmt.Errorf("intruder host: %w", err)
	}
	defer h.Close()

	running := r.cl.running()
	// Aim at a cluster that has a leader: an election may be under way
	// (the workload runs on a busy machine); wait for it to settle.
	for settle := time.Now().Add(30 * time.Second); time.Now().Before(settle) && ctx.Err() == nil; {
		if r.anyLeader(ctx, running) {
			break
		}
		sleep(ctx, 500*time.Millisecond)
	}
	ids := map[*node]peer.ID{}
	var leader *node
	var followers []*node
	var st testnet.NodeStatus
	for _, n := range running {
		s, err := r.cl.status(ctx, n)
		if err != nil {
			return fmt.Errorf("intruder: status of %s: %w", n.spec.Name, err)
		}
		id, err := peer.Decode(s.NodeID)
		if err != nil {
			return fmt.Errorf("intruder: %s's node id %q: %w", n.spec.Name, s.NodeID, err)
		}
		cctx, cancel := context.WithTimeout(ctx, hostileDeadline)
		err = h.Connect(cctx, s.RaftAddress)
		cancel()
		if err != nil {
			// Refusing the connection is refusing every protocol.
			r.record(HostileResult{Action: "intrude", Node: n.spec.Name, Attempt: "connect " + s.RaftAddress, Answer: err.Error(), Refused: true})
			continue
		}
		ids[n] = id
		if s.Raft.State == "Leader" {
			leader, st = n, s
		} else {
			followers = append(followers, n)
		}
	}
	p, ok := r.hist.randomAcked()
	if !ok {
		return errors.New("intruder: nothing acknowledged yet to aim at; run intrude after the first pushes")
	}
	blob := p.Blobs[len(p.Blobs)-1].Digest

	ask := func(n *node, proto string, req []byte) ([]byte, error) {
		cctx, cancel := context.WithTimeout(ctx, hostileDeadline)
		defer cancel()
		return h.Request(cctx, ids[n], protocol.ID(proto), req, 1<<20)
	}
	for _, n := range running {
		if _, ok := ids[n]; !ok {
			continue
		}
		// has: which blobs a node holds.
		req, _ := json.Marshal(map[string]any{"digests": []digest.Digest{blob}})
		out, err := ask(n, protoHas, req)
		r.record(answered(n, "has "+blob.String(), out, err, func(s string) bool { return !strings.Contains(s, `"has"`) }))
		// blob: the bytes themselves.
		cctx, cancel := context.WithTimeout(ctx, hostileDeadline)
		ans, body, err := h.FetchBlob(cctx, ids[n], p2p.BlobRequest{Digest: blob, NoRedirect: true}, 5*time.Second)
		res := HostileResult{Action: "intrude", Node: n.spec.Name, Attempt: "blob " + blob.String()}
		if err != nil {
			res.Answer, res.Refused = "error: "+err.Error(), true
		} else {
			res.Answer = fmt.Sprintf("status %s size %d %s", ans.Status, ans.Size, ans.Message)
			res.Refused = ans.Status == p2p.BlobRefused
			if body != nil {
				nb, _ := io.Copy(io.Discard, body)
				body.Close()
				res.Answer += fmt.Sprintf("; %d bytes received", nb)
			}
		}
		cancel()
		r.record(res)
		// index, info, hello: what the node tells a stranger.
		out, err = ask(n, protoIndex, nil)
		r.record(answered(n, "index", out, err, func(s string) bool { return !strings.Contains(s, `"index"`) }))
		out, err = ask(n, protoInfo, nil)
		r.record(answered(n, "info", out, err, func(s string) bool { return !strings.Contains(s, `"load"`) }))
		hello, _ := json.Marshal(map[string]string{h.ID().String(): "/ip4/127.0.0.1/tcp/1/p2p/" + h.ID().String()})
		out, err = ask(n, protoHello, hello)
		r.record(answered(n, "hello", out, err, func(s string) bool { return !strings.Contains(s, "/p2p/") }))
		// replicate: make the node fetch something.
		req, _ = json.Marshal(map[string]any{"digest": digest.FromString("intruder " + testnet.RandomHex(4)), "size": 1 << 40, "from": []string{h.ID().String()}})
		out, err = ask(n, protoReplicate, req)
		r.record(answered(n, "replicate of a 1 TiB blob", out, err, func(s string) bool { return strings.Contains(s, "error") }))
	}
	if leader == nil {
		return errors.New("intruder: no running node is the leader")
	}
	// forward: delete an acknowledged tag through the leader.
	cmd, _ := json.Marshal(map[string]string{"repo": p.Repo, "tag": p.Tag})
	out, err := ask(leader, protoForward, append([]byte{opDeleteTag}, cmd...))
	res := answered(leader, "forwarded delete of tag "+p.Repo+":"+p.Tag, out, err, func(s string) bool { return strings.Contains(s, `"code"`) })
	if _, _, _, gerr := testnet.NewClient(leader.c.URL()).GetManifest(ctx, p.Repo, p.Tag); gerr != nil {
		res.Refused = false
		res.Answer += fmt.Sprintf("; GET %s:%s now: %v", p.Repo, p.Tag, gerr)
	}
	r.record(res)
	// member: remove a follower for good, through the leader.
	if len(followers) > 0 {
		victim := followers[len(followers)-1]
		req, _ := json.Marshal(map[string]string{"op": "remove", "id": ids[victim].String()})
		out, err := ask(leader, protoMember, req)
		res := answered(leader, "member remove of "+victim.spec.Name, out, err, func(s string) bool { return strings.Contains(s, `"error"`) })
		sleep(ctx, time.Second)
		if s, serr := r.cl.status(ctx, leader); serr == nil {
			listed := false
			for _, m := range s.Raft.Members {
				listed = listed || m.ID == ids[victim].String()
			}
			if !listed {
				res.Refused = false
				res.Answer += "; the leader no longer lists " + victim.spec.Name + " as a member"
			}
		}
		r.record(res)
	}
	// raft: an AppendEntries with a higher term to a follower.
	if len(followers) > 0 {
		r.record(r.appendEntries(h, followers[0], ids[followers[0]], st.Raft.Term+1))
	}
	return nil
}

// answered judges a request/response exchange: an error (the stream was
// refused or reset) or an empty answer is a refusal, and so is an answer
// for which refusal says so.
func answered(n *node, attempt string, out []byte, err error, refusal func(string) bool) HostileResult {
	res := HostileResult{Action: "intrude", Node: n.spec.Name, Attempt: attempt}
	switch {
	case err != nil:
		res.Answer, res.Refused = "error: "+err.Error(), true
	case len(out) == 0:
		res.Answer, res.Refused = "empty answer", true
	default:
		res.Answer, res.Refused = string(out), refusal(string(out))
	}
	return res
}

// appendEntries sends n a heartbeat AppendEntries as a leader of a later
// term, through hashicorp/raft's own transport over a Raft stream: any
// answer means raft took the RPC from a stranger.
func (r *run) appendEntries(h *p2p.Host, n *node, id peer.ID, term uint64) HostileResult {
	res := HostileResult{Action: "intrude", Node: n.spec.Name, Attempt: fmt.Sprintf("raft AppendEntries of term %d", term)}
	layer := p2p.NewRaftStreamLayer(h)
	trans := raft.NewNetworkTransport(layer, 1, hostileDeadline, io.Discard)
	defer trans.Close()
	self := h.ID().String()
	req := &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(self), Addr: []byte(self)},
		Term:      term,
	}
	var resp raft.AppendEntriesResponse
	if err := trans.AppendEntries(raft.ServerID(id.String()), raft.ServerAddress(id.String()), req, &resp); err != nil {
		res.Answer, res.Refused = "error: "+err.Error(), true
		return res
	}
	res.Answer = fmt.Sprintf("answered: term %d, success %t", resp.Term, resp.Success)
	return res
}

// anyLeader reports whether one of nodes says it is the Raft leader.
func (r *run) anyLeader(ctx context.Context, nodes []*node) bool {
	for _, n := range nodes {
		if s, err := r.cl.status(ctx, n); err == nil && s.Raft.State == "Leader" {
			return true
		}
	}
	return false
}

// flood sends e.Count upload POSTs to n within e.For from floodWorkers
// clients, then pushes a small image through n: the node may refuse
// sessions past its bounds (429, 503), never fail (500), and must keep
// taking pushes.
func (r *run) flood(ctx context.Context, n *node, e Event) error {
	tr := &http.Transport{MaxConnsPerHost: floodWorkers, MaxIdleConnsPerHost: floodWorkers}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	statuses := map[string]int{}
	var opened []string // Locations of the sessions the flood opened
	var mu sync.Mutex
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	repo := r.s.Workload.Repo + "-flood"
	for range floodWorkers {
		wg.Go(func() {
			for range jobs {
				key, loc := "error", ""
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, n.c.URL()+"/v2/"+repo+"/blobs/uploads/", nil)
				if resp, err := client.Do(req); err == nil {
					key = strconv.Itoa(resp.StatusCode)
					if resp.StatusCode == http.StatusAccepted {
						loc = resp.Header.Get("Location")
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				mu.Lock()
				statuses[key]++
				if loc != "" {
					opened = append(opened, loc)
				}
				mu.Unlock()
			}
		})
	}
	start := time.Now()
	every := e.For.Duration / time.Duration(e.Count)
	for i := range e.Count {
		sleep(ctx, time.Until(start.Add(time.Duration(i)*every)))
		if ctx.Err() != nil {
			break
		}
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	took := time.Since(start)
	bad := 0
	for k, v := range statuses {
		if k == "error" || (k >= "500" && k != "503" && k != "507") {
			bad += v
		}
	}
	r.record(HostileResult{Action: "flood", Node: n.spec.Name,
		Attempt: fmt.Sprintf("%d upload POSTs in %.1fs", e.Count, took.Seconds()),
		Answer:  fmt.Sprintf("statuses %v", statuses), Refused: bad == 0})
	// The flood comes from this runner's address, as the pushes do, and a
	// node bounds the sessions of one client: the flooder cancels its
	// sessions (what a 429 tells a client to do), then the node must take
	// a push from that same address again.
	cancelled := r.cancelUploads(ctx, client, n, opened)
	r.record(HostileResult{Action: "flood", Node: n.spec.Name,
		Attempt: fmt.Sprintf("cancel the %d sessions the flood opened", len(opened)),
		Answer:  fmt.Sprintf("%d cancelled (204)", cancelled), Refused: true})
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	p, err := r.pushImage(pctx, n, r.s.Workload.Repo, "after-flood", 1, 64<<10)
	cancel()
	r.hist.push(p, err)
	res := HostileResult{Action: "flood", Node: n.spec.Name, Attempt: "a push right after the flood", Answer: "acknowledged", Refused: err == nil}
	if err != nil {
		res.Answer = err.Error()
	}
	r.record(res)
	return nil
}

// cancelUploads DELETEs each upload session at its Location (relative to
// n's URL or absolute), floodWorkers at a time, and counts the 204s.
func (r *run) cancelUploads(ctx context.Context, client *http.Client, n *node, locations []string) int {
	var done atomic.Int64
	jobs := make(chan string)
	var wg sync.WaitGroup
	for range floodWorkers {
		wg.Go(func() {
			for loc := range jobs {
				u := loc
				if strings.HasPrefix(u, "/") {
					u = n.c.URL() + u
				}
				req, err := http.NewRequestWithContext(ctx, http.MethodDelete, u, nil)
				if err != nil {
					continue
				}
				if resp, err := client.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusNoContent {
						done.Add(1)
					}
				}
			}
		})
	}
	for _, loc := range locations {
		if ctx.Err() != nil {
			break
		}
		jobs <- loc
	}
	close(jobs)
	wg.Wait()
	return int(done.Load())
}

// slowReaders opens e.Count GETs of the largest blob of e.Image through n
// and reads nothing (but the status line) for e.For, pulling another
// image through n meanwhile. Then each connection is drained: a reader
// the node cut gets less than the blob (what the socket buffers held),
// one it did not cut gets all of it.
func (r *run) slowReaders(ctx context.Context, n *node, e Event) error {
	r.hist.mu.Lock()
	p, ok := r.hist.byImage[e.Image]
	r.hist.mu.Unlock()
	if !ok {
		return fmt.Errorf("image %q was not acknowledged by its push", e.Image)
	}
	big := p.Blobs[0]
	for _, b := range p.Blobs {
		if b.Size > big.Size {
			big = b
		}
	}
	host := strings.TrimPrefix(n.c.URL(), "http://")
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	opened := 0
	for range e.Count {
		c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", host)
		if err != nil {
			break
		}
		conns = append(conns, c)
		fmt.Fprintf(c, "GET /v2/%s/blobs/%s HTTP/1.1\r\nHost: %s\r\n\r\n", p.Repo, big.Digest, host)
		opened++
	}
	// Others are served meanwhile.
	sleep(ctx, 2*time.Second)
	other, ok := r.hist.randomAcked()
	if ok {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := pullImage(pctx, n, other)
		cancel()
		res := HostileResult{Action: "slow-readers", Node: n.spec.Name, Attempt: fmt.Sprintf("a pull while %d readers stall", opened), Answer: "served", Refused: err == nil}
		if err != nil {
			res.Answer = err.Error()
		}
		r.record(res)
	}
	sleep(ctx, e.For.Duration-2*time.Second)
	cut, whole, failed := 0, 0, 0
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			cut++ // not even the head: cut before it was sent
			continue
		}
		nb, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode != http.StatusOK:
			failed++
		case nb < big.Size:
			cut++
		default:
			whole++
		}
	}
	r.record(HostileResult{Action: "slow-readers", Node: n.spec.Name,
		Attempt: fmt.Sprintf("%d GETs of a %d-byte blob, unread for %s", opened, big.Size, e.For.Duration),
		Answer:  fmt.Sprintf("%d cut by the node, %d still served in full, %d not 200", cut, whole, failed),
		Refused: opened == e.Count && whole == 0})
	return nil
}

// junkMethods sends e.Count requests with made-up methods to n within
// e.For: each must be refused with a 4xx.
func (r *run) junkMethods(ctx context.Context, n *node, e Event) error {
	client := &http.Client{Timeout: 10 * time.Second}
	statuses := map[string]int{}
	every := e.For.Duration / time.Duration(e.Count)
	start := time.Now()
	for i := range e.Count {
		sleep(ctx, time.Until(start.Add(time.Duration(i)*every)))
		method := "X" + strings.ToUpper(testnet.RandomHex(6))
		req, err := http.NewRequestWithContext(ctx, method, n.c.URL()+"/v2/"+r.s.Workload.Repo+"/tags/list", nil)
		if err != nil {
			return err
		}
		key := "error"
		if resp, err := client.Do(req); err == nil {
			key = strconv.Itoa(resp.StatusCode)
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		statuses[key]++
	}
	bad := 0
	for k, v := range statuses {
		if !strings.HasPrefix(k, "4") {
			bad += v
		}
	}
	r.record(HostileResult{Action: "junk-methods", Node: n.spec.Name, Attempt: fmt.Sprintf("%d requests with made-up methods", e.Count),
		Answer: fmt.Sprintf("statuses %v", statuses), Refused: bad == 0})
	return nil
}

// oversized sends n requests past every size a client may choose; each
// must get a 4xx. The manifest is an acknowledged one, so that only the
// size is wrong.
func (r *run) oversized(ctx context.Context, n *node) error {
	p, ok := r.hist.randomAcked()
	if !ok {
		return errors.New("oversized: nothing acknowledged yet to re-tag")
	}
	c := testnet.NewClient(n.c.URL())
	body, mt, _, err := c.GetManifest(ctx, p.Repo, p.Tag)
	if err != nil {
		return fmt.Errorf("oversized: reading %s:%s: %w", p.Repo, p.Tag, err)
	}
	base := n.c.URL() + "/v2/" + p.Repo + "/manifests/" + p.Manifest.String()
	tags := func(count, size int) string {
		q := make(url.Values)
		for i := range count {
			t := fmt.Sprintf("o%d-", i)
			q.Add("tag", t+strings.Repeat("x", max(size-len(t), 0)))
		}
		return q.Encode()
	}
	big := make([]byte, 5<<20)
	for i := range big {
		big[i] = ' '
	}
	copy(big, body)
	attempts := []struct {
		what    string
		url     string
		header  string
		body    []byte
		listing string // a tag that must not exist afterwards
	}{
		{"manifest PUT with 20,000 ?tag=", base + "?" + tags(20000, 6), "", body, "o19999-"},
		{"manifest PUT with 10,000 tags of 60 characters", base + "?" + tags(10000, 60), "", body, ""},
		{"manifest PUT with a 2 MiB header", base, strings.Repeat("a", 2<<20), body, ""},
		{"5 MiB manifest PUT", n.c.URL() + "/v2/" + p.Repo + "/manifests/oversized", "", big, ""},
	}
	for _, a := range attempts {
		res := HostileResult{Action: "oversized", Node: n.spec.Name, Attempt: a.what}
		rctx, cancel := context.WithTimeout(ctx, hostileDeadline)
		req, err := http.NewRequestWithContext(rctx, http.MethodPut, a.url, strings.NewReader(string(a.body)))
		if err != nil {
			cancel()
			return err
		}
		req.Header.Set("Content-Type", mt)
		if a.header != "" {
			req.Header.Set("X-Oversized", a.header)
		}
		resp, err := (&http.Client{}).Do(req)
		if err != nil {
			res.Answer, res.Refused = "error: "+err.Error(), false
		} else {
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
			resp.Body.Close()
			res.Answer = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(msg)))
			res.Refused = resp.StatusCode >= 400 && resp.StatusCode < 500
		}
		cancel()
		r.record(res)
	}
	// Every node must still answer (a committed entry that cannot apply
	// would take them all down).
	sleep(ctx, 3*time.Second)
	for _, o := range r.cl.running() {
		res := HostileResult{Action: "oversized", Node: o.spec.Name, Attempt: "readyz after the oversized requests", Refused: true, Answer: "ready"}
		if err := r.cl.waitReady(ctx, o, 20*time.Second); err != nil {
			res.Refused, res.Answer = false, err.Error()
		}
		r.record(res)
	}
	return nil
}

// countSeries returns the number of series n's /metrics exposes.
func (r *run) countSeries(ctx context.Context, n *node) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.c.URL()+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := r.cl.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s/metrics: %s", n.c.URL(), resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	count := 0
	for sc.Scan() {
		if line := sc.Text(); line != "" && !strings.HasPrefix(line, "#") {
			count++
		}
	}
	return count, sc.Err()
}

// seriesBefore records every running node's series count as the load
// begins.
func (r *run) seriesBefore(ctx context.Context) {
	for _, n := range r.cl.running() {
		v, err := r.countSeries(ctx, n)
		if err != nil {
			r.note(fmt.Sprintf("metrics series of %s at the start: %v", n.spec.Name, err))
			continue
		}
		r.repMu.Lock()
		r.rep.Series = append(r.rep.Series, SeriesCount{Node: n.spec.Name, Before: v, After: -1, Bound: seriesBound(v)})
		r.repMu.Unlock()
	}
}

// checkSeries fails the run for a running node whose series count grew
// past its bound.
func (r *run) checkSeries(ctx context.Context) {
	for i := range r.rep.Series {
		s := &r.rep.Series[i]
		n := r.cl.byName[s.Node]
		if r.cl.stateOf(n) != stateRunning {
			continue
		}
		v, err := r.countSeries(ctx, n)
		if err != nil {
			r.rep.fail("metrics series of %s at the end: %v", s.Node, err)
			continue
		}
		s.After = v
		if v > s.Bound {
			r.rep.fail("node %s exposes %d metrics series, %d at the start: more than %d is an explosion (a series per request?)", s.Node, v, s.Before, s.Bound)
		}
	}
}

// hostileMarkdown renders the hostile attempts and series counts.
func (r *Report) hostileMarkdown(b *strings.Builder) {
	if len(r.Hostile) > 0 {
		b.WriteString("\n## Hostile attempts\n\n| action | node | attempt | refused | answer |\n| --- | --- | --- | --- | --- |\n")
		for _, h := range r.Hostile {
			mark := "yes"
			if !h.Refused {
				mark = "**NO**"
			}
			fmt.Fprintf(b, "| %s | %s | %s | %s | %s |\n", h.Action, h.Node, h.Attempt, mark,
				strings.ReplaceAll(strings.ReplaceAll(h.Answer, "|", "\\|"), "\n", " "))
		}
	}
	if len(r.Series) > 0 {
		b.WriteString("\n## Metrics series\n\n| node | at the start | at the end | bound |\n| --- | ---: | ---: | ---: |\n")
		for _, s := range r.Series {
			after := strconv.Itoa(s.After)
			if s.After < 0 {
				after = "not measured"
			}
			fmt.Fprintf(b, "| %s | %d | %s | %d |\n", s.Node, s.Before, after, s.Bound)
		}
	}
}
