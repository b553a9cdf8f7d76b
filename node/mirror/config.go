// Package mirror is the cluster's pull-through mirror of upstream
// registries: which upstreams there are (Config), how a mirrored tag is
// answered (fresh from the replicated state, revalidated once per cluster
// after its interval, or served stale with a Warning while its upstream is
// down), and how manifests and blobs that no node holds are fetched from
// their upstream. It knows upstreams through the small Upstream interface
// (node/upstream's client implements it) and the cluster through Store
// (the node implements it); package node wires both.
package mirror

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/api/auth"
)

// DefaultRevalidate is how long a mirrored tag is answered from the
// replicated state before its upstream is asked again.
const DefaultRevalidate = 5 * time.Minute

// Bounds of an upstream's settings.
const (
	MinRevalidate = time.Second
	MaxRevalidate = 30 * 24 * time.Hour
	// MaxUpstreams bounds the upstreams one node mirrors.
	MaxUpstreams = 64
	// MaxAllow bounds the repository globs of one upstream.
	MaxAllow = 256
)

// UpstreamConfig is one upstream registry the cluster mirrors.
type UpstreamConfig struct {
	// Name is the registry host clients mean: docker.io, ghcr.io,
	// 127.0.0.1:5999 (what containerd sends as ?ns=).
	Name string
	// URL is where the registry answers: https://registry-1.docker.io.
	URL string
	// Revalidate is how long a tag is answered without asking the
	// upstream again (0: DefaultRevalidate).
	Revalidate time.Duration
	// Allow lists the upstream repositories (globs as in the access
	// policy: library/*, team/**) the mirror fetches; empty: all.
	Allow []string
	// CAFile is a PEM file of extra CAs to trust; SkipVerify turns TLS
	// verification off (tests only).
	CAFile     string
	SkipVerify bool
	// RegionFetch: a blob is fetched from this upstream once per region
	// rather than once per cluster.
	RegionFetch bool
}

// Config is the mirror of a node: its upstreams, the one a pull without
// ?ns= means, and the upstream credentials file.
type Config struct {
	Upstreams []UpstreamConfig
	// Default is the upstream a GET without ?ns= means (Docker's
	// registry-mirrors form); "" with an upstream named docker.io is
	// docker.io, else none ("none" says none explicitly).
	Default string
	// CredentialsFile is a Docker config.json with the upstreams'
	// credentials ("": anonymous).
	CredentialsFile string
}

// hostRE is a registry host with an optional port.
var hostRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[0-9]{1,5})?$`)

// ParseUpstream reads an --upstream value:
//
//	NAME=URL[;revalidate=DURATION][;allow=GLOB]...[;ca-file=FILE][;skip-verify][;region-fetch]
//
// (";" separates the options because the flag's values are separated by
// commas in MESHREG_UPSTREAM). The error names the entry.
func ParseUpstream(s string) (UpstreamConfig, error) {
	parts := strings.Split(s, ";")
	name, rawURL, ok := strings.Cut(strings.TrimSpace(parts[0]), "=")
	if !ok {
		return UpstreamConfig{}, fmt.Errorf("--upstream %q: want NAME=URL (docker.io=https://registry-1.docker.io)", s)
	}
	u := UpstreamConfig{Name: strings.TrimSpace(name), URL: strings.TrimSpace(rawURL)}
	for _, p := range parts[1:] {
		p = strings.TrimSpace(p)
		k, v, _ := strings.Cut(p, "=")
		switch k {
		case "":
			continue
		case "revalidate":
			d, err := time.ParseDuration(v)
			if err != nil {
				return u, fmt.Errorf("--upstream %s: revalidate=%q is not a duration (5m, 30s)", u.Name, v)
			}
			u.Revalidate = d
		case "allow":
			u.Allow = append(u.Allow, v)
		case "ca-file":
			u.CAFile = v
		case "skip-verify":
			u.SkipVerify = v == "" || v == "true"
		case "region-fetch":
			u.RegionFetch = v == "" || v == "true"
		default:
			return u, fmt.Errorf("--upstream %s: unknown option %q: use revalidate, allow, ca-file, skip-verify or region-fetch", u.Name, k)
		}
	}
	return u, u.Validate()
}

// String is the --upstream value that parses back to u.
func (u UpstreamConfig) String() string {
	var b strings.Builder
	b.WriteString(u.Name + "=" + u.URL)
	if u.Revalidate != 0 {
		b.WriteString(";revalidate=" + u.Revalidate.String())
	}
	for _, a := range u.Allow {
		b.WriteString(";allow=" + a)
	}
	if u.CAFile != "" {
		b.WriteString(";ca-file=" + u.CAFile)
	}
	if u.SkipVerify {
		b.WriteString(";skip-verify")
	}
	if u.RegionFetch {
		b.WriteString(";region-fetch")
	}
	return b.String()
}

// Validate checks one upstream; the error names it.
func (u UpstreamConfig) Validate() error {
	where := "--upstream " + u.Name
	switch {
	case len(u.Name) > 259 || !hostRE.MatchString(u.Name):
		return fmt.Errorf("--upstream %q: the name must be the registry host clients use, in lower case (docker.io, ghcr.io, 127.0.0.1:5999)", u.Name)
	case u.Revalidate != 0 && (u.Revalidate < MinRevalidate || u.Revalidate > MaxRevalidate):
		return fmt.Errorf("%s: revalidate=%s is out of range: use %s to %s", where, u.Revalidate, MinRevalidate, MaxRevalidate)
	case len(u.Allow) > MaxAllow:
		return fmt.Errorf("%s: %d allow globs, at most %d", where, len(u.Allow), MaxAllow)
	case u.CAFile != "" && !strings.HasPrefix(u.URL, "https://"):
		return fmt.Errorf("%s: ca-file needs an https:// URL", where)
	}
	pu, err := url.Parse(u.URL)
	if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" || pu.User != nil || pu.RawQuery != "" {
		return fmt.Errorf("%s: URL %q must be http(s)://HOST[:PORT] without credentials or query", where, u.URL)
	}
	ns := api.MirrorNamespace(u.Name)
	if len(ns) > 128 {
		return fmt.Errorf("%s: the name is too long to prefix repository names", where)
	}
	for _, a := range u.Allow {
		if _, err := auth.ParseRepoGlob(a); err != nil {
			return fmt.Errorf("%s: allow=%q: %w", where, a, err)
		}
	}
	return nil
}

// RevalidateEvery is the upstream's revalidation interval.
func (u UpstreamConfig) RevalidateEvery() time.Duration {
	if u.Revalidate == 0 {
		return DefaultRevalidate
	}
	return u.Revalidate
}

// Validate checks every upstream, that no two share a name or a
// namespace, and that the default is one of them.
func (c Config) Validate() error {
	if len(c.Upstreams) > MaxUpstreams {
		return fmt.Errorf("--upstream: %d upstreams, at most %d", len(c.Upstreams), MaxUpstreams)
	}
	var errs []error
	seen := map[string]string{}
	for _, u := range c.Upstreams {
		if err := u.Validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		ns := api.MirrorNamespace(u.Name)
		if other, ok := seen[ns]; ok {
			errs = append(errs, fmt.Errorf("--upstream %s is given twice (or mirrors into the same namespace %s as %s)", u.Name, ns, other))
		}
		seen[ns] = u.Name
	}
	if d := c.Default; d != "" && d != "none" && !slices.ContainsFunc(c.Upstreams, func(u UpstreamConfig) bool { return u.Name == d }) {
		errs = append(errs, fmt.Errorf("--upstream-default %q is not one of the --upstream names (%s)", d, names(c.Upstreams)))
	}
	if c.CredentialsFile != "" && len(c.Upstreams) == 0 {
		errs = append(errs, errors.New("--upstream-credentials needs at least one --upstream"))
	}
	return errors.Join(errs...)
}

// DefaultUpstream is the upstream a GET without ?ns= means ("": none).
func (c Config) DefaultUpstream() string {
	switch c.Default {
	case "none":
		return ""
	case "":
		if slices.ContainsFunc(c.Upstreams, func(u UpstreamConfig) bool { return u.Name == "docker.io" }) {
			return "docker.io"
		}
		return ""
	}
	return c.Default
}

// Names lists the upstreams' names.
func (c Config) Names() []string {
	out := make([]string, len(c.Upstreams))
	for i, u := range c.Upstreams {
		out[i] = u.Name
	}
	return out
}

func names(us []UpstreamConfig) string {
	var out []string
	for _, u := range us {
		out = append(out, u.Name)
	}
	if len(out) == 0 {
		return "none configured"
	}
	return strings.Join(out, ", ")
}
