// Package ratelimit holds token buckets per client and per repository,
// configured in a YAML file (--rate-limits):
//
//	clients: {requests-per-second: 50, burst: 100}    # each user, or each IP (/64) when anonymous
//	repositories:                                     # each repository, first matching entry
//	  - {repos: ["ci/**"], requests-per-second: 20, burst: 40}
//	users:                                            # overrides of clients for these users
//	  - {users: [bot], requests-per-second: 200, burst: 400}
//
// Every section is optional; a missing one limits nothing. A request is
// charged one token from its client's bucket and one from its repository's;
// it goes through only if both have one (a refused request costs nothing).
//
// Memory is bounded: each kind of bucket lives in an LRU of at most
// MaxBuckets entries, so a flood of distinct clients evicts the least
// recently seen ones (an evicted client starts again with a full bucket).
package ratelimit

import (
	"bytes"
	"container/list"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"gopkg.in/yaml.v3"

	"github.com/meshreg/meshreg/api/auth"
)

// Bounds of one file and of the buckets held.
const (
	MaxSize    = 1 << 20
	MaxEntries = 10_000
	// MaxBuckets is how many client buckets, and how many repository
	// buckets, are held at most.
	MaxBuckets = 50_000
	// MaxRate bounds requests-per-second.
	MaxRate = 1_000_000
)

// The limits a request can hit, the values of the metric's limit label.
const (
	LimitClient     = "client"
	LimitRepository = "repository"
)

// Rate is one bucket's refill rate and size.
type Rate struct {
	PerSecond float64 `yaml:"requests-per-second"`
	Burst     int     `yaml:"burst"`
}

func (r Rate) check() error {
	switch {
	case !(r.PerSecond > 0) || r.PerSecond > MaxRate:
		return fmt.Errorf("requests-per-second %v is out of range: use more than 0, at most %d", r.PerSecond, MaxRate)
	case r.Burst < 1 || r.Burst > MaxRate:
		return fmt.Errorf("burst %d is out of range: use 1 to %d", r.Burst, MaxRate)
	}
	return nil
}

func (r Rate) String() string {
	return fmt.Sprintf("%g requests per second (burst %d)", r.PerSecond, r.Burst)
}

// Config is a parsed, validated file. It is immutable.
type Config struct {
	clients *Rate
	repos   []repoEntry
	users   map[string]Rate
}

type repoEntry struct {
	globs []auth.RepoGlob
	rate  Rate
}

// Parse reads and validates a file; an error names the line.
func Parse(data []byte) (*Config, error) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	if len(data) > MaxSize {
		return nil, fmt.Errorf("file is %d bytes, more than %d", len(data), MaxSize)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, err
	}
	c := &Config{users: map[string]Rate{}}
	if len(root.Content) == 0 {
		return c, nil
	}
	doc := root.Content[0]
	if err := knownKeys(doc, "clients", "repositories", "users"); err != nil {
		return nil, err
	}
	for i := 0; i+1 < len(doc.Content); i += 2 {
		key, val := doc.Content[i].Value, doc.Content[i+1]
		switch key {
		case "clients":
			r, err := decodeRate(val)
			if err != nil {
				return nil, err
			}
			c.clients = &r
		case "repositories", "users":
			if val.Kind != yaml.SequenceNode {
				return nil, fmt.Errorf("line %d: %s: want a list", val.Line, key)
			}
			if len(val.Content) > MaxEntries {
				return nil, fmt.Errorf("line %d: %s: more than %d entries", val.Line, key, MaxEntries)
			}
			for _, n := range val.Content {
				if err := c.addEntry(key, n); err != nil {
					return nil, err
				}
			}
		}
	}
	return c, nil
}

func decodeRate(n *yaml.Node, extra ...string) (Rate, error) {
	var r Rate
	if err := knownKeys(n, append([]string{"requests-per-second", "burst"}, extra...)...); err != nil {
		return r, err
	}
	if err := n.Decode(&r); err != nil {
		return r, err
	}
	if err := r.check(); err != nil {
		return r, fmt.Errorf("line %d: %w", n.Line, err)
	}
	return r, nil
}

func (c *Config) addEntry(section string, n *yaml.Node) error {
	field := map[string]string{"repositories": "repos", "users": "users"}[section]
	r, err := decodeRate(n, field)
	if err != nil {
		return err
	}
	var names struct {
		Repos []string `yaml:"repos"`
		Users []string `yaml:"users"`
	}
	if err := n.Decode(&names); err != nil {
		return err
	}
	list := names.Repos
	if section == "users" {
		list = names.Users
	}
	if len(list) == 0 {
		return fmt.Errorf("line %d: %s entry names no %s", n.Line, section, field)
	}
	var e repoEntry
	for _, s := range list {
		if section == "users" {
			if s == "" {
				return fmt.Errorf("line %d: an empty user name", n.Line)
			}
			if s == "anonymous" || s == "authenticated" {
				return fmt.Errorf("line %d: %q is not a user: anonymous clients have the clients limit, each by address", n.Line, s)
			}
			if _, dup := c.users[s]; dup {
				return fmt.Errorf("line %d: user %q has a limit already", n.Line, s)
			}
			c.users[s] = r
			continue
		}
		g, err := auth.ParseRepoGlob(s)
		if err != nil {
			return fmt.Errorf("line %d: %w", n.Line, err)
		}
		e.globs = append(e.globs, g)
	}
	if section == "repositories" {
		e.rate = r
		c.repos = append(c.repos, e)
	}
	return nil
}

func knownKeys(n *yaml.Node, keys ...string) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: want a mapping with keys %s", n.Line, strings.Join(keys, ", "))
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; !slices.Contains(keys, k.Value) {
			return fmt.Errorf("line %d: unknown key %q: use %s", k.Line, k.Value, strings.Join(keys, ", "))
		}
	}
	return nil
}

// clientRate is the limit of a client: its user's override, or clients.
func (c *Config) clientRate(user string) (Rate, bool) {
	if r, ok := c.users[user]; ok && user != "" {
		return r, true
	}
	if c.clients != nil {
		return *c.clients, true
	}
	return Rate{}, false
}

func (c *Config) repoRate(repo string) (Rate, bool) {
	if repo == "" {
		return Rate{}, false
	}
	segs := strings.Split(repo, "/")
	for _, e := range c.repos {
		for _, g := range e.globs {
			if g.Match(segs) {
				return e.rate, true
			}
		}
	}
	return Rate{}, false
}

// Refusal says which limit a request hit and when to retry.
type Refusal struct {
	Limit      string // LimitClient or LimitRepository
	Subject    string // the client or the repository
	Rate       Rate
	RetryAfter time.Duration
}

// Limiter charges requests to their buckets. It is safe for concurrent use.
type Limiter struct {
	config  func() *Config
	now     func() time.Time
	max     int
	mu      sync.Mutex
	cfg     *Config // the config the buckets were made for
	clients *lru
	repos   *lru
}

// New returns a Limiter asking config for the current configuration (a
// changed one empties every bucket).
func New(config func() *Config) *Limiter {
	return &Limiter{config: config, now: time.Now, max: MaxBuckets}
}

// Allow charges one request of client (user when authenticated, else the
// client's address) to repo ("" for none). It returns nil, or the limit
// that refused it.
func (l *Limiter) Allow(client, user, repo string) *Refusal {
	cfg := l.config()
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if cfg != l.cfg || l.clients == nil {
		l.cfg, l.clients, l.repos = cfg, newLRU(l.max), newLRU(l.max)
	}
	var refusal *Refusal
	var held []*rate.Reservation
	try := func(kind, subject string, buckets *lru, key string, r Rate) {
		if refusal != nil {
			return
		}
		res := buckets.get(key, r).ReserveN(now, 1)
		if d := res.DelayFrom(now); d > 0 {
			res.CancelAt(now)
			refusal = &Refusal{Limit: kind, Subject: subject, Rate: r, RetryAfter: d}
			return
		}
		held = append(held, res)
	}
	if r, ok := cfg.clientRate(user); ok {
		subject, key := "client "+client, "ip "+client
		if user != "" {
			subject, key = fmt.Sprintf("user %q", user), "user "+user
		}
		try(LimitClient, subject, l.clients, key, r)
	}
	if r, ok := cfg.repoRate(repo); ok {
		try(LimitRepository, "repository "+repo, l.repos, repo, r)
	}
	if refusal != nil {
		for _, res := range held {
			res.CancelAt(now)
		}
	}
	return refusal
}

// Buckets reports how many client and repository buckets are held.
func (l *Limiter) Buckets() (clients, repos int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.clients == nil {
		return 0, 0
	}
	return l.clients.ll.Len(), l.repos.ll.Len()
}

// lru is a bounded map of buckets, least recently used evicted first.
type lru struct {
	max int
	ll  *list.List
	m   map[string]*list.Element
}

type lruEntry struct {
	key string
	lim *rate.Limiter
}

func newLRU(max int) *lru { return &lru{max: max, ll: list.New(), m: map[string]*list.Element{}} }

func (c *lru) get(key string, r Rate) *rate.Limiter {
	if e, ok := c.m[key]; ok {
		c.ll.MoveToFront(e)
		return e.Value.(*lruEntry).lim
	}
	if c.ll.Len() >= c.max {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.m, old.Value.(*lruEntry).key)
	}
	lim := rate.NewLimiter(rate.Limit(r.PerSecond), r.Burst)
	c.m[key] = c.ll.PushFront(&lruEntry{key: key, lim: lim})
	return lim
}

// Open reads path and returns a Limiter that reloads it when it changes;
// onReload is told how each reload went (nil: applied; an error: the file
// turned invalid and the last good limits stay). Errors name the file and
// the line.
func Open(path string, onReload func(error)) (*Limiter, error) {
	parse := func(data []byte) (*Config, error) {
		c, err := Parse(data)
		if err != nil {
			return nil, fmt.Errorf("rate limits %s: %w", path, err)
		}
		return c, nil
	}
	w, err := auth.Watch(path, parse)
	if err != nil {
		return nil, fmt.Errorf("--rate-limits: %w", err)
	}
	w.OnReload = onReload
	return New(w.Get), nil
}
