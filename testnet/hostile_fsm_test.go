package testnet_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/testnet"
)

// What an attacker with no credentials sees when sending writes built to
// exceed what the replicated metadata store can apply: each is refused
// with a clear OCI error or applied in bounded steps, and every node of the
// cluster stays up and agrees.

type ociErrors struct {
	Errors []struct{ Code, Message string } `json:"errors"`
}

// hostileDo sends a request and returns status, headers and body.
func hostileDo(t *testing.T, method, u, contentType string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %.200s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		t.Fatalf("%s %.200s: reading the body: %v", method, u, err)
	}
	return resp.StatusCode, resp.Header, b
}

// wantOCIError checks the status and the code of an OCI error body, and
// that its message contains each of words.
func wantOCIError(t *testing.T, what string, status int, body []byte, wantStatus int, wantCode string, words ...string) {
	t.Helper()
	var e ociErrors
	if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 {
		t.Fatalf("%s: status %d, body %.300q: not one OCI error", what, status, body)
	}
	if status != wantStatus || e.Errors[0].Code != wantCode {
		t.Errorf("%s: %d %s (%s), want %d %s", what, status, e.Errors[0].Code, e.Errors[0].Message, wantStatus, wantCode)
	}
	for _, w := range words {
		if !strings.Contains(e.Errors[0].Message, w) {
			t.Errorf("%s: message %q does not mention %q", what, e.Errors[0].Message, w)
		}
	}
}

// hostileImage pushes an empty config blob to repo through base and
// returns an image manifest naming it, with the extra JSON fields given
// (a subject, annotations) and a distinct content.
func hostileImage(t *testing.T, base, repo, extra string) []byte {
	t.Helper()
	untilCommitted(t, "pushing a config blob", func() error {
		_, err := testnet.NewClient(base).PushBytes(context.Background(), repo, []byte("{}"))
		return err
	})
	if extra != "" {
		extra = "," + extra
	}
	return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":%q,"size":2},"layers":[]%s}`,
		ocispec.MediaTypeImageManifest, digest.FromString("{}"), extra))
}

// untilCommitted runs write until it does not fail with 503: on a loaded
// machine an election may interrupt writes for a moment, and the client is
// told to retry.
func untilCommitted(t *testing.T, what string, write func() error) {
	t.Helper()
	var err error
	testnet.Eventually(60*time.Second, func() bool {
		err = write()
		return testnet.StatusOf(err) != http.StatusServiceUnavailable
	})
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func tagQuery(prefix string, n, width int) string {
	q := make([]string, n)
	for i := range q {
		tag := fmt.Sprintf("%s%06d", prefix, i)
		q[i] = "tag=" + tag + strings.Repeat("x", max(0, width-len(tag)))
	}
	return strings.Join(q, "&")
}

// checkClusterHealthy asserts that every node is up and ready, takes a
// normal push, and that they all agree on repos.
func checkClusterHealthy(t *testing.T, nodes []*testnet.InProcessNode, step string, repos ...string) {
	t.Helper()
	plain := make([]*testnet.Node, len(nodes))
	for i, n := range nodes {
		plain[i] = n.Node
		var status int
		var body []byte
		ready := testnet.Eventually(60*time.Second, func() bool {
			status, _, body = hostileDo(t, http.MethodGet, n.URL()+"/readyz", "", nil)
			return status == http.StatusOK
		})
		if !ready {
			t.Fatalf("after %s: node %d is not ready: %d %s", step, i, status, body)
		}
		m := hostileImage(t, n.URL(), "healthy", fmt.Sprintf(`"annotations":{"step":%q,"node":"%d"}`, step, i))
		untilCommitted(t, fmt.Sprintf("after %s: a normal push through node %d", step, i), func() error {
			_, err := testnet.NewClient(n.URL()).PutManifest(context.Background(), "healthy", fmt.Sprintf("n%d", i), ocispec.MediaTypeImageManifest, m)
			return err
		})
	}
	testnet.AssertAgree(t, plain, 60*time.Second, append([]string{"healthy"}, repos...)...)
}

func TestHostileFSM(t *testing.T) {
	nodes := testnet.StartInProcessCluster(t, 3, nil)
	base := nodes[1].URL() // a follower or the leader: writes are forwarded

	t.Run("10000 tags in one PUT", func(t *testing.T) {
		m := hostileImage(t, base, "hostile", `"annotations":{"case":"10000"}`)
		u := base + "/v2/hostile/manifests/" + digest.FromBytes(m).String() + "?" + tagQuery("t", 10000, 60)
		status, _, body := hostileDo(t, http.MethodPut, u, ocispec.MediaTypeImageManifest, m)
		wantOCIError(t, "PUT with 10,000 tags", status, body, http.StatusBadRequest, "MANIFEST_INVALID", "10000 tags", "at most 100")
		checkClusterHealthy(t, nodes, "10,000 tags")
	})

	t.Run("20000 tag parameters", func(t *testing.T) {
		m := hostileImage(t, base, "hostile", `"annotations":{"case":"20000"}`)
		u := base + "/v2/hostile/manifests/" + digest.FromBytes(m).String() + "?" + tagQuery("q", 20000, 1)
		status, _, body := hostileDo(t, http.MethodPut, u, ocispec.MediaTypeImageManifest, m)
		wantOCIError(t, "PUT with 20,000 ?tag=", status, body, http.StatusBadRequest, "UNSUPPORTED", "query", "10000")
		if status, _, _ := hostileDo(t, http.MethodGet, base+"/v2/hostile/manifests/"+digest.FromBytes(m).String(), "", nil); status != http.StatusNotFound {
			t.Errorf("the refused manifest is served: %d", status)
		}
	})

	t.Run("15000 tags then DELETE", func(t *testing.T) {
		m := hostileImage(t, base, "manytags", "")
		d := digest.FromBytes(m)
		const total, perPUT = 15000, 100
		for i := 0; i < total/perPUT; i++ {
			q := url.Values{}
			for j := range perPUT {
				q.Add("tag", fmt.Sprintf("tag-%06d-%s", i*perPUT+j, strings.Repeat("x", 40)))
			}
			n := nodes[i%len(nodes)]
			var status int
			var body []byte
			testnet.Eventually(60*time.Second, func() bool {
				status, _, body = hostileDo(t, http.MethodPut, n.URL()+"/v2/manytags/manifests/"+d.String()+"?"+q.Encode(), ocispec.MediaTypeImageManifest, m)
				return status != http.StatusServiceUnavailable
			})
			if status != http.StatusCreated {
				t.Fatalf("PUT %d of %d tags: %d %s", i, perPUT, status, body)
			}
		}
		tags := 0
		for next := "/v2/manytags/tags/list"; next != ""; {
			status, hdr, body := hostileDo(t, http.MethodGet, nodes[2].URL()+next, "", nil)
			var list struct{ Tags []string }
			if err := json.Unmarshal(body, &list); status != http.StatusOK || err != nil {
				t.Fatalf("GET %s: %d (%v)", next, status, err)
			}
			tags += len(list.Tags)
			next, _, _ = strings.Cut(strings.TrimPrefix(hdr.Get("Link"), "<"), ">")
		}
		if tags != total {
			t.Fatalf("the tags list has %d tags, want %d", tags, total)
		}
		// The client sees 202, or 503 (an election on a loaded machine:
		// "retry shortly"), then 202 or, if the first one was applied
		// after all, 404.
		start := time.Now()
		var status int
		var body []byte
		retried := false
		testnet.Eventually(60*time.Second, func() bool {
			status, _, body = hostileDo(t, http.MethodDelete, nodes[2].URL()+"/v2/manytags/manifests/"+d.String(), "", nil)
			if status == http.StatusServiceUnavailable {
				t.Logf("DELETE: %d %s; retrying", status, body)
				retried = true
				return false
			}
			return true
		})
		if status != http.StatusAccepted && !(retried && status == http.StatusNotFound) {
			t.Fatalf("DELETE of a manifest with %d tags: %d %s", total, status, body)
		}
		t.Logf("DELETE of a manifest with %d tags took %s", total, time.Since(start))
		for i, n := range nodes {
			ok := testnet.Eventually(30*time.Second, func() bool {
				status, _, _ := hostileDo(t, http.MethodGet, n.URL()+"/v2/manytags/manifests/tag-000000-"+strings.Repeat("x", 40), "", nil)
				return status == http.StatusNotFound
			})
			if !ok {
				t.Errorf("node %d still serves a tag of the deleted manifest", i)
			}
		}
		checkClusterHealthy(t, nodes, "15,000 tags and a delete", "manytags")
	})

	t.Run("big referrers", func(t *testing.T) {
		subject := hostileImage(t, base, "refs", `"annotations":{"role":"subject"}`)
		untilCommitted(t, "pushing the subject", func() error {
			_, err := testnet.NewClient(base).PutManifest(context.Background(), "refs", "v1", ocispec.MediaTypeImageManifest, subject)
			return err
		})
		sd := digest.FromBytes(subject)
		const referrers = 8
		big := strings.Repeat("a", 1<<20) // 1 MiB of annotations per referrer
		for i := range referrers {
			extra := fmt.Sprintf(`"subject":{"mediaType":%q,"digest":%q,"size":%d},"annotations":{"i":"%d","blob":%q}`,
				ocispec.MediaTypeImageManifest, sd, len(subject), i, big)
			m := hostileImage(t, base, "refs", extra)
			untilCommitted(t, fmt.Sprintf("referrer %d", i), func() error {
				_, err := testnet.NewClient(nodes[i%3].URL()).PutManifest(context.Background(), "refs", digest.FromBytes(m).String(), ocispec.MediaTypeImageManifest, m)
				return err
			})
		}
		// list follows the pages of node i's listing and returns what they
		// hold.
		list := func(i int) []ocispec.Descriptor {
			var seen []ocispec.Descriptor
			next := "/v2/refs/referrers/" + sd.String() + "?n=3"
			for pages := 0; next != ""; pages++ {
				if pages > referrers {
					t.Fatalf("node %d: more pages than referrers", i)
				}
				status, hdr, body := hostileDo(t, http.MethodGet, nodes[i].URL()+next, "", nil)
				if status != http.StatusOK {
					t.Fatalf("node %d: GET %s: %d %.300s", i, next, status, body)
				}
				if len(body) > 64<<10 {
					t.Fatalf("node %d: a referrers page of 3 is %d bytes: the annotations are copied into the index", i, len(body))
				}
				var idx ocispec.Index
				if err := json.Unmarshal(body, &idx); err != nil {
					t.Fatal(err)
				}
				if len(idx.Manifests) > 3 {
					t.Fatalf("node %d: page of %d descriptors, asked for 3", i, len(idx.Manifests))
				}
				if pages == 0 && i == 0 {
					t.Logf("a referrers page of %d (of %d referrers with 1 MiB of annotations each) is %d bytes", len(idx.Manifests), referrers, len(body))
				}
				seen = append(seen, idx.Manifests...)
				next = ""
				if link := hdr.Get("Link"); link != "" {
					start, end := strings.Index(link, "<"), strings.Index(link, ">")
					if start < 0 || end < start || !strings.Contains(link, `rel="next"`) {
						t.Fatalf("node %d: bad Link header %q", i, link)
					}
					next = link[start+1 : end]
				}
			}
			return seen
		}
		for i := range nodes {
			var seen []ocispec.Descriptor
			// A node lists what it has applied: wait for replication.
			testnet.Eventually(30*time.Second, func() bool { seen = list(i); return len(seen) == referrers })
			if len(seen) != referrers {
				t.Errorf("node %d: the pages listed %d referrers, want %d", i, len(seen), referrers)
			}
		}
		checkClusterHealthy(t, nodes, "big referrers", "refs")
	})
}
