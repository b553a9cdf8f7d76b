// Package node composes a registry node from its parts: the blob store on
// local disk and the replicated metadata. It implements the read and write
// paths that package api serves over HTTP, and owns the node's background
// loops.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/blobstore"
	"github.com/meshreg/meshreg/consensus"
)

// Config is what a node needs to know to run.
type Config struct {
	// DataDir holds the blobs and the metadata:
	//
	//	<DataDir>/
	//	├── blobs/<alg>/<2 hex>/<hex>   blob contents (package blobstore)
	//	├── uploads/<id>                upload sessions in progress
	//	└── meta/                       Raft log, snapshots and FSM (package consensus)
	DataDir string
	// NodeID names this node in the Raft configuration.
	NodeID string
	// UploadIdleTimeout expires upload sessions that received nothing for
	// this long.
	UploadIdleTimeout time.Duration
	// Version is reported in the status document.
	Version string
	// Consensus tunes the metadata store; Dir and NodeID are filled in.
	Consensus consensus.Config
}

// DefaultConfig returns the configuration of `meshreg serve` with no flags.
func DefaultConfig() Config {
	return Config{
		DataDir:           "meshreg-data",
		NodeID:            "local",
		UploadIdleTimeout: time.Hour,
		Version:           "dev",
		Consensus:         consensus.DefaultConfig(),
	}
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.DataDir == "":
		return errors.New("node: data dir is empty: pass --data-dir")
	case c.NodeID == "":
		return errors.New("node: node id is empty")
	case c.UploadIdleTimeout <= 0:
		return fmt.Errorf("node: upload idle timeout must be positive, got %s", c.UploadIdleTimeout)
	}
	return nil
}

// Node is one registry node. Its methods are safe for concurrent use.
type Node struct {
	cfg     Config
	blobs   *blobstore.Store
	meta    *consensus.Store
	log     *slog.Logger
	started time.Time

	mu      sync.Mutex
	uploads map[string]string // upload id → repository it was opened for
}

var (
	_ api.Registry = (*Node)(nil)
	_ api.Node     = (*Node)(nil)
)

// Open opens the blob store and the metadata store under cfg.DataDir and
// returns a node over them.
func Open(cfg Config, log *slog.Logger) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	blobs, err := blobstore.Open(cfg.DataDir, log.With("component", "blobstore"))
	if err != nil {
		return nil, fmt.Errorf("node: opening blob store in %s: %w", cfg.DataDir, err)
	}
	cc := cfg.Consensus
	cc.Dir = filepath.Join(cfg.DataDir, "meta")
	cc.NodeID = cfg.NodeID
	cc.Logger = log.With("component", "consensus")
	meta, err := consensus.Open(cc)
	if err != nil {
		return nil, fmt.Errorf("node: opening metadata in %s: %w", cc.Dir, err)
	}
	return New(cfg, blobs, meta, log), nil
}

// New returns a node over an open blob store and metadata store; Close
// closes them.
func New(cfg Config, blobs *blobstore.Store, meta *consensus.Store, log *slog.Logger) *Node {
	return &Node{cfg: cfg, blobs: blobs, meta: meta, log: log, started: time.Now(), uploads: map[string]string{}}
}

// Run runs the node's background loops until ctx ends.
func (n *Node) Run(ctx context.Context) error {
	every := min(n.cfg.UploadIdleTimeout/4, time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			n.expireUploads()
		}
	}
}

// expireUploads removes upload sessions idle past the configured timeout.
func (n *Node) expireUploads() {
	removed := n.blobs.ExpireUploads(n.cfg.UploadIdleTimeout)
	if removed == 0 {
		return
	}
	n.mu.Lock()
	for id := range n.uploads {
		if _, err := n.blobs.Upload(id); errors.Is(err, blobstore.ErrUploadNotFound) {
			delete(n.uploads, id)
		}
	}
	n.mu.Unlock()
	n.log.Info("expired idle uploads", "count", removed, "idle", n.cfg.UploadIdleTimeout)
}

// Close closes the metadata store. Callers stop serving requests first.
func (n *Node) Close() error {
	if err := n.meta.Close(); err != nil {
		return fmt.Errorf("node: closing metadata: %w", err)
	}
	return nil
}

// Ready returns nil when the node can take writes.
func (n *Node) Ready(ctx context.Context) error {
	if !n.meta.Ready() {
		return errors.New("the metadata store has no Raft leader yet")
	}
	return nil
}

// Status is the document served at /_meshreg/v1/status.
type Status struct {
	NodeID  string           `json:"node_id"`
	Version string           `json:"version"`
	DataDir string           `json:"data_dir"`
	Uptime  string           `json:"uptime"`
	Blobs   BlobStatus       `json:"blobs"`
	Raft    consensus.Status `json:"raft"`
	Uploads int              `json:"uploads_in_progress"`
}

// BlobStatus counts the blobs this node holds.
type BlobStatus struct {
	Count int64 `json:"count"`
	Bytes int64 `json:"bytes"`
}

func (n *Node) Status(ctx context.Context) any {
	count, bytes := n.blobs.Stats()
	n.mu.Lock()
	uploads := len(n.uploads)
	n.mu.Unlock()
	return Status{
		NodeID:  n.cfg.NodeID,
		Version: n.cfg.Version,
		DataDir: n.cfg.DataDir,
		Uptime:  time.Since(n.started).Round(time.Second).String(),
		Blobs:   BlobStatus{Count: count, Bytes: bytes},
		Raft:    n.meta.Status(),
		Uploads: uploads,
	}
}

// RegisterMetrics adds the node's storage gauges to reg.
func (n *Node) RegisterMetrics(reg prometheus.Registerer) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshreg_blobs_stored", Help: "Blobs held on this node's disk."},
			func() float64 { c, _ := n.blobs.Stats(); return float64(c) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshreg_blob_bytes_stored", Help: "Bytes of blobs held on this node's disk."},
			func() float64 { _, b := n.blobs.Stats(); return float64(b) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshreg_raft_applied_index", Help: "Last Raft log index applied to the metadata store."},
			func() float64 { return float64(n.meta.Status().AppliedIndex) }),
	)
}
