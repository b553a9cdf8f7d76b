package consensus

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestHubSlowSubscriberSeesLatest: a subscriber that does not read loses
// the oldest values, never the newest, and never blocks the publisher.
func TestHubSlowSubscriberSeesLatest(t *testing.T) {
	t.Parallel()
	h := newHub(4, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first, ch := h.subscribe(ctx)
	if first != 0 {
		t.Fatalf("first value %d, want the initial 0", first)
	}
	for i := 1; i <= 1000; i++ {
		h.publish(i) // would block here if publishing waited on the reader
	}
	var got []int
	for len(ch) > 0 {
		got = append(got, <-ch)
	}
	if len(got) != 4 || got[len(got)-1] != 1000 {
		t.Fatalf("a slow subscriber got %v, want the 4 newest ending with 1000", got)
	}
	if now, _ := h.subscribe(ctx); now != 1000 {
		t.Errorf("a new subscriber starts from %d, want 1000", now)
	}
	cancel()
	waitClosed(t, ch)
}

// TestHubCloseEndsSubscriptions: closing the hub closes every channel, and
// a later subscription gets a closed channel with the last value.
func TestHubCloseEndsSubscriptions(t *testing.T) {
	t.Parallel()
	h := newHub(1, "a")
	_, ch := h.subscribe(context.Background())
	h.publish("b")
	h.close()
	if v, ok := <-ch; !ok || v != "b" {
		t.Errorf("got %q, %v; want the buffered b", v, ok)
	}
	waitClosed(t, ch)
	v, late := h.subscribe(context.Background())
	if v != "b" {
		t.Errorf("late subscriber starts from %q, want b", v)
	}
	waitClosed(t, late)
	h.publish("c") // after close: no subscriber, no panic
}

func waitClosed[T any](t *testing.T, ch <-chan T) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatal("the channel was not closed")
		}
	}
}

// TestWatchAppliedEntries: each applied write arrives with its Raft index
// and kind, in order; the store's Close ends the subscription.
func TestWatchAppliedEntries(t *testing.T) {
	t.Parallel()
	s, err := Open(testConfig(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	start, events := s.WatchApplied(ctx)
	if start.Index != s.AppliedIndex() {
		t.Errorf("WatchApplied starts at %d, the store applied %d", start.Index, s.AppliedIndex())
	}
	m := manifest("repo", "x", "")
	mustPut(t, s, m, "v1")
	if err := s.LinkBlob(ctx, "repo", m.Digest, 3); err != nil {
		t.Fatal(err)
	}
	wantNotFound(t, "DeleteTag", s.DeleteTag(ctx, "repo", "nope"))
	want := []Applied{
		{Kind: KindPutManifest, Repo: "repo", Digest: m.Digest},
		{Kind: KindLinkBlob, Repo: "repo", Digest: m.Digest},
		{Kind: KindDeleteTag, Repo: "repo", Tag: "nope", Failed: true},
	}
	last := start.Index
	for i, w := range want {
		var got Applied
		select {
		case got = <-events:
		case <-time.After(5 * time.Second):
			t.Fatalf("event %d did not come", i)
		}
		if got.Index <= last {
			t.Errorf("event %d: index %d not above %d", i, got.Index, last)
		}
		last = got.Index
		w.Index = got.Index
		if got != w {
			t.Errorf("event %d = %+v, want %+v", i, got, w)
		}
	}
	if last != s.AppliedIndex() {
		t.Errorf("last event at %d, AppliedIndex %d", last, s.AppliedIndex())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, events)
}

// TestWatchLeadershipAndMembership: followers see the leader change when
// it is cut off, and every node sees a membership change, without polling.
func TestWatchLeadershipAndMembership(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, nil)
	leader := c.leader()
	var follower *Store
	for _, s := range c.followers() {
		follower = s
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, changes := follower.Watch(ctx)
	// The hub may not have published the election's outcome yet.
	for st.LeaderID != leader.cfg.NodeID {
		st = next(t, changes, "the follower learns the leader")
	}
	if st.Role != Follower {
		t.Errorf("the follower's role is %s", st.Role)
	}
	lst, _ := leader.Watch(ctx)
	for lst.Role != Leader {
		t.Fatalf("the leader's view is %+v", lst)
	}

	// A membership change moves MembershipIndex on the follower.
	before := st.MembershipIndex
	if err := leader.AddNonvoter(ctx, "n9", "n9"); err != nil {
		t.Fatal(err)
	}
	for st.MembershipIndex <= before {
		st = next(t, changes, "the follower sees the new configuration")
	}

	// Cut the leader off: the follower sees another leader, or none first.
	c.disconnect(leader.cfg.NodeID)
	for st.LeaderID == leader.cfg.NodeID {
		st = next(t, changes, "the follower sees the old leader go")
	}
}

func next(t *testing.T, ch <-chan State, what string) State {
	t.Helper()
	select {
	case st, ok := <-ch:
		if !ok {
			t.Fatalf("%s: the channel closed", what)
		}
		return st
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no event in 10s", what)
	}
	return State{}
}

// TestWaitApplied: WaitApplied returns once the index is applied, at once
// for one already applied, and with ctx's error when it ends first.
func TestWaitApplied(t *testing.T) {
	t.Parallel()
	s := openStore(t, testConfig(t, t.TempDir()))
	ctx := context.Background()
	mustPut(t, s, manifest("repo", "x", ""), "")
	done := s.AppliedIndex()
	if err := s.WaitApplied(ctx, done); err != nil {
		t.Fatalf("WaitApplied(%d), already applied: %v", done, err)
	}
	waited := make(chan error, 1)
	go func() { waited <- s.WaitApplied(ctx, done+1) }()
	mustPut(t, s, manifest("repo", "y", ""), "")
	select {
	case err := <-waited:
		if err != nil {
			t.Errorf("WaitApplied(%d): %v", done+1, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitApplied did not return after the write")
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := s.WaitApplied(short, done+100); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitApplied of a future index: %v, want the deadline", err)
	}
}
