package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/meshreg/meshreg/api/oci"
)

// What a node that is not (or no longer) a member waits for, told to the
// operator in /readyz, /_meshreg/v1/status ("join") and the log, instead of
// retrying silently: the --join target it tries, the last failure, and
// whether it was removed from the cluster while it was down.

// Join retries back off from joinRetryMin to joinRetryMax (doubling), and a
// failure that repeats the previous one is logged at WARN at most once per
// joinWarnEvery (at DEBUG otherwise).
const (
	joinRetryMin  = time.Second
	joinRetryMax  = 30 * time.Second
	joinWarnEvery = time.Minute
)

// JoinStatus is the "join" part of the status document: present while the
// node waits to become a member.
type JoinStatus struct {
	// Waiting says, in a sentence, what the node waits for.
	Waiting string `json:"waiting"`
	// Target is the --join target (or peer) of the last attempt.
	Target string `json:"target,omitempty"`
	// LastError is why the last attempt failed.
	LastError string `json:"last_error,omitempty"`
	// Attempts counts the attempts so far; NextAttempt is when the next
	// one starts.
	Attempts    int       `json:"attempts"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	// RemovedWhileDown is true when the cluster removed this node while it
	// was down (--dead-server-timeout): it rejoins as a non-voter.
	RemovedWhileDown bool `json:"removed_while_down,omitempty"`
	// PassesLost is true when this node followed the metadata and no
	// member accepts its passes any more (expired, or their issuers left):
	// it joins again as a new node (followpass.go).
	PassesLost bool `json:"passes_lost,omitempty"`
}

// joinState is a node's JoinStatus, safe for concurrent use.
type joinState struct {
	mu sync.Mutex
	st JoinStatus
	// active is false once the node is a member (nothing to report).
	active bool
	// lastWarn and lastWarned rate-limit the WARN lines of failures.
	lastWarn   time.Time
	lastWarned string
}

// wait records what the node waits for (a new phase: attempts restart).
func (j *joinState) wait(what string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.active && j.st.Waiting == what {
		return
	}
	removed, lost := j.st.RemovedWhileDown, j.st.PassesLost
	j.st = JoinStatus{Waiting: what, RemovedWhileDown: removed, PassesLost: lost}
	j.active = true
}

// setWaiting changes the sentence of the current phase, keeping its
// attempts and last failure.
func (j *joinState) setWaiting(what string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.st.Waiting = what
	j.active = true
}

// setRemovedWhileDown marks the node as removed while it was down.
func (j *joinState) setRemovedWhileDown(v bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.st.RemovedWhileDown = v
}

func (j *joinState) removedWhileDown() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.st.RemovedWhileDown
}

// setPassesLost marks a follower whose passes no member accepts.
func (j *joinState) setPassesLost(v bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.st.PassesLost = v
}

func (j *joinState) passesLost() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.st.PassesLost
}

// failed records a failed attempt through target, to be retried at next,
// and logs it: at WARN when the reason is new or the last WARN is older
// than joinWarnEvery, at DEBUG otherwise.
func (j *joinState) failed(log *slog.Logger, target string, err error, next time.Duration) {
	now := time.Now()
	j.mu.Lock()
	j.st.Attempts++
	j.st.Target = target
	j.st.LastError = err.Error()
	j.st.NextAttempt = now.Add(next)
	waiting, attempts := j.st.Waiting, j.st.Attempts
	reason := target + " " + err.Error()
	warn := reason != j.lastWarned || now.Sub(j.lastWarn) >= joinWarnEvery
	if warn {
		j.lastWarn, j.lastWarned = now, reason
	}
	j.mu.Unlock()
	level := slog.LevelDebug
	if warn {
		level = slog.LevelWarn
	}
	log.Log(context.Background(), level, "join attempt failed; will retry", "waiting", waiting, "target", target,
		"attempt", attempts, "retry_in", next.Round(time.Second), "err", err)
}

// done records that the node is a member: nothing to wait for.
func (j *joinState) done() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.active = false
	j.st = JoinStatus{}
}

// status is the JoinStatus while the node waits, nil otherwise.
func (j *joinState) status() *JoinStatus {
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.active && !j.st.RemovedWhileDown && !j.st.PassesLost {
		return nil
	}
	st := j.st
	return &st
}

// describe is the status as one sentence for /readyz and errors, "" when
// the node waits for nothing.
func (j *joinState) describe() string {
	st := j.status()
	if st == nil {
		return ""
	}
	var b strings.Builder
	b.WriteString(st.Waiting)
	if st.LastError != "" {
		fmt.Fprintf(&b, "; attempt %d through %s failed: %s", st.Attempts, st.Target, st.LastError)
		if !st.NextAttempt.IsZero() {
			fmt.Fprintf(&b, " (next attempt in %s)", max(time.Until(st.NextAttempt), 0).Round(time.Second))
		}
	}
	return b.String()
}

// backoff is the pause before the next join attempt: doubling from
// joinRetryMin up to joinRetryMax.
type backoff struct{ next time.Duration }

func (b *backoff) step() time.Duration {
	if b.next == 0 {
		b.next = joinRetryMin
	}
	d := b.next
	b.next = min(2*b.next, joinRetryMax)
	return d
}

// membershipProblem is why this node takes no writes because of its
// membership (removed, or not joined yet), "" if it is a member or just
// started.
func (n *Node) membershipProblem() string {
	if n.join.removedWhileDown() || n.join.passesLost() {
		return n.join.describe()
	}
	if n.removed() {
		return "this node was removed from the cluster (it knows a configuration that does not name it): " +
			"restart it with --join <a member> to join again"
	}
	if !n.isMember() {
		if w := n.join.describe(); w != "" {
			return "this node is not a member of the cluster yet: " + w
		}
	}
	return ""
}

// membershipError is membershipProblem as the error a client sees.
func (n *Node) membershipError() error {
	p := n.membershipProblem()
	if p == "" {
		return nil
	}
	return oci.Wrap(oci.Unavailable, errors.New("not a member of the cluster"), p+"; retry on another node")
}

// explainConnect says what a failed libp2p connection to a join target
// most likely means, when libp2p's own words do not.
func explainConnect(err error) error {
	if strings.Contains(err.Error(), "failed to negotiate security protocol") {
		// A private network's handshake is garbage to a node without the
		// same key, and the other way round.
		return fmt.Errorf("no secure libp2p connection: the cluster key (--cluster-key) is missing or wrong here or there "+
			"(every node needs the same one, or none): %w", err)
	}
	return err
}
