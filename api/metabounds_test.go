package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func tagParams(n int) string {
	q := url.Values{}
	for i := range n {
		q.Add("tag", fmt.Sprintf("t%05d", i))
	}
	return q.Encode()
}

// TestWriteBounds: the metadata store's bounds reach the client as OCI
// errors that name the limit, and a query Go cannot read whole is refused
// rather than half-applied.
func TestWriteBounds(t *testing.T) {
	t.Parallel()
	r := newRegistry(t, t.TempDir(), nil)
	m := r.image("app", "bounds")
	d := digest.FromBytes(m).String()
	put := func(query string) (*http.Response, []byte) {
		return r.do("PUT", "/v2/app/manifests/"+d+"?"+query, m, "Content-Type", ocispec.MediaTypeImageManifest)
	}

	resp, body := put(tagParams(101))
	expect(t, resp, body, http.StatusBadRequest, "MANIFEST_INVALID")
	if !strings.Contains(string(body), "at most 100") {
		t.Errorf("101 tags: message does not name the limit: %s", body)
	}
	resp, body = put(tagParams(10001))
	expect(t, resp, body, http.StatusBadRequest, "UNSUPPORTED")
	resp, body = r.do("GET", "/v2/app/tags/list?n=%zz", nil)
	expect(t, resp, body, http.StatusBadRequest, "UNSUPPORTED")
	resp, body = r.do("GET", "/v2/app/manifests/"+d, nil)
	expect(t, resp, body, http.StatusNotFound, "MANIFEST_UNKNOWN")

	resp, body = put(tagParams(100)) // the limit itself is fine
	expect(t, resp, body, http.StatusCreated, "")
	resp, body = r.do("GET", "/v2/app/tags/list", nil)
	var list struct{ Tags []string }
	if err := json.Unmarshal(body, &list); err != nil || resp.StatusCode != 200 || len(list.Tags) != 100 {
		t.Errorf("tags after a push with 100: %d %s", resp.StatusCode, body)
	}
}

// TestReferrersPages: n and last page the referrers listing, with a Link
// header to the next page; bad values are refused.
func TestReferrersPages(t *testing.T) {
	t.Parallel()
	r := newRegistry(t, t.TempDir(), nil)
	subject := r.image("app", "subject")
	sd := digest.FromBytes(subject)
	empty := r.pushBlob("app", []byte("{}"))
	var want []string
	for i := range 5 {
		ref := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"artifactType":"application/vnd.example.%d","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":%q,"size":2},"layers":[],"subject":{"mediaType":%q,"digest":%q,"size":%d},"annotations":{"i":"%d"}}`,
			ocispec.MediaTypeImageManifest, i%2, empty, ocispec.MediaTypeImageManifest, sd, len(subject), i))
		resp, body := r.pushManifest("app", digest.FromBytes(ref).String(), ocispec.MediaTypeImageManifest, ref)
		expect(t, resp, body, http.StatusCreated, "")
		want = append(want, digest.FromBytes(ref).String())
	}
	var got []string
	next := "/v2/app/referrers/" + sd.String() + "?n=2"
	for pages := 0; next != ""; pages++ {
		if pages > 5 {
			t.Fatal("the Link headers do not end")
		}
		resp, body := r.do("GET", next, nil)
		expect(t, resp, body, http.StatusOK, "")
		var idx ocispec.Index
		if err := json.Unmarshal(body, &idx); err != nil || len(idx.Manifests) > 2 {
			t.Fatalf("GET %s: %d descriptors, %v", next, len(idx.Manifests), err)
		}
		for _, m := range idx.Manifests {
			got = append(got, m.Digest.String())
		}
		next, _, _ = strings.Cut(strings.TrimPrefix(resp.Header.Get("Link"), "<"), ">")
	}
	if len(got) != len(want) {
		t.Errorf("pages listed %d referrers, want %d", len(got), len(want))
	}
	resp, body := r.do("GET", "/v2/app/referrers/"+sd.String()+"?n=1&artifactType=application/vnd.example.1", nil)
	expect(t, resp, body, http.StatusOK, "")
	if link := resp.Header.Get("Link"); !strings.Contains(link, "artifactType=application%2Fvnd.example.1") {
		t.Errorf("filtered page: Link %q does not keep the filter", link)
	}
	resp, body = r.do("GET", "/v2/app/referrers/"+sd.String()+"?n=x", nil)
	expect(t, resp, body, http.StatusBadRequest, "UNSUPPORTED")
	resp, body = r.do("GET", "/v2/app/referrers/"+sd.String()+"?last=nope", nil)
	expect(t, resp, body, http.StatusBadRequest, "DIGEST_INVALID")
}
