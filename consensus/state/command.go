package state

import (
	"encoding/json"
	"fmt"

	"github.com/opencontainers/go-digest"
)

// Op names a command. The set is closed: a node that meets an op it does not
// know fails that entry (the same way on every node) and moves on.
type Op byte

const (
	OpPutManifest Op = iota + 1
	OpDeleteManifest
	OpDeleteTag
	OpLinkBlob
	OpUnlinkBlob
	// OpPutSetting stores a named cluster setting (Name, Body): a record
	// from a closed set of names (settings.go), replaced whole.
	OpPutSetting
	// OpGCSweep is a garbage collection decision (gc.go): unlink the
	// listed blobs that nothing referenced at MarkIndex and nothing linked
	// or referenced since, and tombstone them.
	OpGCSweep
	// OpPutMirrorTag records what an upstream registry answered for a tag
	// of a mirrored repository, and when it was asked (mirror.go).
	OpPutMirrorTag
)

// LastOp is the newest op this release applies. Members tell each other
// theirs (node/features.go) so that a command an older member cannot apply
// is not proposed while one runs: it would fail there and succeed on the
// others, and the states would part. Raise it with every new op.
const LastOp = OpPutMirrorTag

// Command is one replicated write. Each op uses a subset of the fields.
//
// Encoding: the op byte, then the JSON of the struct. encoding/json writes
// fields in declaration order and map keys sorted, so a command always
// encodes to the same bytes.
type Command struct {
	Op           Op                `json:"-"`
	Repo         string            `json:"repo"`
	Digest       digest.Digest     `json:"digest"`
	Tag          string            `json:"tag,omitempty"`  // OpDeleteTag
	Tags         []string          `json:"tags,omitempty"` // OpPutManifest
	Size         int64             `json:"size,omitempty"`
	MediaType    string            `json:"mediaType,omitempty"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Subject      digest.Digest     `json:"subject,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	Body         []byte            `json:"body,omitempty"`
	Name         string            `json:"name,omitempty"` // OpPutSetting
	// CheckIndex (OpPutManifest): the applied index at or before which the
	// proposer checked that every blob the manifest references is linked.
	// The put fails if one of them was garbage-collected after it (gc.go).
	// 0 (older entries) is the strictest: any tombstone fails it.
	CheckIndex uint64 `json:"checkIndex,omitempty"`
	// Time (OpLinkBlob): the proposer's clock when it linked the blob, in
	// Unix nanoseconds; the GC grace period counts from it.
	// (OpGCSweep): when the collection began (its mark).
	Time int64 `json:"time,omitempty"`
	// OpGCSweep: the applied index the mark read the state at, the link
	// time before which a blob may go (mark time minus the grace), and the
	// blobs to unlink with the repositories that linked them at the mark.
	MarkIndex uint64      `json:"markIndex,omitempty"`
	Cutoff    int64       `json:"cutoff,omitempty"`
	Sweep     []SweepBlob `json:"sweep,omitempty"`
	// Upstream and CheckedAt (unix nanoseconds, the proposer's clock)
	// belong to OpPutMirrorTag.
	Upstream  string `json:"upstream,omitempty"`
	CheckedAt int64  `json:"checkedAt,omitempty"`
}

// SweepBlob is one blob an OpGCSweep unlinks: every repository that
// linked it at the mark, in byte order.
type SweepBlob struct {
	Digest digest.Digest `json:"digest"`
	Repos  []string      `json:"repos"`
}

// Encode returns the bytes a command travels and is logged as.
func (c Command) Encode() ([]byte, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("consensus: encoding command: %w", err)
	}
	return append([]byte{byte(c.Op)}, b...), nil
}

// DecodeCommand decodes an encoded command; the error wraps
// ErrInvalidCommand. The command still has to be validated.
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	if len(b) == 0 {
		return c, fmt.Errorf("consensus: %w: empty command", ErrInvalidCommand)
	}
	if err := json.Unmarshal(b[1:], &c); err != nil {
		return c, fmt.Errorf("consensus: %w: decoding command: %w", ErrInvalidCommand, err)
	}
	c.Op = Op(b[0])
	return c, nil
}

// Kind names what an applied entry did (Applied.Kind).
type Kind string

const (
	KindPutManifest    Kind = "put_manifest"
	KindDeleteManifest Kind = "delete_manifest"
	KindDeleteTag      Kind = "delete_tag"
	KindLinkBlob       Kind = "link_blob"
	KindUnlinkBlob     Kind = "unlink_blob"
	KindPutSetting     Kind = "put_setting"
	KindGCSweep        Kind = "gc_sweep"
	KindPutMirrorTag   Kind = "put_mirror_tag"
	// KindRestore: the whole state was replaced by a snapshot up to Index;
	// a follower of the stream reads it again.
	KindRestore Kind = "restore"
	// KindInvalid: the entry did not decode to a known command (it changed
	// nothing but the applied index).
	KindInvalid Kind = "invalid"
)

// Kind is the kind of the op.
func (o Op) Kind() Kind {
	switch o {
	case OpPutManifest:
		return KindPutManifest
	case OpDeleteManifest:
		return KindDeleteManifest
	case OpDeleteTag:
		return KindDeleteTag
	case OpLinkBlob:
		return KindLinkBlob
	case OpUnlinkBlob:
		return KindUnlinkBlob
	case OpPutSetting:
		return KindPutSetting
	case OpGCSweep:
		return KindGCSweep
	case OpPutMirrorTag:
		return KindPutMirrorTag
	}
	return KindInvalid
}

// Applied is one entry applied to the state: its Raft index, its kind and
// what it named.
type Applied struct {
	Index  uint64
	Kind   Kind
	Repo   string
	Digest digest.Digest // "" for a tag delete
	Tag    string        // a tag delete's tag
	// Setting is the name of the setting a put_setting entry wrote.
	Setting string
	// Failed: the command was refused (not found, out of bounds) and
	// changed nothing but the applied index.
	Failed bool
}
