package fetch

import (
	"context"
	"io"

	"github.com/opencontainers/go-digest"
)

// Origin names where a blob comes from when no peer holds it: a configured upstream and the repository there.
type Origin struct{ Name, Repo string }

// OriginFunc streams a blob from an origin from offset (h/mirror implements it with node/upstream's Registry.Blob).
type OriginFunc func(ctx context.Context, repo string, d digest.Digest, size, offset int64) (io.ReadCloser, error)

// Origins looks an origin up by name; h/mirror implements it (node/mirror), node wires it into the engine.
type Origins interface {
	Origin(name string) (OriginFunc, bool)
}
