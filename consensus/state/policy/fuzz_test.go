package policy

import (
	"reflect"
	"testing"
)

// FuzzParse: any document parses or fails without panicking, the same way
// twice (every node parses the stored policy at apply), and a parsed
// policy matches without panicking.
func FuzzParse(f *testing.F) {
	f.Add([]byte(doc))
	f.Add([]byte("rules: []"))
	f.Add([]byte("rules:\n  - repositories: [a/**]\n    retention: {keepLast: 1, deleteTagsAfter: 1d}\n"))
	f.Add([]byte("rules: [{repositories: ['**'], quota: 1GiB, immutable: {tags: ['[']}}]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p1, err1 := Parse(b)
		p2, err2 := Parse(b)
		if (err1 == nil) != (err2 == nil) || (err1 != nil && err1.Error() != err2.Error()) || !reflect.DeepEqual(p1, p2) {
			t.Fatalf("two parses differ: %v / %v", err1, err2)
		}
		if p1 != nil {
			p1.Immutable("a/b", "v1")
			p1.Quota("a")
		}
	})
}

// BenchmarkParse is the cost every put or delete pays at apply once a
// policy is stored (it is parsed from the state each time).
func BenchmarkParse(b *testing.B) {
	for b.Loop() {
		if _, err := Parse([]byte(doc)); err != nil {
			b.Fatal(err)
		}
	}
}
