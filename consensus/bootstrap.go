package consensus

import (
	"errors"
	"fmt"

	"github.com/hashicorp/raft"
)

// BootstrapWith bootstraps a cluster of servers (all voters) on a store
// opened with NoBootstrap: the deterministic bootstrap of nodes that start
// together, where the caller has picked exactly one node to do it. A no-op
// if this node already has Raft state or a configuration.
func (s *Store) BootstrapWith(servers []Server) error {
	conf := raft.Configuration{}
	for _, srv := range servers {
		conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(srv.ID), Address: raft.ServerAddress(srv.Address), Suffrage: raft.Voter})
	}
	err := s.raft.BootstrapCluster(conf).Error()
	if err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return fmt.Errorf("consensus: bootstrapping a cluster of %d: %w", len(servers), err)
	}
	return nil
}
