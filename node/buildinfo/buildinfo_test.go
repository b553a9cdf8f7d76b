package buildinfo

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestResolve(t *testing.T) {
	t.Parallel()
	vcs := &debug.BuildInfo{
		Main: debug.Module{Path: "github.com/meshreg/meshreg", Version: "v0.0.0-20261130074210-3ff7f87abcde+dirty"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "3ff7f87abcdef0123456789abcdef0123456789a"},
			{Key: "vcs.time", Value: "2026-11-30T07:42:10Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	plain := &debug.BuildInfo{Main: debug.Module{Path: "github.com/meshreg/meshreg", Version: "(devel)"}}
	for _, tc := range []struct {
		name                 string
		bi                   *debug.BuildInfo
		xv, xc, xd           string
		version, commit, day string
		modified             bool
	}{
		{name: "nothing recorded", bi: nil, version: "dev", commit: Unknown, day: Unknown},
		{name: "devel without vcs", bi: plain, version: "dev", commit: Unknown, day: Unknown},
		{name: "toolchain vcs stamps", bi: vcs, version: "v0.0.0-20261130074210-3ff7f87abcde+dirty",
			commit: "3ff7f87abcdef0123456789abcdef0123456789a", day: "2026-11-30T07:42:10Z", modified: true},
		{name: "-X wins", bi: vcs, xv: "v1.2.0", xc: "abc123", xd: "2026-12-01T00:00:00Z",
			version: "v1.2.0", commit: "abc123", day: "2026-12-01T00:00:00Z", modified: true},
		{name: "-X dirty describe", bi: plain, xv: "v1.2.0-3-gabc123-dirty", version: "v1.2.0-3-gabc123-dirty",
			commit: Unknown, day: Unknown, modified: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := resolve(tc.bi, tc.xv, tc.xc, tc.xd)
			if got.Version != tc.version || got.Commit != tc.commit || got.Date != tc.day || got.Modified != tc.modified {
				t.Errorf("resolve = %+v; want version %q commit %q date %q modified %v", got, tc.version, tc.commit, tc.day, tc.modified)
			}
			if got.GoVersion != runtime.Version() || got.Platform != runtime.GOOS+"/"+runtime.GOARCH {
				t.Errorf("go version/platform = %q %q", got.GoVersion, got.Platform)
			}
		})
	}
}

func TestString(t *testing.T) {
	t.Parallel()
	i := Info{Version: "v1.2.0", Commit: "3ff7f87abcdef0123456789", Date: "2026-12-01T00:00:00Z", Modified: true, GoVersion: "go1.26.8", Platform: "linux/amd64"}
	want := "meshreg v1.2.0 (commit 3ff7f87abcde, modified, built 2026-12-01T00:00:00Z, go1.26.8, linux/amd64)"
	if got := i.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestLdflags(t *testing.T) {
	t.Parallel()
	want := "-X github.com/meshreg/meshreg/node/buildinfo.version=v1 -X github.com/meshreg/meshreg/node/buildinfo.date=2026"
	if got := Ldflags("v1", "", "2026"); got != want {
		t.Errorf("Ldflags = %q, want %q", got, want)
	}
}
