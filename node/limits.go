package node

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/meshreg/meshreg/api/auth/token"
)

// durationRange is the accepted range of a duration setting and the flag
// of `meshreg serve` that sets it.
type durationRange struct {
	flag     string
	val      time.Duration
	min, max time.Duration
}

// countRange is the same for a count or a size.
type countRange struct {
	flag     string
	val      int64
	min, max int64
}

// clamp converts a uint64 setting for a countRange.
func clamp(v uint64) int64 { return int64(min(v, math.MaxInt64)) }

// checkRanges refuses a setting too small to work (a ticker of 0 panics; a
// 1 ns timeout cuts every transfer) or too large to mean anything, naming
// the flag and the range it accepts.
func (c Config) checkRanges() error {
	var errs []error
	for _, r := range []durationRange{
		{"--dead-server-timeout", c.DeadServerTimeout, time.Second, 30 * 24 * time.Hour},
		{"--upload-idle-timeout", c.UploadIdleTimeout, time.Second, 7 * 24 * time.Hour},
		{"--repair-interval", c.RepairInterval, 100 * time.Millisecond, 24 * time.Hour},
		// DHT provider records expire after 48 h: announce them before.
		{"--reprovide-interval", c.ReprovideInterval, time.Minute, 47 * time.Hour},
		{"--peer-idle-timeout", c.PeerIdleTimeout, 100 * time.Millisecond, time.Hour},
		{"--snapshot-interval", c.Consensus.SnapshotInterval, 100 * time.Millisecond, 24 * time.Hour},
		{"--stabilization-time", c.StabilizationTime, 0, time.Hour},
		{"--scrub-interval", c.ScrubInterval, time.Millisecond, 365 * 24 * time.Hour},
		{"--gc-interval", c.GCInterval, 0, 365 * 24 * time.Hour},
		{"--gc-grace", c.GCGrace, 0, 365 * 24 * time.Hour},
	} {
		if r.val < r.min || r.val > r.max {
			errs = append(errs, fmt.Errorf("node: %s %s is out of range: use %s to %s", r.flag, r.val, r.min, r.max))
		}
	}
	for _, r := range []countRange{
		{"--max-uploads", int64(c.MaxUploads), 1, 1_000_000},
		{"--max-uploads-per-client", int64(c.MaxUploadsPerClient), 1, int64(max(c.MaxUploads, 1))},
		{"--voters", int64(c.Voters), 1, 9},
		{"--max-raft-members", int64(c.MaxRaftMembers), 0, 64},
		{"--replicas", int64(c.Replicas), 1, 64},
		{"--bootstrap-expect", int64(c.BootstrapExpect), 0, 64},
		{"--snapshot-threshold", clamp(c.Consensus.SnapshotThreshold), 1, 100_000_000},
		{"--trailing-logs", clamp(c.Consensus.TrailingLogs), 1, 100_000_000},
		{"--min-free-disk", c.MinFreeDisk, 0, 1 << 50},
		{"--scrub-rate", c.ScrubRate, 0, 1 << 40},
		{"--max-disk", c.MaxDisk, 0, 1 << 50},
		{"--max-disk-low", c.MaxDiskLow, 0, max(c.MaxDisk, 0)},
	} {
		if r.val < r.min || r.val > r.max {
			errs = append(errs, fmt.Errorf("node: %s %d is out of range: use %d to %d", r.flag, r.val, r.min, r.max))
		}
	}
	{
		switch {
		case c.TokenTTL < token.MinTTL || c.TokenTTL > token.MaxTTL:
			errs = append(errs, fmt.Errorf("node: --auth-token-ttl %s is out of range: use %s to %s", c.TokenTTL, token.MinTTL, token.MaxTTL))
		case c.TokenKeyRotation < c.TokenTTL || c.TokenKeyRotation > token.MaxRotation:
			errs = append(errs, fmt.Errorf("node: --auth-token-key-rotation %s is out of range: use --auth-token-ttl (%s) to %s", c.TokenKeyRotation, c.TokenTTL, token.MaxRotation))
		}
	}
	return errors.Join(errs...)
}
