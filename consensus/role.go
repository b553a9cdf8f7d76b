package consensus

import "github.com/hashicorp/raft"

// Role is a server's Raft state as this node sees itself. Its value is the
// string raft prints (and the status document shows): "Leader",
// "Follower", "Candidate" or "Shutdown".
type Role string

// The Raft states. A store reports RoleShutdown once it is closed.
const (
	Leader    Role = "Leader"
	Follower  Role = "Follower"
	Candidate Role = "Candidate"
	Shutdown  Role = "Shutdown"
)

func (r Role) String() string { return string(r) }

// roleOf converts raft's state; an unknown state keeps raft's string.
func roleOf(s raft.RaftState) Role { return Role(s.String()) }

// Suffrage is whether a member votes. Its value is the string raft prints
// (and the status document shows): "Voter", "Nonvoter" or "Staging".
type Suffrage string

// The suffrages of a member. Staging is raft's, unused by meshreg (it adds
// non-voters and promotes them itself).
const (
	Voter    Suffrage = "Voter"
	Nonvoter Suffrage = "Nonvoter"
	Staging  Suffrage = "Staging"
)

func (s Suffrage) String() string { return string(s) }

// suffrageOf converts raft's suffrage; an unknown one keeps raft's string.
func suffrageOf(s raft.ServerSuffrage) Suffrage { return Suffrage(s.String()) }
