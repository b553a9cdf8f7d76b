package notify

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/meshreg/meshreg/api/auth"
)

// The file (--notifications), CNCF Distribution's endpoint settings plus
// a secret, an events list, repository globs and a queue bound:
//
//	endpoints:
//	  - name: ci                        # [A-Za-z0-9._-], names the queue on disk
//	    url: https://hooks.example.com/registry
//	    headers: {Authorization: [Bearer abc]}
//	    secret: s3cret                  # X-Meshreg-Signature: sha256=HMAC-SHA256(secret, body)
//	    timeout: 5s                     # per POST
//	    threshold: 5                    # failures in a row before a WARN
//	    backoff: 1s                     # first retry delay, doubled per failure ...
//	    maxbackoff: 5m                  # ... up to this
//	    events: [push, delete]          # of push, delete, pull (mount counts as push)
//	    repositories: ["team/**"]       # globs; none: every repository
//	    ignoredmediatypes: [application/octet-stream]   # no blob events
//	    ignore: {mediatypes: [], actions: [pull]}       # Distribution's form
//	    maxpending: 10000               # queued events kept; past it the oldest go
//	    disabled: false

// Bounds of the file and of each setting.
const (
	MaxFileSize  = 1 << 20
	MaxEndpoints = 64
	// DefaultMaxPending is how many undelivered events an endpoint keeps
	// (on disk and in memory); MaxMaxPending bounds the setting.
	DefaultMaxPending = 10_000
	MaxMaxPending     = 1_000_000
	MaxTimeout        = 5 * time.Minute
	MaxBackoff        = time.Hour
	maxHeaders        = 64
	maxGlobs          = 1000
)

var (
	nameRE      = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	yamlValueRE = regexp.MustCompile("`[^`]*`")
)

// headerValues are a header's values: a list (Distribution's form) or
// one string.
type headerValues []string

func (h *headerValues) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*h = headerValues{n.Value}
		return nil
	}
	var vs []string
	if err := n.Decode(&vs); err != nil {
		return fmt.Errorf("line %d: a header's value: want a string or a list of strings", n.Line)
	}
	*h = vs
	return nil
}

// Config is a parsed, validated file. It is immutable.
type Config struct {
	Endpoints []*Endpoint
}

// Endpoint is one receiver and what it is sent.
type Endpoint struct {
	Name       string
	URL        string
	Headers    http.Header
	Secret     string // never logged nor shown
	Timeout    time.Duration
	Threshold  int
	Backoff    time.Duration
	MaxBackoff time.Duration
	MaxPending int

	events       map[string]bool // push, delete, pull
	repos        []auth.RepoGlob
	ignoredTypes map[string]bool
	ignoredActs  map[string]bool
}

type fileEndpoint struct {
	Name              string                  `yaml:"name"`
	URL               string                  `yaml:"url"`
	Headers           map[string]headerValues `yaml:"headers"`
	Secret            string                  `yaml:"secret"`
	Timeout           string                  `yaml:"timeout"`
	Threshold         *int                    `yaml:"threshold"`
	Backoff           string                  `yaml:"backoff"`
	MaxBackoff        string                  `yaml:"maxbackoff"`
	Events            []string                `yaml:"events"`
	Repositories      []string                `yaml:"repositories"`
	IgnoredMediaTypes []string                `yaml:"ignoredmediatypes"`
	Ignore            struct {
		MediaTypes []string `yaml:"mediatypes"`
		Actions    []string `yaml:"actions"`
	} `yaml:"ignore"`
	MaxPending *int `yaml:"maxpending"`
	Disabled   bool `yaml:"disabled"`
}

type file struct {
	Endpoints []fileEndpoint `yaml:"endpoints"`
}

// Parse reads and validates a file. Errors name the endpoint and never
// include a secret or a header's value.
func Parse(data []byte) (*Config, error) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("file is %d bytes, more than %d", len(data), MaxFileSize)
	}
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		// yaml quotes the value it could not use: it may be a secret or
		// a header's value, so only the line and the types are kept.
		return nil, errors.New(yamlValueRE.ReplaceAllString(err.Error(), "a value"))
	}
	if len(f.Endpoints) > MaxEndpoints {
		return nil, fmt.Errorf("%d endpoints, more than %d", len(f.Endpoints), MaxEndpoints)
	}
	c := &Config{}
	seen := map[string]bool{}
	for i, fe := range f.Endpoints {
		e, err := fe.endpoint()
		if err != nil {
			return nil, fmt.Errorf("endpoint %d (%s): %w", i+1, safeName(fe.Name), err)
		}
		if seen[e.Name] {
			return nil, fmt.Errorf("endpoint %d: the name %q is used twice", i+1, e.Name)
		}
		seen[e.Name] = true
		if !fe.Disabled {
			c.Endpoints = append(c.Endpoints, e)
		}
	}
	return c, nil
}

func safeName(s string) string {
	if nameRE.MatchString(s) {
		return s
	}
	return fmt.Sprintf("%.40q", s)
}

func (fe fileEndpoint) endpoint() (*Endpoint, error) {
	e := &Endpoint{Name: fe.Name, Secret: fe.Secret, Threshold: 3, Timeout: 5 * time.Second, Backoff: time.Second,
		MaxBackoff: 5 * time.Minute, MaxPending: DefaultMaxPending, Headers: http.Header{},
		events: map[string]bool{ActionPush: true, ActionDelete: true}, ignoredTypes: map[string]bool{}, ignoredActs: map[string]bool{}}
	if !nameRE.MatchString(fe.Name) {
		return nil, errors.New("name: want 1 to 64 of A-Z a-z 0-9 . _ - (it names the queue's directory)")
	}
	u, err := url.Parse(fe.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("url: want an http:// or https:// URL with a host")
	}
	e.URL = fe.URL
	if len(fe.Headers) > maxHeaders {
		return nil, fmt.Errorf("headers: more than %d", maxHeaders)
	}
	for k, vs := range fe.Headers {
		if !validHeaderName(k) {
			return nil, fmt.Errorf("headers: %.40q is not a header name", k)
		}
		for _, v := range vs {
			if strings.ContainsAny(v, "\r\n\x00") {
				return nil, fmt.Errorf("headers: the value of %s has a line break", k)
			}
			e.Headers.Add(k, v)
		}
	}
	durations := []struct {
		name    string
		val     string
		dst     *time.Duration
		min, mx time.Duration
	}{
		{"timeout", fe.Timeout, &e.Timeout, 10 * time.Millisecond, MaxTimeout},
		{"backoff", fe.Backoff, &e.Backoff, 10 * time.Millisecond, MaxBackoff},
		{"maxbackoff", fe.MaxBackoff, &e.MaxBackoff, 10 * time.Millisecond, MaxBackoff},
	}
	for _, d := range durations {
		if d.val == "" {
			continue
		}
		v, err := time.ParseDuration(d.val)
		if err != nil || v < d.min || v > d.mx {
			return nil, fmt.Errorf("%s %q: want a duration from %s to %s", d.name, d.val, d.min, d.mx)
		}
		*d.dst = v
	}
	if e.MaxBackoff < e.Backoff {
		return nil, fmt.Errorf("maxbackoff %s is less than backoff %s", e.MaxBackoff, e.Backoff)
	}
	if fe.Threshold != nil {
		if *fe.Threshold < 1 || *fe.Threshold > 1000 {
			return nil, fmt.Errorf("threshold %d: use 1 to 1000", *fe.Threshold)
		}
		e.Threshold = *fe.Threshold
	}
	if fe.MaxPending != nil {
		if *fe.MaxPending < 1 || *fe.MaxPending > MaxMaxPending {
			return nil, fmt.Errorf("maxpending %d: use 1 to %d", *fe.MaxPending, MaxMaxPending)
		}
		e.MaxPending = *fe.MaxPending
	}
	if fe.Events != nil {
		e.events = map[string]bool{}
		for _, a := range fe.Events {
			if a != ActionPush && a != ActionDelete && a != ActionPull {
				return nil, fmt.Errorf("events: %.40q is not push, delete or pull", a)
			}
			e.events[a] = true
		}
	}
	if len(fe.Repositories) > maxGlobs {
		return nil, fmt.Errorf("repositories: more than %d globs", maxGlobs)
	}
	for _, g := range fe.Repositories {
		rg, err := auth.ParseRepoGlob(g)
		if err != nil {
			return nil, fmt.Errorf("repositories: %w", err)
		}
		e.repos = append(e.repos, rg)
	}
	for _, mt := range slices.Concat(fe.IgnoredMediaTypes, fe.Ignore.MediaTypes) {
		e.ignoredTypes[mt] = true
	}
	for _, a := range fe.Ignore.Actions {
		if a != ActionPush && a != ActionDelete && a != ActionPull && a != ActionMount {
			return nil, fmt.Errorf("ignore.actions: %.40q is not push, mount, delete or pull", a)
		}
		e.ignoredActs[a] = true
	}
	return e, nil
}

func validHeaderName(k string) bool {
	if k == "" || len(k) > 128 {
		return false
	}
	for _, c := range k {
		if c <= ' ' || c >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", c) {
			return false
		}
	}
	return true
}

// wants reports whether e is sent events like ev.
func (e *Endpoint) wants(ev Event) bool {
	class := ev.Action
	if class == ActionMount {
		class = ActionPush
	}
	if !e.events[class] || e.ignoredActs[ev.Action] || (ev.Target.MediaType != "" && e.ignoredTypes[ev.Target.MediaType]) {
		return false
	}
	if len(e.repos) == 0 {
		return true
	}
	segs := strings.Split(ev.Target.Repository, "/")
	for _, g := range e.repos {
		if g.Match(segs) {
			return true
		}
	}
	return false
}

// redactedURL is the endpoint's URL without user info, query or
// fragment, for logs, metrics and the status document.
func (e *Endpoint) redactedURL() string {
	u, err := url.Parse(e.URL)
	if err != nil {
		return ""
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}
