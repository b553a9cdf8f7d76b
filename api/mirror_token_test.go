package api_test

import (
	"strings"
	"testing"

	"github.com/meshreg/meshreg/api"
)

// TestMirrorBearerScope: with the node as its own token service, a pull
// that is the mirror's is challenged for the scope of the mirror's
// repository (<NS>/<repo>), where the policy applies; a token for the
// client-visible name (team/app, which alice may pull) does not open
// docker.io's team/app, which the policy does not give her.
func TestMirrorBearerScope(t *testing.T) {
	t.Parallel()
	r, _, _ := tokenRegistry(t, testKeys(t), "", func(c *api.Config) {
		c.Mirror = api.Mirroring{Upstreams: []string{"docker.io"}}
	})
	resp, body := r.do("GET", "/v2/team/app/manifests/v1?ns=docker.io", nil)
	if got := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != 401 || !strings.HasSuffix(got, `scope="repository:docker.io/team/app:pull"`) {
		t.Fatalf("anonymous mirrored pull: %d, challenge %q (%s); want 401 naming repository:docker.io/team/app:pull", resp.StatusCode, got, body)
	}
	resp, body, tok := getToken(t, r.as("alice", "alice-pw"), "repository:team/app:pull", "repository:docker.io/team/app:pull")
	if resp.StatusCode != 200 {
		t.Fatalf("token: %d %s", resp.StatusCode, body)
	}
	resp, body = r.bearer(tok).do("GET", "/v2/team/app/manifests/v1?ns=docker.io", nil)
	if resp.StatusCode != 403 || !strings.Contains(string(body), "docker.io/team/app") {
		t.Fatalf("alice's token on the mirror's team/app: %d %s; want 403 DENIED naming docker.io/team/app", resp.StatusCode, body)
	}
}
