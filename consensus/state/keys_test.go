package state

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"strconv"
	"strings"
	"testing"
)

// TestEveryPrefixIsKnown: a follower stops at a snapshot holding a key
// UnknownKey does not know (consensus/follow.go), so a new record prefix
// missing from knownPrefixes would stop every follower at this release's
// own snapshots. Every prefix* constant of this package must be in it.
func TestEveryPrefixIsKnown(t *testing.T) {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", func(fi fs.FileInfo) bool {
		return !strings.HasSuffix(fi.Name(), "_test.go")
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, pkg := range pkgs {
		for _, f := range pkg.Files {
			ast.Inspect(f, func(n ast.Node) bool {
				vs, ok := n.(*ast.ValueSpec)
				if !ok {
					return true
				}
				for i, name := range vs.Names {
					if !strings.HasPrefix(name.Name, "prefix") || i >= len(vs.Values) {
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.CHAR {
						t.Errorf("%s is not a character constant", name.Name)
						continue
					}
					c, _, _, err := strconv.UnquoteChar(strings.Trim(lit.Value, "'"), '\'')
					if err != nil {
						t.Fatal(err)
					}
					found++
					probe := append([]byte{byte(c)}, 'x')
					if byte(c) == prefixSetting {
						probe = settingKey(SettingPolicy)
					}
					if what := UnknownKey(probe); what != "" {
						t.Errorf("%s (%q) is missing from knownPrefixes: %s", name.Name, c, what)
					}
				}
				return true
			})
		}
	}
	if found < 16 {
		t.Fatalf("found %d prefix constants, want the 16 or more of keys.go", found)
	}
	for _, k := range []string{KeyApplied, KeyGCFloor, "s" + SettingPolicy, "s" + SettingAuthTokenKeys} {
		if what := UnknownKey([]byte(k)); what != "" {
			t.Errorf("UnknownKey(%q) = %s, want it known", k, what)
		}
	}
	for _, k := range []string{"", "Z", "snot.a.setting"} {
		if UnknownKey([]byte(k)) == "" {
			t.Errorf("UnknownKey(%q) knows it", k)
		}
	}
}
