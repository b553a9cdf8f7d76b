package consensus

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/raft"
)

// The tail protocol (tail.go serves it, follow.go follows it), on one
// bidirectional stream per follower:
//
//	follower → server   request: tailMagic, after (uint64), heartbeat in ms (uint32)
//	server → follower   frames, each: type (1 byte), length (uint32 big-endian), payload
//	  leader      JSON tailLeader: the leader the server knows and its term
//	  entries     uvarint count, then per entry: index, term (uint64), type (1 byte),
//	              uvarint length, data; indexes contiguous from after+1
//	  snapshot    JSON tailSnapshot: the raft index and term it covers, the configuration
//	  chunk       bytes of the FSM snapshot stream (fsm.go's format), in order
//	  snapshotEnd total length of the chunks (uint64)
//	  heartbeat   empty; sent when nothing else was for a heartbeat interval
//	  refused     text: why the server will not serve this follower (it serves
//	              as many as it may); the server closes the stream after it
//
// Every frame's length is bounded by its type (maxFrame); a reader refuses
// a longer one before reading it. Only committed entries are sent.
const (
	tailMagic = "meshreg-tail-v1\n"

	frameLeader      byte = 1
	frameEntries     byte = 2
	frameSnapshot    byte = 3
	frameChunk       byte = 4
	frameSnapshotEnd byte = 5
	frameHeartbeat   byte = 6
	frameRefused     byte = 7

	// maxTailEntry bounds one entry's data: a command carries a manifest
	// of up to MaxManifestBytes as base64 JSON plus annotations (the node's
	// forwarding RPC allows the same, maxForwardLen).
	maxTailEntry = 32 << 20
	// maxEntriesFrame bounds an entries frame: one entry of the largest
	// size with its framing always fits; batches stop at tailBatchBytes.
	maxEntriesFrame = maxTailEntry + 64
	tailBatchBytes  = 1 << 20
	tailBatchCount  = 512
	// maxTailControl bounds the JSON frames (leader, snapshot header).
	maxTailControl = 1 << 20
	// maxTailServers bounds a configuration's servers, maxTailName an id
	// or address in it.
	maxTailServers = 1024
	maxTailName    = 1024
	// maxTailRefusal bounds a refusal's text.
	maxTailRefusal = 1024
	// tailChunk is the size of a snapshot chunk; maxTailSnapshot bounds a
	// whole snapshot a follower accepts (metadata only: far above any
	// real registry's).
	tailChunk       = 256 << 10
	maxTailSnapshot = 64 << 30

	// tailHeartbeat is how often a server sends something at least; a
	// follower drops a stream silent for tailSilence heartbeats.
	tailHeartbeat    = 2 * time.Second
	tailSilence      = 3
	minTailHeartbeat = 50 * time.Millisecond
	maxTailHeartbeat = 10 * time.Second
)

// errTailProtocol marks a peer that broke the protocol.
var errTailProtocol = errors.New("tail protocol violation")

// tailRequest is what a follower asks for.
type tailRequest struct {
	After     uint64        // the raft index applied through
	Heartbeat time.Duration // the heartbeat interval wanted
}

func writeTailRequest(w io.Writer, req tailRequest) error {
	b := append([]byte(tailMagic), make([]byte, 12)...)
	binary.BigEndian.PutUint64(b[len(tailMagic):], req.After)
	binary.BigEndian.PutUint32(b[len(tailMagic)+8:], uint32(req.Heartbeat/time.Millisecond))
	_, err := w.Write(b)
	return err
}

// readTailRequest reads a request, clamping the heartbeat to its bounds.
func readTailRequest(r io.Reader) (tailRequest, error) {
	b := make([]byte, len(tailMagic)+12)
	if _, err := io.ReadFull(r, b); err != nil {
		return tailRequest{}, fmt.Errorf("reading tail request: %w", err)
	}
	if string(b[:len(tailMagic)]) != tailMagic {
		return tailRequest{}, fmt.Errorf("%w: not a tail request", errTailProtocol)
	}
	after := binary.BigEndian.Uint64(b[len(tailMagic):])
	if after == ^uint64(0) {
		return tailRequest{}, fmt.Errorf("%w: no entry follows index %d", errTailProtocol, after)
	}
	hb := time.Duration(binary.BigEndian.Uint32(b[len(tailMagic)+8:])) * time.Millisecond
	return tailRequest{After: after, Heartbeat: min(max(hb, minTailHeartbeat), maxTailHeartbeat)}, nil
}

// tailLeader is the leader a server knows ("" for none) and its term.
type tailLeader struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Term    uint64 `json:"term"`
}

// tailSnapshot heads a snapshot: the raft index and term the state covers
// and the server's configuration.
type tailSnapshot struct {
	Index   uint64   `json:"index"`
	Term    uint64   `json:"term"`
	Members []Member `json:"members"`
}

// maxFrame is the largest payload a frame of type t may have; 0 for an
// unknown type.
func maxFrame(t byte) int {
	switch t {
	case frameLeader, frameSnapshot:
		return maxTailControl
	case frameEntries:
		return maxEntriesFrame
	case frameChunk:
		return tailChunk
	case frameSnapshotEnd:
		return 8
	case frameHeartbeat:
		return 0
	case frameRefused:
		return maxTailRefusal
	}
	return -1
}

func writeFrame(w io.Writer, t byte, payload []byte) error {
	if len(payload) > maxFrame(t) {
		return fmt.Errorf("tail frame %d of %d bytes: at most %d", t, len(payload), maxFrame(t))
	}
	var h [5]byte
	h[0] = t
	binary.BigEndian.PutUint32(h[1:], uint32(len(payload)))
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

func writeJSONFrame(w io.Writer, t byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return writeFrame(w, t, b)
}

// readFrame reads one frame, refusing an unknown type or a length above
// its type's bound before reading the payload.
func readFrame(r io.Reader) (byte, []byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	t, n := h[0], binary.BigEndian.Uint32(h[1:])
	limit := maxFrame(t)
	if limit < 0 {
		return 0, nil, fmt.Errorf("%w: unknown frame type %d", errTailProtocol, t)
	}
	if int64(n) > int64(limit) {
		return 0, nil, fmt.Errorf("%w: frame type %d of %d bytes, at most %d", errTailProtocol, t, n, limit)
	}
	if n <= snapshotDirectRead {
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			return 0, nil, unexpectedEOF(err)
		}
		return t, b, nil
	}
	// A large length is only a claim: read it in growing steps, so that a
	// peer which stops short costs what it sent, not what it claimed.
	var buf bytes.Buffer
	buf.Grow(snapshotDirectRead)
	got, err := io.CopyN(&buf, r, int64(n))
	if err == nil && got != int64(n) {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return 0, nil, unexpectedEOF(err)
	}
	return t, buf.Bytes(), nil
}

// tailEntry is one log entry on the wire.
type tailEntry struct {
	Index, Term uint64
	Type        raft.LogType
	Data        []byte
}

// appendEntry encodes e after b.
func appendEntry(b []byte, e tailEntry) []byte {
	b = binary.BigEndian.AppendUint64(b, e.Index)
	b = binary.BigEndian.AppendUint64(b, e.Term)
	b = append(b, byte(e.Type))
	b = binary.AppendUvarint(b, uint64(len(e.Data)))
	return append(b, e.Data...)
}

// encodeEntries is an entries frame's payload.
func encodeEntries(es []tailEntry) []byte {
	b := binary.AppendUvarint(nil, uint64(len(es)))
	for _, e := range es {
		b = appendEntry(b, e)
	}
	return b
}

// decodeEntries decodes an entries frame's payload (bounded by maxFrame):
// the count and each length are checked against what is left.
func decodeEntries(b []byte) ([]tailEntry, error) {
	r := bytes.NewReader(b)
	n, err := binary.ReadUvarint(r)
	if err != nil || n == 0 || n > uint64(len(b)/17) {
		return nil, fmt.Errorf("%w: bad entry count", errTailProtocol)
	}
	es := make([]tailEntry, 0, n)
	for range n {
		var head [17]byte
		if _, err := io.ReadFull(r, head[:]); err != nil {
			return nil, fmt.Errorf("%w: truncated entry", errTailProtocol)
		}
		l, err := binary.ReadUvarint(r)
		if err != nil || l > maxTailEntry || l > uint64(r.Len()) {
			return nil, fmt.Errorf("%w: bad entry length", errTailProtocol)
		}
		e := tailEntry{Index: binary.BigEndian.Uint64(head[:8]), Term: binary.BigEndian.Uint64(head[8:16]),
			Type: raft.LogType(head[16]), Data: make([]byte, l)}
		if _, err := io.ReadFull(r, e.Data); err != nil {
			return nil, fmt.Errorf("%w: truncated entry", errTailProtocol)
		}
		es = append(es, e)
	}
	if r.Len() != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the entries", errTailProtocol, r.Len())
	}
	return es, nil
}

// checkMembers refuses a configuration beyond the bounds.
func checkMembers(ms []Member) error {
	if len(ms) > maxTailServers {
		return fmt.Errorf("%w: %d servers in a configuration, at most %d", errTailProtocol, len(ms), maxTailServers)
	}
	for _, m := range ms {
		if m.ID == "" || len(m.ID) > maxTailName || len(m.Address) > maxTailName {
			return fmt.Errorf("%w: a server id or address is empty or longer than %d", errTailProtocol, maxTailName)
		}
	}
	return nil
}

// decodeConfiguration decodes a configuration entry's data; raft's decoder
// panics on bad input, which a hostile server must not cause.
func decodeConfiguration(data []byte) (conf raft.Configuration, ms []Member, err error) {
	defer func() {
		if p := recover(); p != nil {
			conf, ms, err = raft.Configuration{}, nil, fmt.Errorf("%w: bad configuration entry: %v", errTailProtocol, p)
		}
	}()
	conf = raft.DecodeConfiguration(data)
	ms = membersOf(conf)
	return conf, ms, checkMembers(ms)
}

// membersOf converts a raft configuration.
func membersOf(conf raft.Configuration) []Member {
	ms := []Member{}
	for _, srv := range conf.Servers {
		ms = append(ms, Member{ID: string(srv.ID), Address: string(srv.Address), Suffrage: suffrageOf(srv.Suffrage)})
	}
	return ms
}
