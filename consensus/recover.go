package consensus

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hashicorp/raft"
)

// Recover rewrites the Raft configuration of a stopped node from its own
// data, for a cluster that lost its quorum for good (most voters gone and
// not coming back): afterwards the node starts as a cluster of itself and
// the members named in keep, all voters, with every entry its log holds
// applied. This is hashicorp/raft's RecoverCluster over the node's badger
// stores and FSM.
//
// cfg needs Dir (the node's meta dir) and NodeID (its peer id), and may
// have a Logger; the rest is ignored. The node
// must be stopped (badger refuses a second opener). Every id in keep must
// be in the node's last known configuration, which gives its address; a
// kept member must be recovered with the same keep list (itself and this
// node swapped) before it starts. Entries in the log that the old cluster
// had not committed are applied too, as RecoverCluster does: they may be
// writes no client was told succeeded, never writes lost.
//
// It returns the new configuration.
func Recover(cfg Config, keep []string) (servers []Server, err error) {
	if cfg.Dir == "" || cfg.NodeID == "" {
		return nil, errors.New("consensus: recover needs the meta dir and the node id")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, "raft")); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("consensus: no Raft state in %s: nothing to recover (is this the node's data dir?)", cfg.Dir)
	}
	st, err := openStopped(cfg)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, st.close()) }()

	old, err := latestConfiguration(st.logs, st.snaps)
	if err != nil {
		return nil, err
	}
	addr := func(id string) (raft.ServerAddress, bool) {
		for _, s := range old.Servers {
			if string(s.ID) == id {
				return s.Address, true
			}
		}
		return "", false
	}
	known := func() string {
		var ids []string
		for _, s := range old.Servers {
			ids = append(ids, string(s.ID)+" ("+s.Suffrage.String()+")")
		}
		return strings.Join(ids, ", ")
	}
	self, ok := addr(cfg.NodeID)
	if !ok {
		return nil, fmt.Errorf("consensus: this node (%s) is not in its last Raft configuration [%s]: recover a node that is", cfg.NodeID, known())
	}
	conf := raft.Configuration{Servers: []raft.Server{{ID: raft.ServerID(cfg.NodeID), Address: self, Suffrage: raft.Voter}}}
	for _, id := range keep {
		if id == cfg.NodeID || slices.ContainsFunc(conf.Servers, func(s raft.Server) bool { return string(s.ID) == id }) {
			continue
		}
		a, ok := addr(id)
		if !ok {
			return nil, fmt.Errorf("consensus: --keep %s: not in this node's last Raft configuration [%s]", id, known())
		}
		conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(id), Address: a, Suffrage: raft.Voter})
	}

	if err := st.recoverCluster(cfg, conf, string(self)); err != nil {
		return nil, err
	}
	for _, s := range conf.Servers {
		servers = append(servers, Server{ID: string(s.ID), Address: string(s.Address)})
	}
	log.Info("rewrote the Raft configuration", "servers", len(servers), "was", known())
	return servers, nil
}

// latestConfiguration is the newest configuration in the log or, if the
// log holds none after the newest snapshot, the snapshot's.
func latestConfiguration(logs raft.LogStore, snaps raft.SnapshotStore) (raft.Configuration, error) {
	var conf raft.Configuration
	var after uint64
	metas, err := snaps.List()
	if err != nil {
		return conf, fmt.Errorf("consensus: listing snapshots: %w", err)
	}
	if len(metas) > 0 {
		conf, after = metas[0].Configuration, metas[0].Index
	}
	first, err := logs.FirstIndex()
	if err != nil {
		return conf, fmt.Errorf("consensus: reading the Raft log: %w", err)
	}
	last, err := logs.LastIndex()
	if err != nil {
		return conf, fmt.Errorf("consensus: reading the Raft log: %w", err)
	}
	for i := last; i >= max(first, after+1) && i > 0; i-- {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil {
			return conf, fmt.Errorf("consensus: reading Raft log entry %d: %w", i, err)
		}
		if l.Type == raft.LogConfiguration {
			return raft.DecodeConfiguration(l.Data), nil
		}
	}
	if len(conf.Servers) == 0 {
		return conf, errors.New("consensus: no Raft configuration in the log or the snapshots: nothing to recover")
	}
	return conf, nil
}
