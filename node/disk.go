package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshreg/meshreg/api/oci"
	"github.com/meshreg/meshreg/consensus"
	"github.com/meshreg/meshreg/internal/bytesize"
)

// DefaultMinFreeDisk is the free space a node keeps on its data dir's
// filesystem by default. The metadata lives in two badger databases (the
// Raft log and the FSM) that write through memory-mapped files: each keeps
// up to two 16 MiB memtables whose write-ahead files are mapped at 32 MiB,
// flushes them into level-0 tables of about the same size, and compacts
// them into new tables before it removes the old ones; value-log files
// (256 MiB, sparse) take values over 1 MiB. A write into a mapped page the
// filesystem cannot back is a SIGBUS, not an error, so the node must stop
// taking writes while badger still has room for about two memtables and a
// compaction in each database (~2 × 64 MiB), plus a Raft snapshot of the
// metadata: 256 MiB.
const DefaultMinFreeDisk = 256 << 20

// diskCheckEvery is how long a free-space reading is reused.
const diskCheckEvery = time.Second

// guardEvery is how many bytes of blob writes (all of them together) may
// pass between two free-space readings, so that neither one large push nor
// a burst of small ones within diskCheckEvery can eat the reserve.
const guardEvery = 4 << 20

// ErrLowDisk is the cause of a write refused because the node's disk is
// (nearly) full.
var ErrLowDisk = errors.New("low on disk")

// ErrOverBudget is the cause of a new blob refused because the node holds
// --max-disk bytes of blobs and can evict none.
var ErrOverBudget = errors.New("over the disk budget")

// blobBudget is the evictor as the disk guard sees it (replicate.Evictor).
type blobBudget interface {
	Budget() int64
	Low() int64
	// Kick asks for an eviction pass now; it never blocks.
	Kick()
	// Stuck says why the node is at its budget with nothing to evict
	// ("": it is not, or a pass may yet free space).
	Stuck() string
}

// lowDiskPrefix starts the message of a write refused for disk space; a
// follower recognises it in the leader's answer to a forwarded write.
const lowDiskPrefix = "low on disk: "

// diskGuard refuses writes while the data dir's filesystem has less than
// the reserve free. A reading is reused for at most diskCheckEvery and
// guardEvery bytes of blob writes, so the check is live but costs about
// one statfs a second plus one per guardEvery bytes written. Safe for
// concurrent use.
type diskGuard struct {
	dir     string
	reserve int64 // 0: never refuse early (ENOSPC is still reported clearly)
	nodeID  func() string
	statfs  func(dir string) (free, total int64, err error)
	now     func() time.Time
	refused prometheus.Counter
	log     *slog.Logger
	// budget, when not nil, is --max-disk: used is the blob bytes held,
	// budgetRefused counts the new blobs refused over it (checkBlob).
	budget        blobBudget
	used          func() int64
	budgetRefused prometheus.Counter

	mu      sync.Mutex
	low     bool // at the last reading; its changes are logged
	checked time.Time
	written int64 // blob bytes accepted since the reading
	free    int64
	total   int64
	err     error
}

func newDiskGuard(dir string, reserve int64, nodeID func() string, refused prometheus.Counter, log *slog.Logger) *diskGuard {
	return &diskGuard{dir: dir, reserve: reserve, nodeID: nodeID, statfs: statfs, now: time.Now, refused: refused, log: log}
}

// statfs reads the space available to this (unprivileged) process on the
// filesystem holding dir.
func statfs(dir string) (free, total int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), int64(st.Blocks) * int64(st.Bsize), nil
}

// read returns the free and total bytes, from a reading at most
// diskCheckEvery old unless fresh.
func (g *diskGuard) read(fresh bool) (free, total int64, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if now := g.now(); fresh || g.checked.IsZero() || now.Sub(g.checked) >= diskCheckEvery || g.written >= guardEvery {
		g.free, g.total, g.err = g.statfs(g.dir)
		g.checked, g.written = now, 0
		if low := g.err == nil && g.reserve > 0 && g.free < g.reserve; low != g.low {
			g.low = low
			if low {
				g.log.Warn("the data dir's disk is nearly full: refusing blob uploads and metadata writes until space is freed",
					"dir", g.dir, "free", bytesize.Human(g.free), "reserve", bytesize.Human(g.reserve))
			} else {
				g.log.Info("disk space is back above the reserve: taking writes again",
					"dir", g.dir, "free", bytesize.Human(g.free), "reserve", bytesize.Human(g.reserve))
			}
		}
	}
	return g.free, g.total, g.err
}

// check returns a 507 error when a write must be refused now.
func (g *diskGuard) check() error {
	if g.reserve <= 0 {
		return nil
	}
	free, _, err := g.read(false)
	if err != nil {
		// Cannot tell: let the write try; ENOSPC is still mapped.
		return nil
	}
	if free < g.reserve {
		return g.refuse(fmt.Errorf("%w: %s free, %s reserved", ErrLowDisk, bytesize.Human(free), bytesize.Human(g.reserve)))
	}
	return nil
}

// checkBlob is check for a write that adds a blob to this node (an upload,
// a fetch): it is also refused with 507 while the node holds its
// --max-disk budget and can evict nothing. At the budget it asks for an
// eviction pass: a write is let through until a pass found nothing to
// evict, so the budget may be passed by the blobs being written then.
func (g *diskGuard) checkBlob() error {
	if err := g.check(); err != nil {
		return err
	}
	if g.budget == nil {
		return nil
	}
	used, budget := g.used(), g.budget.Budget()
	if used < budget {
		return nil
	}
	g.budget.Kick()
	why := g.budget.Stuck()
	if why == "" {
		return nil
	}
	g.budgetRefused.Inc()
	msg := fmt.Sprintf("node %s is over its disk budget (--max-disk %s): %s of blobs held, and nothing can be evicted: %s; "+
		"pull through another node, add nodes, or raise --max-disk; it takes new blobs again once eviction frees space",
		g.nodeID(), bytesize.Human(budget), bytesize.Human(used), why)
	return oci.Wrap(oci.Denied, fmt.Errorf("%w: %d of %d bytes", ErrOverBudget, used, budget), msg).WithStatus(http.StatusInsufficientStorage)
}

// refuse counts a refused write and returns the client's error: 507 with
// an OCI DENIED body that says what to do.
func (g *diskGuard) refuse(cause error) error {
	g.refused.Inc()
	free, _, _ := g.read(true)
	msg := fmt.Sprintf("node %s is low on disk: %s free in %s, %s reserved for its metadata; free space there (delete unused images and let GC run, or grow the disk) or lower --min-free-disk; reads still work and writes resume by themselves once space is free",
		g.nodeID(), bytesize.Human(free), g.dir, bytesize.Human(g.reserve))
	return oci.Wrap(oci.Denied, cause, msg).WithStatus(http.StatusInsufficientStorage)
}

// isFull reports whether err is a write's failure for lack of space: a
// refusal of this guard or the leader's, or ENOSPC/EDQUOT from the disk.
func (g *diskGuard) isFull(err error) bool {
	var oe *oci.Error
	if errors.As(err, &oe) && oe.HTTPStatus() == http.StatusInsufficientStorage {
		return true
	}
	var fe *consensus.ForwardError
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) ||
		errors.As(err, &fe) && strings.HasPrefix(fe.Msg, lowDiskPrefix)
}

// mapError turns a write's failure for lack of space (ENOSPC, EDQUOT, or a
// refusal from the leader of a forwarded write) into the same 507 error,
// and returns any other error unchanged.
func (g *diskGuard) mapError(err error) error {
	var oe *oci.Error
	if errors.As(err, &oe) && oe.HTTPStatus() == http.StatusInsufficientStorage {
		return err
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return g.refuse(err)
	}
	var fe *consensus.ForwardError
	if errors.As(err, &fe) && strings.HasPrefix(fe.Msg, lowDiskPrefix) {
		return oci.Wrap(oci.Denied, err, "the cluster's leader "+fe.Msg[len(lowDiskPrefix):]).WithStatus(http.StatusInsufficientStorage)
	}
	return err
}

// reader wraps a blob body so that a write stops with the 507 error once
// the disk reaches the reserve while it is being written.
func (g *diskGuard) reader(r io.Reader) io.Reader {
	if g.reserve <= 0 {
		return r
	}
	return &guardedReader{r: r, g: g}
}

type guardedReader struct {
	r io.Reader
	g *diskGuard
}

func (gr *guardedReader) Read(p []byte) (int, error) {
	if err := gr.g.check(); err != nil {
		return 0, err
	}
	n, err := gr.r.Read(p)
	gr.g.mu.Lock()
	gr.g.written += int64(n)
	gr.g.mu.Unlock()
	return n, err
}

// forwardRefusal is the leader's answer to a forwarded write it refuses for
// lack of disk space; the follower's mapError turns it back into a 507.
func forwardRefusal(err error) []byte {
	msg := err.Error()
	var oe *oci.Error
	if errors.As(err, &oe) {
		msg = oe.Message
	}
	b, _ := json.Marshal(forwardResult{Code: consensus.ErrorCode(err), Msg: lowDiskPrefix + msg})
	return b
}

// warnSmall logs at start when the reserve leaves little of the disk for
// blobs, or the free space cannot be read.
func (g *diskGuard) warnSmall() {
	free, total, err := g.read(true)
	switch {
	case err != nil:
		g.log.Warn("cannot read the free space of the data dir: writes are not refused early; a full disk is still reported as 507", "err", err)
	case g.reserve > 0 && total < 2*g.reserve:
		g.log.Warn("the data dir's filesystem is small for --min-free-disk: most of it stays reserved for the metadata",
			"total", bytesize.Human(total), "free", bytesize.Human(free), "reserve", bytesize.Human(g.reserve))
	}
}

// DiskStatus is the disk part of the status document.
type DiskStatus struct {
	FreeBytes    int64 `json:"free_bytes"`
	TotalBytes   int64 `json:"total_bytes"`
	ReserveBytes int64 `json:"reserve_bytes"`
	// Low is true while writes are refused (free < reserve).
	Low   bool   `json:"low"`
	Error string `json:"error,omitempty"`
	// BudgetBytes is --max-disk (0: none), LowWaterBytes what eviction
	// brings the node down to, UsedBytes the blob bytes counted against
	// it; OverBudget says why new blobs are refused ("": they are not).
	BudgetBytes   int64  `json:"budget_bytes"`
	LowWaterBytes int64  `json:"low_water_bytes,omitempty"`
	UsedBytes     int64  `json:"used_bytes"`
	OverBudget    string `json:"over_budget,omitempty"`
}

func (g *diskGuard) status() DiskStatus {
	free, total, err := g.read(false)
	st := DiskStatus{FreeBytes: free, TotalBytes: total, ReserveBytes: g.reserve, Low: err == nil && g.reserve > 0 && free < g.reserve}
	if err != nil {
		st.Error = err.Error()
	}
	if g.used != nil {
		st.UsedBytes = g.used()
	}
	if g.budget != nil {
		st.BudgetBytes, st.LowWaterBytes, st.OverBudget = g.budget.Budget(), g.budget.Low(), g.budget.Stuck()
	}
	return st
}
