package notify

import (
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(`
endpoints:
  - name: ci
    url: https://hooks.example.com/registry
    headers: {Authorization: [Bearer abc]}
    secret: s3cret
    timeout: 2s
    threshold: 4
    backoff: 100ms
    maxbackoff: 10s
    events: [push, pull]
    repositories: ["team/**"]
    ignoredmediatypes: [application/octet-stream]
    ignore: {actions: [mount]}
    maxpending: 50
  - name: off
    url: http://127.0.0.1:1/
    disabled: true
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Endpoints) != 1 {
		t.Fatalf("%d endpoints, want 1 (the disabled one left out)", len(c.Endpoints))
	}
	e := c.Endpoints[0]
	if e.Timeout != 2*time.Second || e.Threshold != 4 || e.Backoff != 100*time.Millisecond || e.MaxBackoff != 10*time.Second ||
		e.MaxPending != 50 || e.Secret != "s3cret" || e.Headers.Get("Authorization") != "Bearer abc" {
		t.Fatalf("parsed %+v", e)
	}
	tests := []struct {
		name string
		ev   Event
		want bool
	}{
		{"manifest push in scope", Event{Action: ActionPush, Target: Target{Repository: "team/app", MediaType: "application/vnd.oci.image.manifest.v1+json"}}, true},
		{"pull in scope", Event{Action: ActionPull, Target: Target{Repository: "team/app"}}, true},
		{"other repository", Event{Action: ActionPush, Target: Target{Repository: "other/app"}}, false},
		{"delete not asked for", Event{Action: ActionDelete, Target: Target{Repository: "team/app"}}, false},
		{"blob push ignored by media type", Event{Action: ActionPush, Target: Target{Repository: "team/app", MediaType: BlobMediaType}}, false},
		{"mount ignored by action", Event{Action: ActionMount, Target: Target{Repository: "team/app"}}, false},
	}
	for _, tt := range tests {
		if got := e.wants(tt.ev); got != tt.want {
			t.Errorf("%s: wants = %v, want %v", tt.name, got, tt.want)
		}
	}
	d, err := Parse([]byte("endpoints: [{name: a, url: 'http://127.0.0.1:9/'}]"))
	if err != nil {
		t.Fatal(err)
	}
	if a := d.Endpoints[0]; !a.wants(Event{Action: ActionPush, Target: Target{Repository: "x"}}) || !a.wants(Event{Action: ActionDelete}) ||
		a.wants(Event{Action: ActionPull}) || a.MaxPending != DefaultMaxPending {
		t.Errorf("defaults: push and delete of every repository, no pulls, maxpending %d; got %+v", DefaultMaxPending, a)
	}
	if c, err := Parse(nil); err != nil || len(c.Endpoints) != 0 {
		t.Errorf("an empty file: %v, %v", c, err)
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, file, want string }{
		{"unknown key", "endpoints: [{name: a, url: 'http://h/', secrett: x}]", "secrett"},
		{"bad name", "endpoints: [{name: '../x', url: 'http://h/'}]", "name"},
		{"duplicate name", "endpoints: [{name: a, url: 'http://h/'}, {name: a, url: 'http://h/'}]", "twice"},
		{"no url", "endpoints: [{name: a}]", "url"},
		{"ftp url", "endpoints: [{name: a, url: 'ftp://h/'}]", "url"},
		{"bad event", "endpoints: [{name: a, url: 'http://h/', events: [pushed]}]", "pushed"},
		{"bad glob", "endpoints: [{name: a, url: 'http://h/', repositories: ['a/**b']}]", "**"},
		{"backoff range", "endpoints: [{name: a, url: 'http://h/', backoff: 2h}]", "backoff"},
		{"maxbackoff below backoff", "endpoints: [{name: a, url: 'http://h/', backoff: 2s, maxbackoff: 1s}]", "maxbackoff"},
		{"maxpending range", "endpoints: [{name: a, url: 'http://h/', maxpending: 0}]", "maxpending"},
		{"header line break", "endpoints: [{name: a, url: 'http://h/', headers: {X: [\"a\\r\\nb\"]}}]", "line break"},
		{"not yaml", "endpoints: [", "yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.file))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
	// A secret or a header's value is never in an error.
	for _, f := range []string{
		"endpoints: [{name: a, url: 'http://h/', secret: topsecret, timeout: 1y}]",
		"endpoints: [{name: a, url: 'http://h/', secret: [topsecret]}]",
		"endpoints: [{name: a, url: 'http://h/', threshold: topsecret}]",
		"endpoints: [{name: a, url: 'http://h/', headers: {Authorization: {Bearer: topsecret}}}]",
	} {
		_, err := Parse([]byte(f))
		if err == nil || strings.Contains(err.Error(), "topsecret") {
			t.Errorf("%s: err = %v", f, err)
		}
	}
	// One string is a header's one value.
	c, err := Parse([]byte("endpoints: [{name: a, url: 'http://h/', headers: {Authorization: Bearer xyz}}]"))
	if err != nil || c.Endpoints[0].Headers.Get("Authorization") != "Bearer xyz" {
		t.Fatalf("a header as a string: %v", err)
	}
}
