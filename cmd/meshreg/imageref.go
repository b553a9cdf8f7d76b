package main

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"
)

// imageRef is an image reference as a user types it, split the way a
// registry client needs it: REGISTRY/REPOSITORY[:TAG][@DIGEST].
type imageRef struct {
	Registry   string        // docker.io, ghcr.io, 127.0.0.1:5000
	Repository string        // library/nginx, org/app
	Tag        string        // "" when only a digest is given
	Digest     digest.Digest // "" when only a tag is given
}

// String is the reference in full, as the user would give it again.
func (r imageRef) String() string {
	s := r.Registry + "/" + r.Repository
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest.String()
	}
	return s
}

// Reference is what goes in /v2/<repo>/manifests/<reference>: the digest
// when there is one (it pins the content), else the tag.
func (r imageRef) Reference() string {
	if r.Digest != "" {
		return r.Digest.String()
	}
	return r.Tag
}

var (
	repoComponent = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$`)
	tagPattern    = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// maxImageRef bounds a reference given on the command line.
const maxImageRef = 4096

// parseImageRef reads an image reference the way docker and containerd
// do: the first component is the registry when it has a dot or a colon or
// is "localhost", else the registry is docker.io, where a one-component
// repository is under library/. With neither tag nor digest the tag is
// "latest".
func parseImageRef(s string) (imageRef, error) {
	bad := func(why string) (imageRef, error) {
		return imageRef{}, fmt.Errorf("image %q: %s: want [REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST], e.g. docker.io/library/nginx:1.27 or ghcr.io/org/app@sha256:…", s, why)
	}
	if s == "" {
		return bad("empty")
	}
	if len(s) > maxImageRef {
		return bad(fmt.Sprintf("longer than %d characters", maxImageRef))
	}
	var r imageRef
	rest := s
	if name, d, ok := strings.Cut(rest, "@"); ok {
		dg, err := digest.Parse(d)
		if err != nil {
			return bad("the digest does not parse (" + err.Error() + ")")
		}
		r.Digest, rest = dg, name
	}
	if i := strings.LastIndex(rest, ":"); i > strings.LastIndex(rest, "/") {
		r.Tag, rest = rest[i+1:], rest[:i]
		if !tagPattern.MatchString(r.Tag) {
			return bad("the tag " + r.Tag + " is not a valid tag")
		}
	}
	first, remainder, hasSlash := strings.Cut(rest, "/")
	if hasSlash && (strings.ContainsAny(first, ".:") || first == "localhost") {
		if err := validRegistryName(first); err != nil {
			return bad("the registry part " + first + " is not host[:port]")
		}
		r.Registry, r.Repository = first, remainder
	} else {
		r.Registry, r.Repository = "docker.io", rest
	}
	if r.Registry == "index.docker.io" || r.Registry == "registry-1.docker.io" {
		r.Registry = "docker.io"
	}
	if r.Registry == "docker.io" && !strings.Contains(r.Repository, "/") {
		r.Repository = "library/" + r.Repository
	}
	if r.Repository == "" {
		return bad("no repository")
	}
	if len(r.Repository) > 255 {
		return bad("the repository is longer than 255 characters")
	}
	for _, c := range strings.Split(r.Repository, "/") {
		if !repoComponent.MatchString(c) {
			return bad("the repository part " + c + " is not lowercase letters, digits and separators")
		}
	}
	if r.Tag == "" && r.Digest == "" {
		r.Tag = "latest"
	}
	return r, nil
}

// platform is an os/arch[/variant] a --platform flag names.
type platform struct{ OS, Arch, Variant string }

func (p platform) String() string {
	s := p.OS + "/" + p.Arch
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

func parsePlatform(s string) (platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" || (len(parts) == 3 && parts[2] == "") {
		return platform{}, fmt.Errorf("--platform %q: want os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8", s)
	}
	p := platform{OS: parts[0], Arch: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// matches reports whether a manifest of an index, for os/arch/variant,
// is one that p asks for: os and arch equal, and the variant equal when p
// names one (linux/arm64 takes linux/arm64/v8).
func (p platform) matches(os, arch, variant string) bool {
	return p.OS == os && p.Arch == arch && (p.Variant == "" || p.Variant == variant)
}
