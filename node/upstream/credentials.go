package upstream

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

// Credentials finds the user and password to present to an upstream. The
// registry name is Config.Name ("docker.io", "ghcr.io", "127.0.0.1:5999").
// Implementations must be safe for concurrent use.
type Credentials interface {
	Lookup(registryName string) (user, password string, ok bool)
}

const (
	// maxCredentialsFileBytes bounds the credentials file read.
	maxCredentialsFileBytes = 1 << 20
	// credentialsRecheck is how often, at most, the file is stat'ed.
	credentialsRecheck = 2 * time.Second
)

type userPass struct{ user, pass string }

// FileCredentials reads Docker's config.json format:
//
//	{"auths": {"https://index.docker.io/v1/": {"auth": "base64(user:pass)"},
//	           "ghcr.io": {"username": "u", "password": "p"}}}
//
// Keys may be a host[:port] or a URL; "docker.io", "index.docker.io",
// "registry-1.docker.io" and "registry.hub.docker.com" all mean Docker Hub,
// as they do for Docker. The file is re-read when its modification time or
// size changes (checked at most every 2 s, following symlinks as a
// Kubernetes secret mount swaps them); a file that does not parse keeps the
// last good credentials and logs one ERROR. Secrets are never logged.
// credsStore and credHelpers are not supported.
type FileCredentials struct {
	path string
	log  *slog.Logger
	now  func() time.Time

	mu        sync.Mutex
	checkedAt time.Time
	modTime   time.Time
	size      int64
	badSig    string // signature of the last bad version logged
	entries   map[string]userPass
}

var _ Credentials = (*FileCredentials)(nil)

// NewFileCredentials loads path; it fails if the file cannot be read or
// parsed now (a start with a broken credentials file is an operator error
// to show at once).
func NewFileCredentials(path string, logger *slog.Logger) (*FileCredentials, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f := &FileCredentials{path: path, log: logger, now: time.Now}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("upstream credentials %s: %w (check --upstream-credentials)", path, err)
	}
	entries, err := readCredentialsFile(path)
	if err != nil {
		return nil, fmt.Errorf("upstream credentials %s: %w (check --upstream-credentials)", path, err)
	}
	f.entries, f.modTime, f.size, f.checkedAt = entries, fi.ModTime(), fi.Size(), f.now()
	return f, nil
}

// Lookup implements Credentials.
func (f *FileCredentials) Lookup(registryName string) (string, string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.maybeReload()
	up, ok := f.entries[canonicalRegistry(registryName)]
	return up.user, up.pass, ok
}

// Registries lists the registry names the file has credentials for (no
// secrets), for status pages and logs.
func (f *FileCredentials) Registries() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.maybeReload()
	out := make([]string, 0, len(f.entries))
	for k := range f.entries {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// maybeReload re-reads the file when it changed; f.mu is held.
func (f *FileCredentials) maybeReload() {
	now := f.now()
	if now.Sub(f.checkedAt) < credentialsRecheck && !now.Before(f.checkedAt) {
		return
	}
	f.checkedAt = now
	fi, err := os.Stat(f.path) // follows symlinks
	if err != nil {
		f.logBad("stat:"+err.Error(), err)
		return
	}
	if fi.ModTime().Equal(f.modTime) && fi.Size() == f.size {
		return
	}
	entries, err := readCredentialsFile(f.path)
	if err != nil {
		f.logBad(fmt.Sprintf("%d/%d", fi.ModTime().UnixNano(), fi.Size()), err)
		return
	}
	f.entries, f.modTime, f.size, f.badSig = entries, fi.ModTime(), fi.Size(), ""
	f.log.Info("upstream credentials reloaded", "path", f.path, "registries", len(entries))
}

func (f *FileCredentials) logBad(sig string, err error) {
	if sig == f.badSig {
		return
	}
	f.badSig = sig
	f.log.Error("upstream credentials file not reloaded; keeping the last good credentials: fix the file",
		"path", f.path, "err", err)
}

type dockerConfig struct {
	Auths map[string]struct {
		Auth     string `json:"auth"`
		Username string `json:"username"`
		Password string `json:"password"`
	} `json:"auths"`
}

func readCredentialsFile(path string) (map[string]userPass, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, maxCredentialsFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxCredentialsFileBytes {
		return nil, fmt.Errorf("file is larger than %d bytes", maxCredentialsFileBytes)
	}
	return parseCredentials(data)
}

// parseCredentials parses config.json. Errors never quote the file's
// content (it holds secrets).
func parseCredentials(data []byte) (map[string]userPass, error) {
	var cfg dockerConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("not valid JSON (at byte %d)", se.Offset)
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("not Docker's config.json format (field %q has the wrong type)", te.Field)
		}
		return nil, errors.New("not Docker's config.json format")
	}
	keys := make([]string, 0, len(cfg.Auths))
	for k := range cfg.Auths {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := map[string]userPass{}
	prio := map[string]int{}
	for _, k := range keys {
		e := cfg.Auths[k]
		up := userPass{user: e.Username, pass: e.Password}
		if e.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(e.Auth))
			if err != nil {
				return nil, fmt.Errorf("auths[%q].auth is not base64", k)
			}
			u, p, ok := strings.Cut(string(raw), ":")
			if !ok {
				return nil, fmt.Errorf("auths[%q].auth is not base64 of user:password", k)
			}
			up = userPass{user: u, pass: p}
		}
		if up.user == "" && up.pass == "" {
			continue // an entry without credentials (e.g. for a credsStore)
		}
		name := canonicalRegistry(k)
		if name == "" {
			return nil, fmt.Errorf("auths key %q names no registry", k)
		}
		// An exact key beats one that only normalizes to the same name; for
		// Docker Hub, Docker's own key https://index.docker.io/v1/ wins.
		p := 1
		if k == name {
			p = 2
		}
		if name == "docker.io" && strings.TrimSuffix(k, "/") == "https://index.docker.io/v1" {
			p = 3
		}
		if p > prio[name] {
			out[name], prio[name] = up, p
		}
	}
	return out, nil
}

// canonicalRegistry reduces a registry name or URL to a lower-case
// host[:port], with Docker Hub's aliases folded into "docker.io".
func canonicalRegistry(s string) string {
	s = strings.TrimSpace(strings.ToLower(s))
	if i := strings.Index(s, "://"); i >= 0 {
		s = s[i+3:]
	}
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	s = strings.TrimSpace(s)
	switch s {
	case "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com", "docker.io":
		return "docker.io"
	}
	return s
}
