// Package fuzz holds the list of fuzz targets that `make fuzz` runs
// (targets.txt) and run.sh, which runs them.
package fuzz

import (
	"bufio"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var fuzzFunc = regexp.MustCompile(`(?m)^func (Fuzz\w+)\(f \*testing\.F\)`)

// TestTargetsListEveryFuzzTarget keeps targets.txt and the code in step:
// a target missing from the list would never be fuzzed by make fuzz, and
// a listed one that does not exist would fail the run.
func TestTargetsListEveryFuzzTarget(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	var inCode []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		for _, m := range fuzzFunc.FindAllStringSubmatch(string(b), -1) {
			inCode = append(inCode, "./"+filepath.ToSlash(rel)+" "+m[1])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("targets.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var listed []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.Join(strings.Fields(sc.Text()), " "); line != "" && !strings.HasPrefix(line, "#") {
			listed = append(listed, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(inCode)
	for _, c := range inCode {
		if !slices.Contains(listed, c) {
			t.Errorf("fuzz target %q is not in testnet/fuzz/targets.txt: add it, or make fuzz never runs it", c)
		}
	}
	for _, l := range listed {
		if !slices.Contains(inCode, l) {
			t.Errorf("testnet/fuzz/targets.txt lists %q, which is not a fuzz target in the code", l)
		}
	}
	if len(inCode) == 0 {
		t.Fatal("found no fuzz target in the module: is the walk's root right?")
	}
}
