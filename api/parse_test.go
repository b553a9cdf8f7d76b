package api

import (
	"errors"
	"strings"
	"testing"

	"github.com/meshreg/meshreg/api/oci"
)

func TestParseRoute(t *testing.T) {
	t.Parallel()
	tests := []struct {
		path string
		want route
	}{
		{"/v2/", route{kind: routeBase}},
		{"/v2", route{kind: routeBase}},
		{"/v2/_catalog", route{kind: routeCatalog}},
		{"/v2/app/manifests/v1", route{kind: routeManifest, name: "app", ref: "v1"}},
		{"/v2/a/b/c/d/manifests/sha256:abc", route{kind: routeManifest, name: "a/b/c/d", ref: "sha256:abc"}},
		{"/v2/team/app/blobs/sha256:abc", route{kind: routeBlob, name: "team/app", ref: "sha256:abc"}},
		{"/v2/team/app/blobs/uploads/", route{kind: routeUploads, name: "team/app"}},
		{"/v2/team/app/blobs/uploads", route{kind: routeUploads, name: "team/app"}},
		{"/v2/team/app/blobs/uploads/0123abcd", route{kind: routeUpload, name: "team/app", ref: "0123abcd"}},
		{"/v2/team/app/tags/list", route{kind: routeTags, name: "team/app"}},
		{"/v2/team/app/referrers/sha256:abc", route{kind: routeReferrers, name: "team/app", ref: "sha256:abc"}},
		// A repository may itself be called "blobs" or "manifests".
		{"/v2/x/blobs/manifests/latest", route{kind: routeManifest, name: "x/blobs", ref: "latest"}},
		{"/v2/manifests/manifests/latest", route{kind: routeManifest, name: "manifests", ref: "latest"}},
		{"/v2/app", route{}},
		{"/v2/app/unknown/x", route{}},
		{"/v3/app/manifests/v1", route{}},
		{"/healthz", route{}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			if got := parseRoute(tt.path); got != tt.want {
				t.Errorf("parseRoute(%q) = %+v, want %+v", tt.path, got, tt.want)
			}
		})
	}
}

func TestValidateName(t *testing.T) {
	t.Parallel()
	valid := []string{"app", "team/app", "a/b/c/d", "my-app", "my__app", "my.app", "a0/b1", "x---y"}
	invalid := []string{"", "App", "../etc", "a/../b", "a/./b", ".", "..", "a//b", "/a", "a/", "a..b", "-a", "a-", "a b", "a%2fb", "a/.hidden", string(make([]byte, 300))}
	for _, n := range valid {
		if err := validateName(n); err != nil {
			t.Errorf("validateName(%q) = %v, want nil", n, err)
		}
	}
	for _, n := range invalid {
		if err := validateName(n); !errors.Is(err, oci.NameInvalid) {
			t.Errorf("validateName(%q) = %v, want NAME_INVALID", n, err)
		}
	}
}

func TestValidateReference(t *testing.T) {
	t.Parallel()
	const sha256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	ok := []string{"latest", "v1.0.0", "_x", "A-b_c.d", sha256}
	bad := []string{"", ".x", "-x", "a/b", "sha256:abc", "md5:d41d8cd98f00b204e9800998ecf8427e", string(make([]byte, 129))}
	for _, r := range ok {
		if err := validateReference(r); err != nil {
			t.Errorf("validateReference(%q) = %v, want nil", r, err)
		}
	}
	for _, r := range bad {
		if err := validateReference(r); err == nil {
			t.Errorf("validateReference(%q) = nil, want an error", r)
		}
	}
}

func TestParseContentRange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in         string
		start, end int64
		ok         bool
	}{
		{"0-99", 0, 99, true},
		{"100-100", 100, 100, true},
		{"bytes 0-99", 0, 99, true},
		{"bytes=5-9", 5, 9, true},
		{"0-99/100", 0, 99, true},
		{"", 0, 0, false},
		{"99-0", 0, 0, false},
		{"-5", 0, 0, false},
		{"a-b", 0, 0, false},
		{"5", 0, 0, false},
		{"-1-5", 0, 0, false},
		{"0-99999999999999999999", 0, 0, false},
	}
	for _, tt := range tests {
		start, end, err := parseContentRange(tt.in)
		if (err == nil) != tt.ok || start != tt.start || end != tt.end {
			t.Errorf("parseContentRange(%q) = %d, %d, %v; want %d, %d, ok=%v", tt.in, start, end, err, tt.start, tt.end, tt.ok)
		}
	}
}

func TestUploadRange(t *testing.T) {
	t.Parallel()
	for size, want := range map[int64]string{0: "0-0", 1: "0-0", 10: "0-9"} {
		if got := uploadRange(size); got != want {
			t.Errorf("uploadRange(%d) = %q, want %q", size, got, want)
		}
	}
}

func FuzzParseRoute(f *testing.F) {
	for _, s := range []string{"/v2/", "/v2/a/b/manifests/v1", "/v2/a/blobs/uploads/x", "/v2/a/tags/list", "/v2//blobs/uploads/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		rt := parseRoute(path)
		if rt.kind == routeUnknown && (rt.name != "" || rt.ref != "") {
			t.Fatalf("unknown route with parts: %+v", rt)
		}
		// A name that passes validation is safe to use as a key: no empty,
		// "." or ".." element.
		if validateName(rt.name) == nil {
			for _, bad := range []string{"..", "//", "/./"} {
				if strings.Contains("/"+rt.name+"/", bad) {
					t.Fatalf("valid name %q contains %q", rt.name, bad)
				}
			}
		}
	})
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"0-99", "bytes 1-2", "bytes=3-4/5", "", "9-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		start, end, err := parseContentRange(s)
		if err == nil && (start < 0 || end < start) {
			t.Fatalf("parseContentRange(%q) = %d, %d without error", s, start, end)
		}
	})
}

func FuzzValidateReference(f *testing.F) {
	for _, s := range []string{"latest", "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "sha512:00", "a:b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if validateReference(s) != nil {
			return
		}
		if isDigestReference(s) {
			if _, err := parseDigest(s); err != nil {
				t.Fatalf("valid digest reference %q does not parse: %v", s, err)
			}
		} else if !tagRE.MatchString(s) {
			t.Fatalf("valid tag %q does not match the tag grammar", s)
		}
	})
}
