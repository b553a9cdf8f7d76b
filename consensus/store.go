// Package consensus keeps the registry's metadata (manifests, tags, blob
// links, referrers, the repository list) as a hashicorp/raft state machine
// persisted in badger. Writes go through the Raft log and return once
// committed and applied; reads are served from the local state.
//
// The state itself, its deterministic apply and its reads are package
// consensus/state; this package wires it to Raft: the FSM, snapshots,
// membership, forwarding and events (watch.go), and metadata followers
// that are not Raft members (follow.go, tail.go). The Raft log and stable
// store are on badger too (logstore.go, stablestore.go); keys.go draws the
// storage layout.
package consensus

import (
	"context"
	_ "crypto/sha256" // digest algorithms PutManifest verifies bodies with
	_ "crypto/sha512"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/consensus/state"
)

var (
	// ErrNotFound: the manifest, tag, blob link or repository does not exist.
	ErrNotFound = state.ErrNotFound
	// ErrNotLeader: the write could not be committed because this node is
	// not (or stopped being) the Raft leader, or no leader took it in time.
	ErrNotLeader = errors.New("not the raft leader")
	// ErrClosed: the store is closed.
	ErrClosed = errors.New("metadata store closed")
	// ErrInvalidCommand: a write is outside the bounds of state/limits.go, or
	// bytes given to ApplyForwarded or found in the log are not a valid
	// write. The FSM refuses such an entry the same way on every node.
	ErrInvalidCommand = state.ErrInvalidCommand
	// ErrBlobCollected: a manifest put references a blob garbage
	// collection removed after the put checked it (see state/gc.go).
	ErrBlobCollected = state.ErrBlobCollected
	// ErrPolicyDenied: the content policy refuses the write (an immutable
	// tag, a quota; state/policy.go); the message names the rule.
	ErrPolicyDenied = state.ErrPolicyDenied
	// ErrStorageFailed: the FSM could not write to its database (disk I/O,
	// no space): it applies nothing more until the node restarts.
	ErrStorageFailed = errors.New("metadata storage failed")
)

// ManifestRecord is a manifest as a repository holds it.
type ManifestRecord = state.ManifestRecord

// Config configures a Store. Start from DefaultConfig.
type Config struct {
	// Dir holds the Raft log, snapshots and state (layout in keys.go).
	Dir string
	// NodeID is the Raft server id.
	NodeID string
	// Logger receives the store's, raft's and badger's logs; nil discards them.
	Logger *slog.Logger
	// SnapshotThreshold is how many log entries since the last snapshot make
	// the next one due; SnapshotInterval is how often that is checked.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	// TrailingLogs is how many entries stay in the log after a snapshot, so
	// a follower a little behind catches up from the log, not a snapshot.
	TrailingLogs uint64
	// ApplyTimeout bounds how long a write waits to be taken by Raft.
	ApplyTimeout time.Duration
	// LeaderTimeout bounds how long Open waits for a leader.
	LeaderTimeout time.Duration

	// Transport carries Raft RPCs. nil means an in-memory transport whose
	// address is NodeID: enough for a one-node cluster. Open takes ownership:
	// raft closes it when the store closes. A *raft.NetworkTransport is
	// used without pipelined replication (see withoutPipeline).
	Transport raft.Transport
	// NoBootstrap keeps a node with no Raft state from bootstrapping (for a
	// node that will be added to an existing cluster); Open then does not
	// wait for a leader either.
	NoBootstrap bool
	// Bootstrap, when not empty, is the server set a node with no Raft state
	// bootstraps as voters, instead of a one-node cluster of itself. It must
	// include NodeID. The caller decides which node bootstraps (e.g. the
	// lowest id once --bootstrap-expect peers are seen; nodes that do
	// bootstrap must all be given the same set). A node with Raft state
	// never bootstraps again, whatever Bootstrap says.
	Bootstrap []Server
	// Forwarder, if set, carries writes made on a follower to the leader
	// (see Forwarder). Without one, a follower's writes fail with
	// ErrNotLeader.
	Forwarder Forwarder
	// TailDialer, if set, lets this store follow the metadata without
	// being a Raft member (follow.go). nil: it can serve tails but never
	// follow.
	TailDialer TailDialer
	// TailPrefer, if set, orders the members to tail from, the first
	// tried first (the node: same zone first, non-voters before voters,
	// the leader last). nil: non-voters, then voters, the leader last.
	TailPrefer func(members []Member) []Member
	// Version is this node's release, named in what a follower says when
	// it meets an entry newer than it knows (ErrOlderThanCluster).
	Version string

	// OnFatal, if set, is called once when the FSM's storage fails (see
	// ErrStorageFailed): the node can no longer follow the log and must
	// stop; a restart replays the entry that failed. It runs on a goroutine
	// of its own, so it may call Close. Without it the store only logs and
	// refuses every further write.
	OnFatal func(error)

	// ApplyFault, when set, is called before the FSM commits each entry;
	// an error it returns is taken as a storage failure (see
	// ErrStorageFailed). Tests use it to play a broken disk; it is nil in
	// production.
	ApplyFault func(index uint64) error

	// tune, set by tests only, adjusts the Raft configuration.
	tune func(*raft.Config)
	// tailHeartbeat, set by tests only, is the heartbeat a follower asks
	// of its tail's source (0: tailHeartbeat).
	tailHeartbeat time.Duration
	// quietCommits, set by benchmarks only, turns the commit notification
	// off (notify.go), to measure what it saves.
	quietCommits bool
}

// DefaultConfig returns the configuration of a one-node cluster; Dir and
// NodeID are left to the caller.
func DefaultConfig() Config {
	return Config{
		SnapshotThreshold: 8192,
		SnapshotInterval:  2 * time.Minute,
		TrailingLogs:      10240,
		ApplyTimeout:      10 * time.Second,
		LeaderTimeout:     10 * time.Second,
	}
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("consensus: Dir is empty")
	case c.NodeID == "":
		return errors.New("consensus: NodeID is empty")
	case c.SnapshotThreshold == 0:
		return errors.New("consensus: SnapshotThreshold must be positive")
	case c.SnapshotInterval < 5*time.Millisecond:
		return fmt.Errorf("consensus: SnapshotInterval must be at least 5ms, got %s", c.SnapshotInterval)
	case c.ApplyTimeout <= 0:
		return fmt.Errorf("consensus: ApplyTimeout must be positive, got %s", c.ApplyTimeout)
	case c.LeaderTimeout <= 0:
		return fmt.Errorf("consensus: LeaderTimeout must be positive, got %s", c.LeaderTimeout)
	case c.NoBootstrap && len(c.Bootstrap) > 0:
		return errors.New("consensus: NoBootstrap and Bootstrap are both set")
	}
	if len(c.Bootstrap) == 0 {
		return nil
	}
	ids, addrs := map[string]bool{}, map[string]bool{}
	for _, srv := range c.Bootstrap {
		if srv.ID == "" || srv.Address == "" || ids[srv.ID] || addrs[srv.Address] {
			return fmt.Errorf("consensus: Bootstrap server %+v: empty or repeated id or address", srv)
		}
		ids[srv.ID], addrs[srv.Address] = true, true
	}
	if len(c.Bootstrap) > 1 && c.Transport == nil {
		return errors.New("consensus: Bootstrap names other servers but there is no Transport to reach them")
	}
	if !ids[c.NodeID] {
		return fmt.Errorf("consensus: Bootstrap does not include this node (%s)", c.NodeID)
	}
	return nil
}

// raftConfig holds the Raft timing. The timeouts are short so that a
// one-node cluster elects itself within a second of starting, and still
// safe: the lease is below the heartbeat timeout, as raft requires.
func raftConfig(c Config, logger *hclogAdapter) *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.NodeID)
	rc.Logger = logger
	// raft's defaults (1 s, 1 s, 500 ms): a leader is replaced 1-2 s after
	// it dies. Half of them (the first releases' choice) failed over in
	// about a second, but a leader on a busy two-core machine, replicating
	// a 4 MB manifest, now and then missed its 250 ms lease and stepped
	// down with no fault at all, failing writes in the meantime.
	rc.HeartbeatTimeout = time.Second
	rc.ElectionTimeout = time.Second
	rc.LeaderLeaseTimeout = 500 * time.Millisecond
	// Followers learn that an entry is committed only from the leader's
	// next AppendEntries, which comes with new entries or, when idle, every
	// CommitTimeout (randomised up to twice that). No write waits for it:
	// the leader tells the followers of every commit at once, its own
	// writes' included (notify.go). What is left to it: the commit of the
	// notifying barrier itself (no state), and how soon the leader retries
	// sending entries to a member that missed some (one back from a pause)
	// when no new write triggers it: within 250–500 ms. Each tick is an
	// AppendEntries to every member, half of a member's idle Raft traffic
	// (the heartbeats, every 100–200 ms, are the other half): at raft's
	// default of 50 ms, 10–20 a second to each member for nothing.
	rc.CommitTimeout = commitTimeout
	rc.SnapshotThreshold = c.SnapshotThreshold
	rc.SnapshotInterval = c.SnapshotInterval
	rc.TrailingLogs = c.TrailingLogs
	if c.tune != nil {
		c.tune(rc)
	}
	return rc
}

// commitTimeout is raft's CommitTimeout (see raftConfig).
const commitTimeout = 250 * time.Millisecond

// gcInterval is how often the badger value logs are garbage collected.
const gcInterval = 10 * time.Minute

// Store is the replicated metadata store. Its methods are safe for
// concurrent use. It owns three goroutines (value-log GC, publishing the
// cluster view to watchers, telling followers of commits) besides raft's
// and badger's, and a fourth while it follows the metadata (follow.go);
// Close stops them all.
type Store struct {
	cfg    Config
	log    *slog.Logger
	raft   *raft.Raft
	fsm    *fsm
	raftDB *badger.DB
	// logs and snaps are raft's log (through its cache) and snapshots,
	// which ServeTail sends to followers (tail.go).
	logs  raft.LogStore
	snaps raft.SnapshotStore

	// tailMu guards tail, the follower while this store follows the
	// metadata without being a member (follow.go); nil otherwise.
	tailMu sync.Mutex
	tail   *follower
	// tails counts the followers' goroutines, which Close waits for (one
	// that stops by itself leaves tail before it returns).
	tails sync.WaitGroup

	// mu guards closed; reads hold it shared while they use the FSM
	// database, so Close never closes it under them.
	mu     sync.RWMutex
	closed bool

	// cluster and applied publish events (watch.go); observer feeds
	// cluster from raft. watchMu orders reading raft's view with
	// publishing it.
	watchMu  sync.Mutex
	cluster  *hub[State]
	applied  *hub[Applied]
	observer *raft.Observer

	// readTerm is the last term in which ReadIndex committed a barrier
	// (readindex.go).
	readTerm atomic.Uint64
	// notify asks notifyLoop to send the commit index to the followers
	// (notify.go).
	notify chan struct{}
	// pending is the commit notifyLoop has to tell (notify.go).
	// last is raft's last index when the latest write was notified.
	pending struct {
		sync.Mutex
		last uint64
	}

	stop      chan struct{} // closed by Close
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Open opens (creating if needed) the store in cfg.Dir and starts Raft. A
// node without Raft state bootstraps cfg.Bootstrap, or a one-node cluster of
// itself if that is empty, unless cfg.NoBootstrap. When the cluster is this
// node alone (and not cfg.NoBootstrap), Open then waits, at most
// cfg.LeaderTimeout, until it leads; a member of a larger cluster returns at
// once, since its peers may not be up yet (Ready tells when a leader is).
func Open(cfg Config) (s *Store, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	trans := raftTransport(cfg)
	var undo []func() // on failure, in reverse
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	undo = append(undo, func() {
		if c, ok := trans.(raft.WithClose); ok {
			_ = c.Close()
		}
	})

	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("consensus: creating %s: %w", cfg.Dir, err)
	}
	raftDB, err := openBadger(filepath.Join(cfg.Dir, "raft"), true, log)
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = raftDB.Close() })
	// The FSM need not sync: its applied index commits with its state, and
	// on start raft restores the newest snapshot and replays the (synced)
	// log after it, so whatever a crash loses is applied again.
	fsmDB, err := openBadger(filepath.Join(cfg.Dir, "fsm"), false, log)
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = fsmDB.Close() })

	hlog := newHclog(log, "raft")
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, hlog.Named("snapshots"))
	if err != nil {
		return nil, fmt.Errorf("consensus: opening snapshot store in %s: %w", cfg.Dir, err)
	}
	logs, stable := &logStore{db: raftDB}, &stableStore{db: raftDB}
	rc := raftConfig(cfg, hlog)

	if !cfg.NoBootstrap {
		if err := bootstrap(rc, logs, stable, snaps, trans, cfg.Bootstrap); err != nil {
			return nil, err
		}
	}
	f := &fsm{db: fsmDB, log: log, onFatal: cfg.OnFatal, fault: cfg.ApplyFault}
	applied, err := f.appliedIndex()
	if err != nil {
		return nil, fmt.Errorf("consensus: reading the applied index: %w", err)
	}
	appliedHub, kick := newHub(appliedBuffer, Applied{Index: applied}), make(kicker, 1)
	f.onApplied, f.onConfig = appliedHub.publish, kick.kick
	cache := newLogCache(logs)
	r, err := raft.NewRaft(rc, f, cache, stable, snaps, trans)
	if err != nil {
		return nil, fmt.Errorf("consensus: starting raft: %w", err)
	}
	undo[0] = func() {} // raft owns the transport now: Shutdown closes it
	undo = append(undo, func() { _ = r.Shutdown().Error() })

	s = &Store{cfg: cfg, log: log, raft: r, fsm: f, raftDB: raftDB, logs: cache, snaps: snaps, stop: make(chan struct{}), notify: make(chan struct{}, 1),
		cluster: newHub(watchBuffer, State{}), applied: appliedHub}
	if !cfg.NoBootstrap && s.alone() {
		if err := s.waitForLeader(cfg.LeaderTimeout); err != nil {
			return nil, err
		}
	}
	obs := make(chan raft.Observation, 64)
	s.observer = raft.NewObserver(obs, false, watchedObservation)
	r.RegisterObserver(s.observer)
	s.refresh() // Watch works as soon as Open returns
	s.wg.Add(3)
	go s.gcLoop()
	go s.watchLoop(obs, kick)
	go s.notifyLoop()
	return s, nil
}

// bootstrap writes the configuration of servers as voters (of this node
// alone if servers is empty) if there is no Raft state yet.
func bootstrap(rc *raft.Config, logs raft.LogStore, stable raft.StableStore, snaps raft.SnapshotStore, trans raft.Transport, servers []Server) error {
	existing, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		return fmt.Errorf("consensus: checking for raft state: %w", err)
	}
	if existing {
		return nil
	}
	conf := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: trans.LocalAddr(), Suffrage: raft.Voter}}}
	if len(servers) > 0 {
		conf.Servers = nil
		for _, srv := range servers {
			conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(srv.ID), Address: raft.ServerAddress(srv.Address), Suffrage: raft.Voter})
		}
	}
	err = raft.BootstrapCluster(rc, logs, stable, snaps, trans, conf)
	if err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return fmt.Errorf("consensus: bootstrapping a cluster of %d: %w", len(conf.Servers), err)
	}
	return nil
}

// alone reports whether the latest configuration is this node as the only
// voter.
func (s *Store) alone() bool {
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	srvs := f.Configuration().Servers
	return len(srvs) == 1 && srvs[0].ID == raft.ServerID(s.cfg.NodeID) && srvs[0].Suffrage == raft.Voter
}

func (s *Store) waitForLeader(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, id := s.raft.LeaderWithID(); id != "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("consensus: no raft leader %s after start (node %s is %s): %w",
				timeout, s.cfg.NodeID, s.raft.State(), ErrNotLeader)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// gcLoop reclaims value-log space now and then (badger does not on its own).
func (s *Store) gcLoop() {
	defer s.wg.Done()
	t := time.NewTicker(gcInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			for s.raftDB.RunValueLogGC(0.5) == nil {
			}
			s.fsm.mu.RLock() // not during a Restore
			for s.fsm.db.RunValueLogGC(0.5) == nil {
			}
			s.fsm.mu.RUnlock()
		}
	}
}

// Close stops Raft and closes the databases. Writes in flight fail with
// ErrClosed; reads in flight finish first. Calling it again returns nil.
func (s *Store) Close() error {
	err := ErrClosed
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.StopFollowing() // its goroutine applies to the FSM
		s.tails.Wait()
		close(s.stop)
		s.wg.Wait()
		// Shutdown waits for raft's goroutines, the FSM and snapshot ones
		// included, so nothing touches the databases after it.
		s.closeErr = errors.Join(
			s.raft.Shutdown().Error(),
			s.raftDB.Close(),
			s.fsm.db.Close(),
		)
		s.raft.DeregisterObserver(s.observer)
		// Raft is shut down: watchers see that, then their channels close.
		s.refresh()
		s.cluster.close()
		s.applied.close()
		err = s.closeErr
	})
	if errors.Is(err, ErrClosed) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("consensus: closing store: %w", err)
	}
	return nil
}

// --- writes ---

// PutManifest adds the manifest to m.Repo (a no-op if it is there) and
// points each tag at it (last writer wins). The write must stay within the
// bounds of state/limits.go (at most MaxTagsPerWrite tags, a body of at most
// MaxManifestBytes, a manifest media type, ...), else the error wraps
// ErrInvalidCommand and names the limit. Annotations beyond MaxAnnotations
// or MaxAnnotationBytes are not kept in the record and the referrers index
// (the body still has them).
func (s *Store) PutManifest(ctx context.Context, m ManifestRecord, tags ...string) error {
	return s.write(ctx, putCommand(m, tags))
}

// CheckPutManifest reports, without writing, whether PutManifest(m,
// tags...) is within the bounds of state/limits.go: the error wraps
// ErrInvalidCommand and names the limit. Callers check before the work a
// write depends on (replicating blobs, say).
//
// It also checks the content policy on this node's state (an immutable
// tag, a quota): the error then wraps ErrPolicyDenied. The FSM checks it
// again at apply.
func (s *Store) CheckPutManifest(m ManifestRecord, tags ...string) error {
	c := putCommand(m, tags)
	if err := c.Validate(); err != nil {
		return err
	}
	return s.checkPolicy(c)
}

// checkPolicy is the content policy's verdict on c on this node's state,
// before it is proposed (the FSM has the last word at apply).
func (s *Store) checkPolicy(c state.Command) error {
	return s.view(func(r state.Reader) error { return r.CheckPolicy(c, &s.fsm.policies) })
}

func putCommand(m ManifestRecord, tags []string) state.Command {
	// The proposer's clock dates the push for retention.
	return state.Command{Op: state.OpPutManifest, Repo: m.Repo, Digest: m.Digest, Tags: tags,
		MediaType: m.MediaType, ArtifactType: m.ArtifactType, Subject: m.Subject,
		Annotations: state.BoundedAnnotations(m.Annotations), Body: m.Body, CheckIndex: m.CheckIndex,
		Time: time.Now().UnixNano()}
}

// DeleteManifest removes the manifest from the repository, with every tag in
// it that points at the manifest and its referrer entry. ErrNotFound if the
// repository does not hold it.
func (s *Store) DeleteManifest(ctx context.Context, repo string, d digest.Digest) error {
	return s.write(ctx, state.Command{Op: state.OpDeleteManifest, Repo: repo, Digest: d})
}

// DeleteTag removes the tag; ErrNotFound if there is none.
func (s *Store) DeleteTag(ctx context.Context, repo, tag string) error {
	return s.write(ctx, state.Command{Op: state.OpDeleteTag, Repo: repo, Tag: tag})
}

// LinkBlob makes the blob pullable from the repository.
func (s *Store) LinkBlob(ctx context.Context, repo string, d digest.Digest, size int64) error {
	// The proposer's clock dates the link for the GC's grace period.
	return s.write(ctx, state.Command{Op: state.OpLinkBlob, Repo: repo, Digest: d, Size: size, Time: time.Now().UnixNano()})
}

// UnlinkBlob removes the blob from the repository; ErrNotFound if it is not
// linked.
func (s *Store) UnlinkBlob(ctx context.Context, repo string, d digest.Digest) error {
	return s.write(ctx, state.Command{Op: state.OpUnlinkBlob, Repo: repo, Digest: d})
}

// PutSetting replaces the named cluster setting (state/settings.go: a
// name from a closed set, a body of at most MaxSettingBytes; else the
// error wraps ErrInvalidCommand).
func (s *Store) PutSetting(ctx context.Context, name string, body []byte) error {
	return s.write(ctx, state.Command{Op: state.OpPutSetting, Name: name, Body: body})
}

// Usage is the bytes the repository holds as the content policy counts
// them (state/policy.go).
func (s *Store) Usage(repo string) (int64, error) {
	return read(s, func(r state.Reader) (int64, error) { return r.Usage(repo) })
}

// Usages lists repositories' usage by name after `after`, at most n.
func (s *Store) Usages(after string, n int) ([]state.RepoUsage, error) {
	return read(s, func(r state.Reader) ([]state.RepoUsage, error) { return r.Usages(after, n) })
}

// Setting returns the named setting's body as this node applied it;
// ErrNotFound if none was written.
func (s *Store) Setting(name string) ([]byte, error) {
	return read(s, func(r state.Reader) ([]byte, error) { return r.Setting(name) })
}

// write validates the command and commits it: through Raft on the leader,
// through the Forwarder elsewhere (see forward).
func (s *Store) write(ctx context.Context, c state.Command) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if err := s.checkPolicy(c); err != nil {
		return err
	}
	data, err := c.Encode()
	if err != nil {
		return err
	}
	if s.cfg.Forwarder == nil || s.raft.State() == raft.Leader {
		err = s.apply(ctx, data)
		// raft.ErrNotLeader means the entry was never taken, so trying
		// the leader instead cannot apply it twice.
		if s.cfg.Forwarder == nil || !errors.Is(err, raft.ErrNotLeader) {
			return err
		}
	}
	return s.forward(ctx, data)
}

// apply commits an encoded command through Raft and returns the FSM's
// result; the followers learn of the commit at once (notifyCommits). When
// ctx ends first it returns ctx's error at once; the
// write may still commit.
func (s *Store) apply(ctx context.Context, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return fmt.Errorf("consensus: %w", ErrClosed)
	}
	f := s.raft.Apply(data, s.timeout(ctx))
	err := wait(ctx, func() error {
		if f.Error() == nil { // committed and applied here, the leader
			s.notifyCommits()
		}
		return result(f)
	})
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return fmt.Errorf("consensus: waiting for commit: %w (the write may still be applied)", err)
	}
	return err
}

// wait runs resolve (which waits on a raft future) and returns its error,
// or ctx's error as soon as ctx ends. A raft future is not safe for
// concurrent use: the goroutine running resolve owns it, and finishes when
// raft resolves it (commit, leadership loss or shutdown).
func wait(ctx context.Context, resolve func() error) error {
	res := make(chan error, 1)
	go func() { res <- resolve() }()
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func result(f raft.ApplyFuture) error {
	if err := f.Error(); err != nil {
		return raftError(err)
	}
	if resp, ok := f.Response().(error); ok {
		return resp
	}
	return nil
}

// raftError maps an error of a raft future to the package's errors.
func raftError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("consensus: %w (raft: %w)", ErrClosed, err)
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrAbortedByRestore), errors.Is(err, raft.ErrEnqueueTimeout),
		errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("consensus: %w (raft: %w)", ErrNotLeader, err)
	}
	return fmt.Errorf("consensus: raft: %w", err)
}

// --- reads: local state, no network ---

// view runs fn on the FSM's state unless the store is closed.
func (s *Store) view(fn func(r state.Reader) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return fmt.Errorf("consensus: %w", ErrClosed)
	}
	return s.fsm.view(fn)
}

// read runs one read of the state (see package state) unless the store is
// closed.
func read[T any](s *Store, fn func(r state.Reader) (T, error)) (T, error) {
	var out T
	err := s.view(func(r state.Reader) (err error) {
		out, err = fn(r)
		return err
	})
	return out, err
}

// Manifest returns the manifest as the repository holds it.
func (s *Store) Manifest(repo string, d digest.Digest) (ManifestRecord, error) {
	return read(s, func(r state.Reader) (ManifestRecord, error) { return r.Manifest(repo, d) })
}

// ResolveTag returns the digest the tag points at.
func (s *Store) ResolveTag(repo, tag string) (digest.Digest, error) {
	return read(s, func(r state.Reader) (digest.Digest, error) { return r.ResolveTag(repo, tag) })
}

// Tags lists the repository's tags in byte order: those strictly after last
// (all if last is ""), at most n (all if n < 0). ErrNotFound if the
// repository does not exist; a repository without tags gives an empty slice.
func (s *Store) Tags(repo, last string, n int) ([]string, error) {
	return read(s, func(r state.Reader) ([]string, error) { return r.Tags(repo, last, n) })
}

// Repositories lists repository names like Tags lists tags.
func (s *Store) Repositories(last string, n int) ([]string, error) {
	return read(s, func(r state.Reader) ([]string, error) { return r.Repositories(last, n) })
}

// RepositoryExists reports whether the repository holds any manifest, tag
// or blob link.
func (s *Store) RepositoryExists(repo string) (bool, error) {
	return read(s, func(r state.Reader) (bool, error) { return r.RepositoryExists(repo) })
}

// BlobLink returns the size of a blob linked to the repository.
func (s *Store) BlobLink(repo string, d digest.Digest) (int64, error) {
	return read(s, func(r state.Reader) (int64, error) { return r.BlobLink(repo, d) })
}

// Referrers returns the descriptors of the repository's manifests whose
// subject is subject, sorted by digest: only those of artifactType when it
// is not "", strictly after the digest last when it is not "", at most n of
// them (all when n < 0). The result is never nil. Each descriptor is
// bounded (annotations: MaxAnnotationBytes), so a page of n is too.
func (s *Store) Referrers(repo string, subject digest.Digest, artifactType, last string, n int) ([]ocispec.Descriptor, error) {
	descs, err := read(s, func(r state.Reader) ([]ocispec.Descriptor, error) {
		return r.Referrers(repo, subject, artifactType, last, n)
	})
	if descs == nil {
		descs = []ocispec.Descriptor{}
	}
	return descs, err
}
