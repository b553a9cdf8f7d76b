package api

import (
	"errors"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/api/oci"
)

// Fuzz targets for the request parsers. `make fuzz` runs each for a while;
// `go test` runs their seeds (f.Add below and testdata/fuzz/<target>/).

const (
	seedSHA256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	seedSHA512 = "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
)

// FuzzRouteRoundTrip checks that a parsed route is exactly the path it came
// from: nothing is dropped or invented between the fixed parts.
func FuzzRouteRoundTrip(f *testing.F) {
	for _, p := range []string{
		"/v2/", "/v2", "/v2/_catalog", "/v2/app/manifests/v1",
		"/v2/a/b/c/d/manifests/" + seedSHA256, "/v2/team/app/blobs/" + seedSHA256,
		"/v2/team/app/blobs/uploads/", "/v2/team/app/blobs/uploads",
		"/v2/team/app/blobs/uploads/0123abcd", "/v2/team/app/tags/list",
		"/v2/team/app/referrers/" + seedSHA256, "/v2/x/blobs/manifests/latest",
		"/v2/manifests/manifests/latest", "/v2/app", "/v2/app/unknown/x", "/v3/app/manifests/v1",
		"/healthz", "/v2//manifests/", "/v2/blobs/uploads/blobs/uploads/", "/v2/a/../b/manifests/x",
	} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, path string) {
		rt := parseRoute(path)
		_ = rt.kind.String()
		var rebuilt string
		switch rt.kind {
		case routeUnknown:
			if rt.name != "" || rt.ref != "" {
				t.Fatalf("parseRoute(%q): unknown route with name %q ref %q", path, rt.name, rt.ref)
			}
			return
		case routeBase:
			if path != "/v2/" && path != "/v2" {
				t.Fatalf("parseRoute(%q) = base", path)
			}
			return
		case routeCatalog:
			rebuilt = "/v2/_catalog"
		case routeManifest:
			rebuilt = "/v2/" + rt.name + "/manifests/" + rt.ref
		case routeBlob:
			rebuilt = "/v2/" + rt.name + "/blobs/" + rt.ref
		case routeUploads:
			rebuilt = "/v2/" + rt.name + "/blobs/uploads"
			if strings.HasSuffix(path, "/") {
				rebuilt += "/"
			}
		case routeUpload:
			rebuilt = "/v2/" + rt.name + "/blobs/uploads/" + rt.ref
		case routeTags:
			rebuilt = "/v2/" + rt.name + "/tags/list"
		case routeReferrers:
			rebuilt = "/v2/" + rt.name + "/referrers/" + rt.ref
		default:
			t.Fatalf("parseRoute(%q): kind %d out of range", path, rt.kind)
		}
		if rebuilt != path {
			t.Fatalf("parseRoute(%q) = %+v, which names %q", path, rt, rebuilt)
		}
		if strings.Contains(rt.ref, "/") {
			t.Fatalf("parseRoute(%q): reference %q contains a slash", path, rt.ref)
		}
	})
}

// FuzzContentRangeRoundTrip checks that an accepted Content-Range is a
// non-empty, non-negative range that reads back the same.
func FuzzContentRangeRoundTrip(f *testing.F) {
	for _, s := range []string{"0-999", "1000-1999", "bytes 0-99/100", "bytes=5-5", "0-0", " 7-9 ", "-1-5", "5-4",
		"9223372036854775807-9223372036854775807", "0-9223372036854775808", "bytes */100", "", "-", "1-2-3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		start, end, err := parseContentRange(s)
		if err != nil {
			if len(err.Error()) > 2000 { // truncate keeps 300 bytes, which %q may write four times as long
				t.Fatalf("parseContentRange(%q): error of %d bytes: %v", s, len(err.Error()), err)
			}
			return
		}
		if start < 0 || end < start {
			t.Fatalf("parseContentRange(%q) = %d-%d, accepted", s, start, end)
		}
		s2 := strconv.FormatInt(start, 10) + "-" + strconv.FormatInt(end, 10)
		if a, b, err := parseContentRange(s2); err != nil || a != start || b != end {
			t.Fatalf("parseContentRange(%q) = %d-%d, but %q reads back as %d-%d, %v", s, start, end, s2, a, b, err)
		}
		if r := uploadRange(end + 1); end < 1<<62 && r != "0-"+strconv.FormatInt(end, 10) {
			t.Fatalf("uploadRange(%d) = %q", end+1, r)
		}
	})
}

// FuzzListPage checks that the n and last of a listing are bounded
// whatever the query says, and that a bad n is a clear OCI error.
func FuzzListPage(f *testing.F) {
	for _, q := range []string{"", "n=10", "n=0", "n=-1", "n=abc", "last=v1&n=2", "n=99999999999999999999",
		"n=10000", "n=10001", "last=" + strings.Repeat("a", 300), "n=1&n=2", "last=%zz", "n=+5", "n=0x10"} {
		f.Add(q)
	}
	h := &Handler{cfg: DefaultConfig()}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return // the handler sees what r.URL.Query() keeps; ParseQuery's error is ignored there
		}
		last, n, err := h.listPage(q)
		if err != nil {
			var e *oci.Error
			if !errors.As(err, &e) || e.HTTPStatus() != 400 || e.Message == "" {
				t.Fatalf("listPage(%q): error %v is not a 400 OCI error with a message", raw, err)
			}
			if len(e.Message) > 2000 {
				t.Fatalf("listPage(%q): message of %d bytes", raw, len(e.Message))
			}
			return
		}
		if n < 0 || n > h.cfg.MaxListPage {
			t.Fatalf("listPage(%q): n = %d outside [0, %d]", raw, n, h.cfg.MaxListPage)
		}
		if last != q.Get("last") {
			t.Fatalf("listPage(%q): last = %q, want %q", raw, last, q.Get("last"))
		}
	})
}

// FuzzNames checks the repository name, reference and digest validators:
// whatever they accept is safe to use as a key and a path element, and
// their errors stay short whatever the input.
func FuzzNames(f *testing.F) {
	for _, s := range []string{"app", "team/app", "a/b/c/d", "my-app", "my__app", "my.app", "x---y",
		"../etc", "a/../b", "a/./b", "..", "a//b", "App", "a%2fb", "latest", "v1.0.0", "_x", ".x",
		seedSHA256, seedSHA512, "sha256:abc", "md5:d41d8cd98f00b204e9800998ecf8427e", "sha256:" + strings.Repeat("A", 64),
		"sha384:" + strings.Repeat("a", 96), strings.Repeat("a/", 130) + "a", "\xff\xfe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if err := validateName(s); err == nil {
			if len(s) == 0 || len(s) > maxNameLength {
				t.Fatalf("validateName accepted %q of %d bytes", s, len(s))
			}
			for _, el := range strings.Split(s, "/") {
				if el == "" || el == "." || el == ".." {
					t.Fatalf("validateName accepted %q with element %q", s, el)
				}
			}
			if strings.ContainsAny(s, "\x00%\\ :@ABCDEFGHIJKLMNOPQRSTUVWXYZ") || !utf8.ValidString(s) {
				t.Fatalf("validateName accepted %q", s)
			}
		} else if !errors.Is(err, oci.NameInvalid) || len(err.Error()) > 2000 {
			t.Fatalf("validateName(%q) = %v: want a short NAME_INVALID", s, err)
		}
		if err := validateReference(s); err == nil {
			if isDigestReference(s) {
				if digest.Digest(s).Validate() != nil {
					t.Fatalf("validateReference accepted the bad digest %q", s)
				}
			} else if len(s) > 128 || strings.ContainsAny(s, "/\x00:") {
				t.Fatalf("validateReference accepted the tag %q", s)
			}
		} else if len(err.Error()) > 2000 {
			t.Fatalf("validateReference(%q): error of %d bytes", s, len(err.Error()))
		}
		if d, err := parseDigest(s); err == nil {
			if d.Validate() != nil || string(d) != s {
				t.Fatalf("parseDigest(%q) = %q", s, d)
			}
			if a := d.Algorithm(); a != digest.SHA256 && a != digest.SHA512 {
				t.Fatalf("parseDigest(%q): algorithm %s accepted", s, a)
			}
		} else if !errors.Is(err, oci.DigestInvalid) || len(err.Error()) > 2000 {
			t.Fatalf("parseDigest(%q) = %v: want a short DIGEST_INVALID", s, err)
		}
		if tr := truncate(s); len(tr) > 300+len("…") {
			t.Fatalf("truncate kept %d bytes", len(tr))
		}
	})
}
