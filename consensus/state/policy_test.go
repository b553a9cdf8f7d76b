package state

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"
)

func setPolicy(doc string) Command {
	return Command{Op: OpPutSetting, Name: SettingPolicy, Body: []byte(doc)}
}

func usage(t *testing.T, a *applier, repo string) int64 {
	t.Helper()
	var n int64
	read(t, a.db, func(r Reader) {
		var err error
		if n, err = r.Usage(repo); err != nil {
			t.Fatal(err)
		}
	})
	return n
}

func wantDenied(t *testing.T, resp error, msg string) {
	t.Helper()
	if !errors.Is(resp, ErrPolicyDenied) || !strings.Contains(resp.Error(), msg) {
		t.Fatalf("got %v, want a policy refusal with %q", resp, msg)
	}
}

// TestImmutableTagsAtApply: once the policy makes v* immutable in team/**,
// moving v1 to another digest, deleting it, and deleting its manifest are
// refused at apply (so racing writers agree) with the rule named; the same
// digest again, other tags and other repositories are fine.
func TestImmutableTagsAtApply(t *testing.T) {
	t.Parallel()
	a := &applier{t: t, db: openDB(t)}
	a.must(setPolicy("rules:\n  - repositories: [team/**]\n    immutable:\n      tags: [\"v*\"]\n"))
	one, two := image("team/app", digest.FromString("c1")), image("team/app", digest.FromString("c2"))
	a.must(withTags(one, "v1", "latest"))
	a.must(withTags(one, "v1"))             // the same digest again
	a.must(withTags(two, "latest"))         // a mutable tag moves
	_, resp := a.apply(withTags(two, "v1")) // an immutable one does not
	wantDenied(t, resp, "tag v1 of team/app is immutable (policy rule 1)")
	wantDenied(t, resp, "push a new tag")
	read(t, a.db, func(r Reader) {
		if d, _ := r.ResolveTag("team/app", "v1"); d != one.Digest {
			t.Errorf("v1 moved to %s", d)
		}
		if err := r.CheckPolicy(withTags(two, "v1"), nil); !errors.Is(err, ErrPolicyDenied) {
			t.Errorf("CheckPolicy = %v, want the refusal before proposing", err)
		}
	})
	_, resp = a.apply(Command{Op: OpDeleteTag, Repo: "team/app", Tag: "v1"})
	wantDenied(t, resp, "tag v1 of team/app is immutable (policy rule 1): it cannot be deleted")
	_, resp = a.apply(Command{Op: OpDeleteManifest, Repo: "team/app", Digest: one.Digest})
	wantDenied(t, resp, "is tagged v1, an immutable tag (policy rule 1)")
	read(t, a.db, func(r Reader) {
		if d, err := r.ResolveTag("team/app", "v1"); err != nil || d != one.Digest {
			t.Errorf("after refused deletes: v1 = %s, %v", d, err)
		}
	})
	a.must(Command{Op: OpDeleteTag, Repo: "team/app", Tag: "latest"})
	a.must(Command{Op: OpDeleteManifest, Repo: "team/app", Digest: two.Digest})
	other := image("other", digest.FromString("c3"))
	a.must(withTags(other, "v1"))
	a.must(withTags(image("other", digest.FromString("c4")), "v1"))
	a.must(Command{Op: OpDeleteTag, Repo: "other", Tag: "v1"})
}

func withTags(c Command, tags ...string) Command {
	c.Tags = tags
	return c
}

// TestQuotaAccounting: a repository's usage counts manifest bodies and each
// distinct blob once at its linked size; deleting gives the bytes back when
// the last manifest referencing a blob goes; a put past the quota is
// refused with usage and limit, one within it is fine.
func TestQuotaAccounting(t *testing.T) {
	t.Parallel()
	a := &applier{t: t, db: openDB(t)}
	cfgA, cfgB, shared, onlyA := digest.FromString("ca"), digest.FromString("cb"), digest.FromString("shared"), digest.FromString("onlyA")
	for d, size := range map[digest.Digest]int64{cfgA: 10, cfgB: 20, shared: 1000, onlyA: 300} {
		a.must(Command{Op: OpLinkBlob, Repo: "team/app", Digest: d, Size: size, Time: 1})
	}
	// Before the first policy nothing is counted (as by a release without
	// the accounting), and deleting such a manifest gives nothing back.
	early := image("team/app", cfgB)
	a.must(early)
	if got := usage(t, a, "team/app"); got != 0 {
		t.Fatalf("usage before any policy = %d", got)
	}
	a.must(setPolicy("rules:\n  - repositories: [elsewhere]\n    quota: 1\n"))
	imgA := image("team/app", cfgA, shared, onlyA, shared)
	imgB := image("team/app", cfgB, shared)
	a.must(imgA)
	wantA := int64(len(imgA.Body)) + 10 + 1000 + 300
	if got := usage(t, a, "team/app"); got != wantA {
		t.Fatalf("usage after A = %d, want %d", got, wantA)
	}
	a.must(imgB)
	wantAB := wantA + int64(len(imgB.Body)) + 20 // shared counted once
	if got := usage(t, a, "team/app"); got != wantAB {
		t.Fatalf("usage after A and B = %d, want %d", got, wantAB)
	}
	a.must(imgA) // again: nothing new
	if got := usage(t, a, "team/app"); got != wantAB {
		t.Fatalf("usage after A again = %d, want %d", got, wantAB)
	}
	a.must(Command{Op: OpDeleteManifest, Repo: "team/app", Digest: early.Digest})
	if got := usage(t, a, "team/app"); got != wantAB {
		t.Fatalf("usage after deleting an uncounted manifest = %d, want %d", got, wantAB)
	}
	a.must(Command{Op: OpDeleteManifest, Repo: "team/app", Digest: imgA.Digest})
	wantB := int64(len(imgB.Body)) + 20 + 1000 // shared stays with B
	if got := usage(t, a, "team/app"); got != wantB {
		t.Fatalf("usage after deleting A = %d, want %d", got, wantB)
	}

	// A quota just above B: A (adds its body, config and onlyA) is refused.
	limit := wantB + 100
	a.must(setPolicy("rules:\n  - repositories: [team/*]\n    quota: " + itoa(int(limit)) + "\n"))
	_, resp := a.apply(imgA)
	wantDenied(t, resp, "repository team/app is over its quota with this manifest: it holds "+itoa(int(wantB))+" bytes")
	wantDenied(t, resp, "the quota is "+itoa(int(limit))+" (policy rule 1)")
	if got := usage(t, a, "team/app"); got != wantB {
		t.Fatalf("usage after a refused put = %d, want %d", got, wantB)
	}
	// Tagging what is there adds nothing: fine even at the limit.
	a.must(withTags(imgB, "again"))
	a.must(Command{Op: OpDeleteManifest, Repo: "team/app", Digest: imgB.Digest})
	if got := usage(t, a, "team/app"); got != 0 {
		t.Fatalf("usage of an empty repository = %d", got)
	}
	a.must(imgB) // within the quota now
	// Another repository has its own usage.
	a.must(Command{Op: OpLinkBlob, Repo: "team/other", Digest: shared, Size: 1000, Time: 1})
	other := image("team/other", cfgA, shared)
	a.must(other)
	if got := usage(t, a, "team/other"); got != int64(len(other.Body))+1000 {
		t.Fatalf("usage of team/other = %d", got)
	}
}

// TestInvalidPolicyIsRefusedAtApply: a policy body no node can parse is
// refused the same way as any invalid command (whoever proposed it), and
// the policy in force stays.
func TestInvalidPolicyIsRefusedAtApply(t *testing.T) {
	t.Parallel()
	a := &applier{t: t, db: openDB(t)}
	a.must(setPolicy("rules:\n  - repositories: [a]\n    immutable: {}\n"))
	for _, bad := range []string{"rules: [", "rules:\n  - repositories: [a]\n    quotta: 1\n", "rules: 7"} {
		_, resp := a.apply(setPolicy(bad))
		if !errors.Is(resp, ErrInvalidCommand) {
			t.Errorf("policy %q: %v, want ErrInvalidCommand", bad, resp)
		}
	}
	a.must(withTags(image("a", digest.FromString("x")), "t"))
	_, resp := a.apply(withTags(image("a", digest.FromString("y")), "t"))
	wantDenied(t, resp, "tag t of a is immutable")
}

// TestRetentionReadsPushOrder: the view gives retention each tag's push
// (index and proposer time) and each manifest's, so the last N pushes are
// kept whatever the tags are called, and children of an index are never
// "untagged".
func TestRetentionReadsPushOrder(t *testing.T) {
	t.Parallel()
	a := &applier{t: t, db: openDB(t)}
	a.must(setPolicy("rules:\n  - repositories: [ci/*]\n    retention:\n      tags: [\"ci-*\"]\n      keepLast: 2\n      deleteUntaggedAfter: 1h\n"))
	old := int64(1_000_000_000)
	var imgs []Command
	for i, tag := range []string{"ci-b", "ci-a", "ci-d", "ci-c"} { // pushed in this order
		c := withTags(image("ci/app", digest.FromString(tag)), tag, "latest-"+itoa(i))
		c.Time = old + int64(i)
		a.must(c)
		imgs = append(imgs, c)
	}
	child := image("ci/app", digest.FromString("child"))
	child.Time = old
	a.must(child)
	index := put("ci/app", "application/vnd.oci.image.index.v1+json", `{"schemaVersion":2,"manifests":[{"digest":"`+string(child.Digest)+`"}]}`)
	index.Time = old
	a.must(index)
	var got []string
	err := a.db.View(func(txn *badger.Txn) error {
		v, err := NewView(txn)
		if err != nil {
			return err
		}
		p, err := v.Policy()
		if err != nil {
			return err
		}
		ds, err := v.Retention(p, time.Unix(0, old).Add(2*time.Hour), 100)
		for _, d := range ds {
			got = append(got, d.Tag+"@"+string(d.Digest))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"ci-a@" + string(imgs[1].Digest), "ci-b@" + string(imgs[0].Digest), "@" + string(index.Digest)}
	if !slices.Equal(got, want) {
		t.Fatalf("Retention = %v\nwant %v", got, want)
	}
}

// TestPolicyCacheFollowsTheBytes: the cache gives the policy of the bytes
// it is asked about, so a policy write takes effect on the next entry.
func TestPolicyCacheFollowsTheBytes(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	var cache PolicyCache
	index := uint64(0)
	apply := func(c Command) error {
		t.Helper()
		data, _ := c.Encode()
		index++
		_, ok, resp, err := ApplyCached(db, index, data, nil, &cache)
		if err != nil || !ok {
			t.Fatalf("apply %d: %v", index, err)
		}
		return resp
	}
	if err := apply(setPolicy("rules:\n  - repositories: [a]\n    immutable: {}\n")); err != nil {
		t.Fatal(err)
	}
	if err := apply(withTags(image("a", digest.FromString("1")), "t")); err != nil {
		t.Fatal(err)
	}
	if err := apply(withTags(image("a", digest.FromString("2")), "t")); !errors.Is(err, ErrPolicyDenied) {
		t.Fatalf("immutable: %v", err)
	}
	if err := apply(setPolicy("rules: []")); err != nil {
		t.Fatal(err)
	}
	if err := apply(withTags(image("a", digest.FromString("2")), "t")); err != nil {
		t.Fatalf("after the policy was cleared: %v", err)
	}
}

// BenchmarkApplyPutWithPolicy: what the content policy (immutable tags, a
// quota, usage accounting) adds to applying a manifest put.
func BenchmarkApplyPutWithPolicy(b *testing.B) {
	for _, withPolicy := range []bool{false, true} {
		b.Run(map[bool]string{false: "no policy", true: "policy"}[withPolicy], func(b *testing.B) {
			db, err := badger.Open(badger.DefaultOptions(b.TempDir()).WithLogger(nil))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			var cache PolicyCache
			index := uint64(0)
			apply := func(c Command) {
				data, _ := c.Encode()
				index++
				if _, _, resp, err := ApplyCached(db, index, data, nil, &cache); err != nil || resp != nil {
					b.Fatal(err, resp)
				}
			}
			if withPolicy {
				apply(setPolicy(policyBenchDoc))
			}
			layers := make([]digest.Digest, 5)
			for i := range layers {
				layers[i] = digest.FromString("layer" + itoa(i))
				apply(Command{Op: OpLinkBlob, Repo: "team/app", Digest: layers[i], Size: 1000, Time: 1})
			}
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				apply(withTags(image("team/app", digest.FromString("cfg"+itoa(i)), layers...), "v"+itoa(i)))
			}
		})
	}
}

const policyBenchDoc = `rules:
  - repositories: [team/**]
    exclude: [team/scratch]
    immutable:
      tags: ["v*"]
      exclude: [v-dev]
    quota: 100GiB
  - repositories: [ci/*]
    retention:
      tags: ["ci-*"]
      keepLast: 10
      deleteUntaggedAfter: 7d
`
