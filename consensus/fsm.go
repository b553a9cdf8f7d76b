package consensus

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// op names a command. The set is closed: a node that meets an op it does not
// know fails that entry (the same way on every node) and moves on.
type op byte

const (
	opPutManifest op = iota + 1
	opDeleteManifest
	opDeleteTag
	opLinkBlob
	opUnlinkBlob
)

// command is one replicated write. Each op uses a subset of the fields.
//
// Encoding: the op byte, then the JSON of the struct. encoding/json writes
// fields in declaration order and map keys sorted, so a command always
// encodes to the same bytes.
type command struct {
	Op           op                `json:"-"`
	Repo         string            `json:"repo"`
	Digest       digest.Digest     `json:"digest"`
	Tag          string            `json:"tag,omitempty"`  // opDeleteTag
	Tags         []string          `json:"tags,omitempty"` // opPutManifest
	Size         int64             `json:"size,omitempty"`
	MediaType    string            `json:"mediaType,omitempty"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Subject      digest.Digest     `json:"subject,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	Body         []byte            `json:"body,omitempty"`
}

func (c command) encode() ([]byte, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("consensus: encoding command: %w", err)
	}
	return append([]byte{byte(c.Op)}, b...), nil
}

// decodeCommand decodes an encoded command; the error wraps
// ErrInvalidCommand. The command still has to be validated.
func decodeCommand(b []byte) (command, error) {
	var c command
	if len(b) == 0 {
		return c, fmt.Errorf("consensus: %w: empty command", ErrInvalidCommand)
	}
	if err := json.Unmarshal(b[1:], &c); err != nil {
		return c, fmt.Errorf("consensus: %w: decoding command: %w", ErrInvalidCommand, err)
	}
	c.Op = op(b[0])
	return c, nil
}

// manifestMeta is what a repository knows of a manifest it holds
// (m<repo>·<digest>); the bytes are shared (b<digest>).
type manifestMeta struct {
	MediaType    string            `json:"mediaType,omitempty"`
	Subject      digest.Digest     `json:"subject,omitempty"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	Size         int64             `json:"size"`
}

// fsm is the registry metadata as a raft.FSM over a badger database (see
// keys.go for the layout).
//
// Concurrency: raft calls Apply, Snapshot and Restore from its FSM goroutine,
// one at a time. Persist and Release of a snapshot run on raft's snapshot
// goroutine, concurrently with Apply. Readers (the Store's read methods) run
// on any goroutine, concurrently with all of these; badger transactions give
// them consistent views.
type fsm struct {
	db  *badger.DB
	log *slog.Logger
	// onFatal is Config.OnFatal; fault is Config.ApplyFault (tests only).
	onFatal func(error)
	fault   func(index uint64) error
	// onApplied and onConfig, when set, hear of each entry applied (and
	// each restore) and of each configuration committed (watch.go). They
	// run on raft's FSM goroutine and must not block.
	onApplied func(Applied)
	onConfig  func()
	// configIndex is the Raft index of the latest configuration committed
	// (or of the state restored from a snapshot, which carries one).
	configIndex atomic.Uint64
	// failed holds the storage error that stopped the FSM for good (see
	// Apply); nil while it works.
	failed atomic.Pointer[error]

	// mu keeps readers and snapshot writers out while Restore drops and
	// reloads the database: they hold it shared, Restore exclusively.
	mu sync.RWMutex
	// gen counts restores (guarded by mu), so that a snapshot opened before
	// a restore refuses to persist a view the restore dropped.
	gen uint64
}

var (
	_ raft.FSM                = (*fsm)(nil)
	_ raft.ConfigurationStore = (*fsm)(nil)
)

// StoreConfiguration is raft's word that a membership configuration was
// committed. The state keeps none (raft has it in its log and snapshots);
// the store's watchers hear of it.
func (f *fsm) StoreConfiguration(index uint64, _ raft.Configuration) {
	f.configIndex.Store(index)
	if f.onConfig != nil {
		f.onConfig()
	}
}

// Apply applies a committed log entry. It must be deterministic: the same
// entries in the same order leave every node with the same bytes.
//
// The entry's effect and its index are written in one transaction, and an
// entry whose index is not above the stored index is skipped, so replaying
// the log after a restart (or applying an entry twice) changes nothing. The
// one exception is a manifest delete, whose tags go in bounded transactions
// first (see dropTags): replayed, it removes whatever tags are left, then the
// manifest, with the same end state.
//
// The response is the command's error or nil: ErrNotFound, or
// ErrInvalidCommand for an entry outside the bounds of limits.go (whoever
// proposed it). A failing command leaves no trace but the applied index.
//
// Apply never panics. A storage failure leaves the applied index where it
// was and stops the FSM for good (sticky): every later entry, snapshot and
// restore is refused with ErrStorageFailed, since the state can no longer
// follow the log; OnFatal tells the node to stop, and a restart replays the
// entry that failed.
func (f *fsm) Apply(l *raft.Log) (result any) {
	if l.Type != raft.LogCommand {
		return nil
	}
	if err := f.failure(); err != nil {
		return fmt.Errorf("consensus: entry %d not applied: %w", l.Index, err)
	}
	// Last resort: a panic below (a bug, or badger's) is taken as a
	// storage failure, which stops this node cleanly instead of crashing
	// it; the entry is applied again at restart.
	defer func() {
		if p := recover(); p != nil {
			result = f.fail(l.Index, fmt.Errorf("panic: %v", p))
		}
	}()
	resp, err := f.apply(l.Index, l.Data)
	if err != nil {
		return f.fail(l.Index, err)
	}
	return resp
}

// failure is the storage error that stopped the FSM, nil while it works.
func (f *fsm) failure() error {
	if p := f.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// fail records a storage failure for good, logs it once and calls OnFatal
// on a goroutine of its own (it may close the store, which waits for the
// FSM goroutine this runs on).
func (f *fsm) fail(index uint64, cause error) error {
	err := fmt.Errorf("consensus: %w: applying raft entry %d: %w", ErrStorageFailed, index, cause)
	if !f.failed.CompareAndSwap(nil, &err) {
		return f.failure()
	}
	f.log.Error("the metadata database failed: this node applies no more writes and stops. "+
		"Check the disk under the data directory (free space, I/O errors in the kernel log), then restart the node: "+
		"it applies the entry again and catches up with the cluster", "index", index, "err", cause)
	if f.onFatal != nil {
		go f.onFatal(err)
	}
	return err
}

// apply returns the command's result and, separately, any storage error.
func (f *fsm) apply(index uint64, data []byte) (resp, err error) {
	txn := f.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	v, _, err := tx{txn}.get([]byte(keyApplied))
	if err != nil {
		return nil, err
	}
	if index <= decodeUint64(v) {
		return nil, nil // already applied: a replay
	}
	c, resp := decodeCommand(data)
	if resp == nil {
		resp = c.validate()
	}
	if resp == nil && c.Op == opDeleteManifest {
		txn.Discard()
		if err := f.dropTags(c.Repo, c.Digest); err != nil {
			return nil, err
		}
		txn = f.db.NewTransaction(true)
	}
	if resp == nil {
		resp, err = tx{txn}.execute(c)
		if err == nil {
			err = txn.Set([]byte(keyApplied), encodeUint64(index))
		}
		// A safety net: the bounds keep every command far inside one
		// transaction, but should one not fit, that is decided by the
		// same bytes on every node, so it is the command's error too.
		if errors.Is(err, badger.ErrTxnTooBig) {
			resp, err = fmt.Errorf("consensus: entry %d: %w: its writes do not fit in one transaction (%w)", index, ErrInvalidCommand, err), nil
		}
		if err != nil {
			return nil, err
		}
	}
	if resp != nil {
		txn.Discard()
		txn = f.db.NewTransaction(true)
		if err := txn.Set([]byte(keyApplied), encodeUint64(index)); err != nil {
			return nil, err
		}
	}
	if f.fault != nil {
		if err := f.fault(index); err != nil {
			return nil, err
		}
	}
	if err := txn.Commit(); err != nil {
		return nil, err
	}
	if f.onApplied != nil {
		f.onApplied(Applied{Index: index, Kind: kindOf(c.Op), Repo: c.Repo, Digest: c.Digest, Tag: c.Tag, Failed: resp != nil})
	}
	return resp, nil
}

// dropTags removes the repository's tags that point at d, deleteTagBatch
// of them per transaction, so that deleting a manifest with any number of
// tags stays within badger's transaction limits. These transactions leave
// the applied index alone: after a crash, the delete is applied again and
// removes what is left. Readers may meanwhile see the manifest with some of
// its tags gone, never a tag without its manifest.
func (f *fsm) dropTags(repo string, d digest.Digest) error {
	prefix := keyPrefix(prefixTagByDig, repo, string(d))
	for {
		n, err := f.dropTagBatch(repo, d, prefix)
		if err != nil || n < deleteTagBatch {
			return err
		}
	}
}

func (f *fsm) dropTagBatch(repo string, d digest.Digest, prefix []byte) (int, error) {
	txn := f.db.NewTransaction(true)
	defer txn.Discard()
	t := tx{txn}
	tags := t.keysAfter(prefix, "", deleteTagBatch)
	if len(tags) == 0 {
		return 0, nil
	}
	for _, tag := range tags {
		if err := t.Delete(tagKey(repo, tag)); err != nil {
			return 0, err
		}
		if err := t.Delete(tagByDigestKey(repo, d, tag)); err != nil {
			return 0, err
		}
	}
	return len(tags), txn.Commit()
}

// appliedIndex is the index of the last command entry applied (0 if none).
func (f *fsm) appliedIndex() (uint64, error) {
	var idx uint64
	err := f.view(func(t tx) error {
		v, _, err := t.get([]byte(keyApplied))
		idx = decodeUint64(v)
		return err
	})
	return idx, err
}

// view runs fn in a read-only transaction, excluded from Restore.
func (f *fsm) view(fn func(t tx) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.db.View(func(txn *badger.Txn) error { return fn(tx{txn}) })
}

// tx adds the FSM's reads and writes to a badger transaction.
type tx struct{ *badger.Txn }

// get returns the value at k; ok is false when there is none.
func (t tx) get(k []byte) (v []byte, ok bool, err error) {
	item, err := t.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	v, err = item.ValueCopy(nil)
	return v, err == nil, err
}

// hasPrefix reports whether any key starts with prefix.
func (t tx) hasPrefix(prefix []byte) bool {
	it := t.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	it.Rewind()
	return it.Valid()
}

// keysAfter returns the keys starting with prefix, in byte order, without the
// prefix: those strictly after `after` when it is not empty, at most n of
// them (all when n < 0). The result is never nil.
func (t tx) keysAfter(prefix []byte, after string, n int) []string {
	out := []string{}
	if n == 0 {
		return out
	}
	it := t.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Seek(append(append([]byte{}, prefix...), after...)); it.Valid(); it.Next() {
		name := string(it.Item().Key()[len(prefix):])
		if after != "" && name <= after {
			continue
		}
		out = append(out, name)
		if len(out) == n {
			break
		}
	}
	return out
}

func (t tx) setJSON(k []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return t.Set(k, b)
}

// execute runs one validated command in the transaction. A command that
// cannot apply to the state (ErrNotFound) is a command error (resp).
func (t tx) execute(c command) (resp, err error) {
	switch c.Op {
	case opPutManifest:
		return nil, t.putManifest(c)
	case opDeleteManifest:
		return t.deleteManifest(c.Repo, c.Digest)
	case opDeleteTag:
		return t.deleteTag(c.Repo, c.Tag)
	case opLinkBlob:
		return nil, t.linkBlob(c.Repo, c.Digest, c.Size)
	case opUnlinkBlob:
		return t.unlinkBlob(c.Repo, c.Digest)
	}
	return fmt.Errorf("consensus: unknown command %d", c.Op), nil
}

// putManifest adds the manifest to the repository unless it is there
// already, then points each tag at it.
func (t tx) putManifest(c command) error {
	mk := manifestKey(c.Repo, c.Digest)
	_, present, err := t.get(mk)
	if err != nil {
		return err
	}
	if !present {
		annotations := boundedAnnotations(c.Annotations)
		meta := manifestMeta{MediaType: c.MediaType, Subject: c.Subject, ArtifactType: c.ArtifactType,
			Annotations: annotations, Size: int64(len(c.Body))}
		if err := t.setJSON(mk, meta); err != nil {
			return err
		}
		if err := t.addRef(c.Digest, c.Body); err != nil {
			return err
		}
		if c.Subject != "" {
			desc := ocispec.Descriptor{MediaType: c.MediaType, Digest: c.Digest, Size: meta.Size,
				ArtifactType: c.ArtifactType, Annotations: annotations}
			if err := t.setJSON(referrerKey(c.Repo, c.Subject, c.Digest), desc); err != nil {
				return err
			}
		}
		if err := t.Set(repoKey(c.Repo), nil); err != nil {
			return err
		}
	}
	for _, tag := range c.Tags {
		if err := t.setTag(c.Repo, tag, c.Digest); err != nil {
			return err
		}
	}
	return nil
}

// addRef counts one more repository holding the manifest, storing its bytes
// with the first.
func (t tx) addRef(d digest.Digest, body []byte) error {
	v, _, err := t.get(refCountKey(d))
	if err != nil {
		return err
	}
	n := decodeUint64(v)
	if n == 0 {
		if err := t.Set(bodyKey(d), body); err != nil {
			return err
		}
	}
	return t.Set(refCountKey(d), encodeUint64(n+1))
}

// dropRef counts one repository fewer, dropping the bytes with the last.
func (t tx) dropRef(d digest.Digest) error {
	v, _, err := t.get(refCountKey(d))
	if err != nil {
		return err
	}
	if n := decodeUint64(v); n > 1 {
		return t.Set(refCountKey(d), encodeUint64(n-1))
	}
	if err := t.Delete(bodyKey(d)); err != nil {
		return err
	}
	return t.Delete(refCountKey(d))
}

func (t tx) setTag(repo, tag string, d digest.Digest) error {
	old, ok, err := t.get(tagKey(repo, tag))
	if err != nil {
		return err
	}
	if ok && digest.Digest(old) == d {
		return nil
	}
	if ok {
		if err := t.Delete(tagByDigestKey(repo, digest.Digest(old), tag)); err != nil {
			return err
		}
	}
	if err := t.Set(tagKey(repo, tag), []byte(d)); err != nil {
		return err
	}
	return t.Set(tagByDigestKey(repo, d, tag), nil)
}

// deleteManifest removes the manifest from the repository with the tags
// pointing at it and its referrer entry.
func (t tx) deleteManifest(repo string, d digest.Digest) (resp, err error) {
	mk := manifestKey(repo, d)
	v, ok, err := t.get(mk)
	if err != nil {
		return nil, err
	}
	if !ok {
		return fmt.Errorf("consensus: manifest %s is not in repository %s: %w", d, repo, ErrNotFound), nil
	}
	var meta manifestMeta
	if err := json.Unmarshal(v, &meta); err != nil {
		return nil, fmt.Errorf("decoding %q: %w", mk, err)
	}
	for _, tag := range t.keysAfter(keyPrefix(prefixTagByDig, repo, string(d)), "", -1) {
		if err := t.Delete(tagKey(repo, tag)); err != nil {
			return nil, err
		}
		if err := t.Delete(tagByDigestKey(repo, d, tag)); err != nil {
			return nil, err
		}
	}
	if meta.Subject != "" {
		if err := t.Delete(referrerKey(repo, meta.Subject, d)); err != nil {
			return nil, err
		}
	}
	if err := t.Delete(mk); err != nil {
		return nil, err
	}
	if err := t.dropRef(d); err != nil {
		return nil, err
	}
	return nil, t.forgetRepoIfEmpty(repo)
}

func (t tx) deleteTag(repo, tag string) (resp, err error) {
	v, ok, err := t.get(tagKey(repo, tag))
	if err != nil {
		return nil, err
	}
	if !ok {
		return fmt.Errorf("consensus: tag %s is not in repository %s: %w", tag, repo, ErrNotFound), nil
	}
	if err := t.Delete(tagKey(repo, tag)); err != nil {
		return nil, err
	}
	return nil, t.Delete(tagByDigestKey(repo, digest.Digest(v), tag))
}

func (t tx) linkBlob(repo string, d digest.Digest, size int64) error {
	if err := t.Set(blobLinkKey(repo, d), encodeUint64(uint64(size))); err != nil {
		return err
	}
	return t.Set(repoKey(repo), nil)
}

func (t tx) unlinkBlob(repo string, d digest.Digest) (resp, err error) {
	_, ok, err := t.get(blobLinkKey(repo, d))
	if err != nil {
		return nil, err
	}
	if !ok {
		return fmt.Errorf("consensus: blob %s is not linked to repository %s: %w", d, repo, ErrNotFound), nil
	}
	if err := t.Delete(blobLinkKey(repo, d)); err != nil {
		return nil, err
	}
	return nil, t.forgetRepoIfEmpty(repo)
}

// forgetRepoIfEmpty drops the repository from the list once it holds no
// manifest, tag or blob link.
func (t tx) forgetRepoIfEmpty(repo string) error {
	for _, p := range []byte{prefixManifest, prefixTag, prefixBlobLink} {
		if t.hasPrefix(keyPrefix(p, repo)) {
			return nil
		}
	}
	return t.Delete(repoKey(repo))
}

// Snapshot opens a read-only transaction (a consistent view of the state as
// of the last applied entry) and returns at once; Persist does the I/O.
//
// A failed FSM refuses: its state may lack an entry raft counts as applied,
// and a snapshot would make that loss permanent.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	if err := f.failure(); err != nil {
		return nil, fmt.Errorf("consensus: no snapshot: %w", err)
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	return &fsmSnapshot{f: f, gen: f.gen, txn: f.db.NewTransaction(false)}, nil
}

// Snapshot stream: snapshotMagic, then for each key in byte order
// uvarint(len key), key, uvarint(len value), value; then uvarint(0). Keys are
// never empty, so the zero marks the end and a truncated stream is detected.
const (
	snapshotMagic    = "meshreg-fsm-snapshot-v1\n"
	maxSnapshotKey   = 1 << 16
	maxSnapshotValue = 1 << 30
	// snapshotDirectRead is the largest length read with one allocation.
	snapshotDirectRead = 1 << 20
)

// fsmSnapshot streams the view it holds. Persist runs on raft's snapshot
// goroutine, concurrently with Apply; raft always calls Release.
type fsmSnapshot struct {
	f    *fsm
	gen  uint64
	txn  *badger.Txn
	once sync.Once
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.write(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("consensus: persisting FSM snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) write(w io.Writer) error {
	s.f.mu.RLock()
	defer s.f.mu.RUnlock()
	if s.gen != s.f.gen {
		return errors.New("the FSM was restored after this snapshot began")
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	if _, err := bw.WriteString(snapshotMagic); err != nil {
		return err
	}
	var lenBuf [binary.MaxVarintLen64]byte
	writeBytes := func(b []byte) error {
		if _, err := bw.Write(binary.AppendUvarint(lenBuf[:0], uint64(len(b)))); err != nil {
			return err
		}
		_, err := bw.Write(b)
		return err
	}
	// Values are read one at a time (no prefetch): manifests can be large.
	it := s.txn.NewIterator(badger.IteratorOptions{})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		if err := writeBytes(item.Key()); err != nil {
			return err
		}
		if err := item.Value(writeBytes); err != nil {
			return err
		}
	}
	if err := writeBytes(nil); err != nil {
		return err
	}
	return bw.Flush()
}

func (s *fsmSnapshot) Release() { s.once.Do(s.txn.Discard) }

// Restore replaces the whole state with a snapshot stream. It runs on the FSM
// goroutine with no Apply in flight; readers wait until it is done. The
// stream is loaded in batches, never whole into memory.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := f.failure(); err != nil {
		return fmt.Errorf("consensus: no restore: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gen++
	if err := f.db.DropAll(); err != nil {
		return fmt.Errorf("consensus: dropping FSM state before restore: %w", err)
	}
	wb := f.db.NewWriteBatch()
	defer wb.Cancel()
	n, err := readSnapshot(bufio.NewReaderSize(rc, 1<<20), wb.Set)
	if err == nil {
		err = wb.Flush()
	}
	if err != nil {
		return fmt.Errorf("consensus: restoring FSM snapshot (after %d keys): %w", n, err)
	}
	f.log.Info("restored FSM from snapshot", "keys", n)
	var idx uint64
	err = f.db.View(func(txn *badger.Txn) error {
		v, _, err := tx{txn}.get([]byte(keyApplied))
		idx = decodeUint64(v)
		return err
	})
	if err != nil {
		return fmt.Errorf("consensus: reading the applied index after a restore: %w", err)
	}
	// The snapshot's configuration is at most as new as the snapshot; its
	// own index is not given to the FSM, so the state's stands in for it.
	if idx > f.configIndex.Load() {
		f.configIndex.Store(idx)
	}
	if f.onApplied != nil {
		f.onApplied(Applied{Index: idx, Kind: KindRestore})
	}
	if f.onConfig != nil {
		f.onConfig() // the snapshot carries a configuration too
	}
	return nil
}

// readSnapshot reads a snapshot stream, calling set for each pair with
// freshly allocated slices.
func readSnapshot(r *bufio.Reader, set func(k, v []byte) error) (n int, err error) {
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(r, magic); err != nil {
		return 0, fmt.Errorf("reading snapshot header: %w", unexpectedEOF(err))
	}
	if string(magic) != snapshotMagic {
		return 0, fmt.Errorf("not a meshreg FSM snapshot: header %q", magic)
	}
	readBytes := func(limit uint64) ([]byte, error) {
		l, err := binary.ReadUvarint(r)
		if err != nil {
			return nil, unexpectedEOF(err)
		}
		if l > limit {
			return nil, fmt.Errorf("length %d above limit %d: corrupt snapshot", l, limit)
		}
		if l <= snapshotDirectRead {
			b := make([]byte, l)
			_, err = io.ReadFull(r, b)
			return b, unexpectedEOF(err)
		}
		// A large length is only a claim: read it in growing steps, so
		// that a stream which stops short costs what it sent, not what it
		// claimed.
		var buf bytes.Buffer
		buf.Grow(snapshotDirectRead)
		n, err := io.CopyN(&buf, r, int64(l))
		if err == nil && uint64(n) != l {
			err = io.ErrUnexpectedEOF
		}
		return buf.Bytes(), unexpectedEOF(err)
	}
	for {
		k, err := readBytes(maxSnapshotKey)
		if err != nil {
			return n, err
		}
		if len(k) == 0 {
			return n, nil
		}
		v, err := readBytes(maxSnapshotValue)
		if err != nil {
			return n, err
		}
		if err := set(k, v); err != nil {
			return n, err
		}
		n++
	}
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
