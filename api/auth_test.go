package api_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/api/auth"
	"github.com/meshreg/meshreg/api/auth/htpasswd"
	"github.com/meshreg/meshreg/api/auth/policy"
)

const testPolicy = `groups:
  devs: [alice, carol]
rules:
  - groups: [devs]
    repos: ["team/**", "public/**"]
    allow: [pull, push, delete]
  - users: [alice]
    repos: ["secret/**"]
    allow: [pull, push, delete]
  - users: [bob]
    repos: ["team/**"]
    allow: [pull]
  - users: [anonymous]
    repos: ["public/**"]
    allow: [pull]
  - users: [alice]
    allow: [admin]
`

func htpasswdLines(t *testing.T, users ...string) []byte {
	t.Helper()
	var b strings.Builder
	for _, u := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(u+"-pw"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(u + ":" + string(h) + "\n")
	}
	return []byte(b.String())
}

// as is r seen by a client that sends user's credentials.
func (r *registry) as(user, password string) *registry {
	c := *r
	c.hdr = []string{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))}
	return &c
}

func authRegistry(t *testing.T) (r *registry, usersFile string) {
	dir := t.TempDir()
	usersFile = filepath.Join(dir, "htpasswd")
	policyFile := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(usersFile, htpasswdLines(t, "alice", "bob", "carol"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(policyFile, []byte(testPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	users, err := htpasswd.Open(usersFile, func(err error) {
		if err != nil {
			t.Errorf("reload: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Open(policyFile, func(err error) {
		if err != nil {
			t.Errorf("reload: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	r = newRegistry(t, filepath.Join(dir, "data"), func(c *api.Config) {
		c.Auth = &auth.Guard{Authn: &auth.Basic{Users: users}, Authz: pol}
	})
	return r, usersFile
}

func expectChallenge(t *testing.T, resp *http.Response) {
	t.Helper()
	if got := resp.Header.Get("WWW-Authenticate"); got != `Basic realm="meshreg"` {
		t.Fatalf("%s %s: WWW-Authenticate %q, want the Basic challenge", resp.Request.Method, resp.Request.URL, got)
	}
}

func catalog(t *testing.T, r *registry) []string {
	t.Helper()
	resp, body := r.do("GET", "/v2/_catalog", nil)
	expect(t, resp, body, 200, "")
	var c struct{ Repositories []string }
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatal(err)
	}
	return c.Repositories
}

func TestAccessControl(t *testing.T) {
	t.Parallel()
	r, usersFile := authRegistry(t)
	alice, bob, carol := r.as("alice", "alice-pw"), r.as("bob", "bob-pw"), r.as("carol", "carol-pw")

	// docker login: the base route challenges anonymous clients and wrong
	// passwords, and answers 200 to a valid user.
	resp, body := r.do("GET", "/v2/", nil)
	expect(t, resp, body, 401, "UNAUTHORIZED")
	expectChallenge(t, resp)
	resp, body = r.as("alice", "wrong").do("GET", "/v2/", nil)
	expect(t, resp, body, 401, "UNAUTHORIZED")
	expectChallenge(t, resp)
	resp, body = alice.do("GET", "/v2/", nil)
	expect(t, resp, body, 200, "")

	// alice pushes to team/, public/ and secret/.
	for _, repo := range []string{"team/app", "public/base", "secret/x"} {
		resp, body = alice.pushManifest(repo, "v1", "application/vnd.oci.image.manifest.v1+json", alice.image(repo, repo))
		expect(t, resp, body, 201, "")
	}

	// bob pulls team/ but may not push or delete there.
	resp, body = bob.do("GET", "/v2/team/app/manifests/v1", nil, "Accept", "application/vnd.oci.image.manifest.v1+json")
	expect(t, resp, body, 200, "")
	resp, body = bob.do("POST", "/v2/team/app/blobs/uploads/", nil)
	expect(t, resp, body, 403, "DENIED")
	if !strings.Contains(string(body), "push") || !strings.Contains(string(body), "bob") {
		t.Errorf("bob's push denial %s does not name the user and the missing right", body)
	}
	resp, body = bob.do("DELETE", "/v2/team/app/manifests/v1", nil)
	expect(t, resp, body, 403, "DENIED")
	resp, body = bob.do("GET", "/v2/secret/x/tags/list", nil)
	expect(t, resp, body, 403, "DENIED")

	// Anonymous clients pull public/ only; elsewhere they get the challenge.
	resp, body = r.do("GET", "/v2/public/base/manifests/v1", nil, "Accept", "application/vnd.oci.image.manifest.v1+json")
	expect(t, resp, body, 200, "")
	resp, body = r.do("GET", "/v2/team/app/manifests/v1", nil)
	expect(t, resp, body, 401, "UNAUTHORIZED")
	expectChallenge(t, resp)
	resp, body = r.do("POST", "/v2/public/base/blobs/uploads/", nil)
	expect(t, resp, body, 401, "UNAUTHORIZED")

	// The catalog lists only what the client may pull.
	if got, want := catalog(t, alice), []string{"public/base", "secret/x", "team/app"}; !slices.Equal(got, want) {
		t.Errorf("alice's catalog %v, want %v", got, want)
	}
	if got, want := catalog(t, bob), []string{"public/base", "team/app"}; !slices.Equal(got, want) {
		t.Errorf("bob's catalog %v, want %v", got, want)
	}
	if got, want := catalog(t, r), []string{"public/base"}; !slices.Equal(got, want) {
		t.Errorf("the anonymous catalog %v, want %v", got, want)
	}
	resp, body = bob.do("GET", "/v2/_catalog?n=1", nil)
	expect(t, resp, body, 200, "")
	if !strings.Contains(string(body), "public/base") || !strings.Contains(resp.Header.Get("Link"), "last=public%2Fbase") {
		t.Errorf("bob's first catalog page: %s, Link %q", body, resp.Header.Get("Link"))
	}
	resp, body = bob.do("GET", "/v2/_catalog?n=1&last=public/base", nil)
	expect(t, resp, body, 200, "")
	if !strings.Contains(string(body), "team/app") || resp.Header.Get("Link") != "" {
		t.Errorf("bob's second catalog page: %s, Link %q (secret/x must be skipped, and no next page)", body, resp.Header.Get("Link"))
	}

	// Mounting from a repository the client may not pull is a plain
	// upload session; alice, who may pull it, mounts.
	d := alice.pushBlob("secret/x", []byte("secret layer"))
	resp, body = carol.do("POST", "/v2/team/app/blobs/uploads/?mount="+d.String()+"&from=secret/x", nil)
	expect(t, resp, body, 202, "")
	resp, body = carol.do("HEAD", "/v2/team/app/blobs/"+d.String(), nil)
	expect(t, resp, body, 404, "")
	resp, body = alice.do("POST", "/v2/team/app/blobs/uploads/?mount="+d.String()+"&from=secret/x", nil)
	expect(t, resp, body, 201, "")

	// Admin endpoints need the admin right.
	resp, body = r.do("POST", "/_meshreg/v1/join-tokens", nil)
	expect(t, resp, body, 401, "UNAUTHORIZED")
	expectChallenge(t, resp)
	resp, body = bob.do("POST", "/_meshreg/v1/join-tokens", nil)
	expect(t, resp, body, 403, "DENIED")
	if !strings.Contains(string(body), "admin") {
		t.Errorf("bob's admin denial %s does not name the admin right", body)
	}
	resp, body = bob.do("GET", "/_meshreg/v1/backup?blobs=1", nil)
	expect(t, resp, body, 403, "DENIED")
	resp, body = alice.do("POST", "/_meshreg/v1/join-tokens", nil)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("alice creating a join token: %d %s", resp.StatusCode, body)
	}

	// A user removed from the htpasswd file is refused within 5 s.
	if err := os.WriteFile(usersFile, htpasswdLines(t, "alice"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, body = bob.do("GET", "/v2/team/app/tags/list", nil)
		if resp.StatusCode == 401 {
			expect(t, resp, body, 401, "UNAUTHORIZED")
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob still served (%d) 5 s after his removal", resp.StatusCode)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
