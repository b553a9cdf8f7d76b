package consensus

import (
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// manyTags returns n distinct valid tags of about width characters.
func manyTags(prefix string, n, width int) []string {
	tags := make([]string, n)
	for i := range tags {
		s := fmt.Sprintf("%s%06d", prefix, i)
		if pad := width - len(s); pad > 0 {
			s += strings.Repeat("x", pad)
		}
		tags[i] = s
	}
	return tags
}

// hostileCommands are commands a forged or forwarded entry could carry that
// the FSM must refuse, whoever proposed them.
func hostileCommands() map[string]command {
	m := manifest("repo", "hostile", "")
	put := func(mod func(c *command)) command { c := putCmd(m, ""); mod(&c); return c }
	html := "<html><script>alert(1)</script></html>"
	return map[string]command{
		"10,000 tags":           put(func(c *command) { c.Tags = manyTags("t", 10000, 60) }),
		"101 tags":              put(func(c *command) { c.Tags = manyTags("t", MaxTagsPerWrite+1, 8) }),
		"text/html manifest":    put(func(c *command) { c.MediaType = "text/html"; c.Body = []byte(html); c.Digest = digest.FromString(html) }),
		"no media type":         put(func(c *command) { c.MediaType = "" }),
		"repo with dot-dot":     put(func(c *command) { c.Repo = "EVIL/../Injected" }),
		"repo upper case":       put(func(c *command) { c.Repo = "Evil" }),
		"repo too long":         put(func(c *command) { c.Repo = strings.Repeat("a", 256) }),
		"tag with slash":        put(func(c *command) { c.Tags = []string{"a/b"} }),
		"tag too long":          put(func(c *command) { c.Tags = []string{strings.Repeat("t", 129)} }),
		"tag starting with dot": put(func(c *command) { c.Tags = []string{".x"} }),
		"body too large":        put(func(c *command) { c.Body = make([]byte, MaxManifestBytes+1); c.Digest = digest.FromBytes(c.Body) }),
		"md5 manifest digest":   put(func(c *command) { c.Digest = "md5:d41d8cd98f00b204e9800998ecf8427e" }),
		"bad artifact type":     put(func(c *command) { c.ArtifactType = "<script>" }),
		"bad subject":           put(func(c *command) { c.Subject = "sha256:nothex" }),
		"md5 subject":           put(func(c *command) { c.Subject = "md5:d41d8cd98f00b204e9800998ecf8427e" }),
		"too many annotations":  put(func(c *command) { c.Annotations = bigAnnotations(MaxAnnotations+1, 1) }),
		"annotations too large": put(func(c *command) { c.Annotations = bigAnnotations(1, MaxAnnotationBytes) }),
		"put with a size":       put(func(c *command) { c.Size = 5 }),
		"negative blob size":    {Op: opLinkBlob, Repo: "repo", Digest: digest.FromString("b"), Size: -5},
		"absurd blob size":      {Op: opLinkBlob, Repo: "repo", Digest: digest.FromString("b"), Size: MaxBlobSize + 1},
		"link to injected repo": {Op: opLinkBlob, Repo: "EVIL/../Injected", Digest: digest.FromString("b"), Size: 1},
		"link with a body":      {Op: opLinkBlob, Repo: "repo", Digest: digest.FromString("b"), Size: 1, Body: []byte("x")},
		"delete tag bad syntax": {Op: opDeleteTag, Repo: "repo", Tag: "../x"},
		"delete tag sha digest": {Op: opDeleteTag, Repo: "repo", Tag: "sha256:abc"},
		"delete manifest md5":   {Op: opDeleteManifest, Repo: "repo", Digest: "md5:d41d8cd98f00b204e9800998ecf8427e"},
		"unlink bad repo":       {Op: opUnlinkBlob, Repo: "a//b", Digest: digest.FromString("b")},
		"unknown op":            {Op: 99, Repo: "repo"},
	}
}

func bigAnnotations(n, valueLen int) map[string]string {
	a := map[string]string{}
	for i := range n {
		a[fmt.Sprintf("k%04d", i)] = strings.Repeat("v", valueLen)
	}
	return a
}

// TestFSMRefusesHostileCommands applies each hostile command straight to
// the FSM, as a forged log entry would reach it: each must be an error
// result that changes nothing but the applied index, never a panic.
func TestFSMRefusesHostileCommands(t *testing.T) {
	t.Parallel()
	f := openFSM(t)
	if err := applyCmd(t, f, 1, putCmd(manifest("repo", "base", ""), "v1")); err != nil {
		t.Fatal(err)
	}
	before := dump(t, f)
	delete(before, keyApplied)
	index := uint64(1)
	for name, c := range hostileCommands() {
		index++
		var err error
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("%s: the FSM panicked: %v", name, p)
				}
			}()
			err = applyCmd(t, f, index, c)
		}()
		if !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("%s: apply = %v, want an error wrapping ErrInvalidCommand", name, err)
		}
		if got, _ := f.appliedIndex(); got != index {
			t.Errorf("%s: applied index %d, want %d", name, got, index)
		}
	}
	after := dump(t, f)
	delete(after, keyApplied)
	if !maps.Equal(before, after) {
		t.Errorf("hostile commands changed the state: %d keys before, %d after", len(before), len(after))
	}
}

// TestFSMDeleteManifestWithManyTags: 15,000 tags (bounded writes of at
// most MaxTagsPerWrite each) on one manifest, then its delete by digest,
// which touches every tag: it must succeed within badger's transaction
// limits, not panic.
func TestFSMDeleteManifestWithManyTags(t *testing.T) {
	t.Parallel()
	f := openFSM(t)
	m := manifest("repo", "tagged", "")
	other := manifest("repo", "other", "")
	index := uint64(0)
	apply := func(c command) error {
		index++
		var err error
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("entry %d (op %d): the FSM panicked: %v", index, c.Op, p)
				}
			}()
			err = applyCmd(t, f, index, c)
		}()
		return err
	}
	if err := apply(putCmd(other, "keep")); err != nil {
		t.Fatal(err)
	}
	const total = 15000
	tags := manyTags("tag-", total, 40)
	for i := 0; i < total; i += 100 {
		c := putCmd(m, "")
		c.Tags = tags[i : i+100]
		if err := apply(c); err != nil {
			t.Fatalf("put of tags %d..%d: %v", i, i+100, err)
		}
	}
	start := time.Now()
	if err := apply(command{Op: opDeleteManifest, Repo: "repo", Digest: m.Digest}); err != nil {
		t.Fatalf("delete of a manifest with %d tags: %v", total, err)
	}
	t.Logf("deleted a manifest with %d tags in %s", total, time.Since(start))
	state := dump(t, f)
	for k := range state {
		if strings.Contains(k, string(m.Digest)) {
			t.Fatalf("key %q of the deleted manifest is still there", k)
		}
	}
	if got, _ := f.appliedIndex(); got != index {
		t.Errorf("applied index %d, want %d", got, index)
	}
	if _, ok := state[string(tagKey("repo", "keep"))]; !ok {
		t.Error("the delete removed a tag of another manifest")
	}
}
