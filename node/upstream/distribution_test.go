package upstream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/testnet/distribution"
)

// TestAgainstDistribution runs the client against a real CNCF Distribution
// v3 with htpasswd (Basic) auth: an image pushed with plain HTTP calls is
// resolved, fetched and streamed (whole and from an offset) with
// credentials; without them, or with a wrong password, the error names the
// upstream and the flag to fix.
func TestAgainstDistribution(t *testing.T) {
	bin, err := distribution.Bin()
	if err != nil {
		t.Skipf("no CNCF Distribution binary: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	reg, err := distribution.Start(ctx, distribution.Options{Bin: bin, Dir: filepath.Join(t.TempDir(), "upstream"),
		Users: map[string]string{"puller": "pull-pass"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Stop)

	layer1, layer2 := randomBytes(300<<10), []byte("second layer")
	amd, amdBody, err := reg.Client("puller", "pull-pass").PushPlatformImage(ctx, "team/app", "",
		ocispec.Platform{OS: "linux", Architecture: "amd64"}, layer1, layer2)
	if err != nil {
		t.Fatal(err)
	}
	arm, _, err := reg.Client("puller", "pull-pass").PushPlatformImage(ctx, "team/app", "",
		ocispec.Platform{OS: "linux", Architecture: "arm64"}, []byte("arm layer"))
	if err != nil {
		t.Fatal(err)
	}
	index, indexBody, err := reg.Client("puller", "pull-pass").PushIndex(ctx, "team/app", "v1", amd, arm)
	if err != nil {
		t.Fatal(err)
	}

	r := newTestRegistryURL(t, reg.URL, staticCreds{"upstream.test": {"puller", "pull-pass"}})
	got, err := r.Resolve(ctx, "team/app", "v1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != index.Digest || got.Size != index.Size || got.MediaType != ocispec.MediaTypeImageIndex {
		t.Fatalf("Resolve = %+v, want %+v", got, index)
	}
	desc, body, err := r.Manifest(ctx, "team/app", "v1", DefaultMaxManifest)
	if err != nil || desc.Digest != index.Digest || !bytes.Equal(body, indexBody) {
		t.Fatalf("Manifest(v1) = %+v, %v", desc, err)
	}
	desc, body, err = r.Manifest(ctx, "team/app", amd.Digest.String(), DefaultMaxManifest)
	if err != nil || desc.MediaType != ocispec.MediaTypeImageManifest || !bytes.Equal(body, amdBody) {
		t.Fatalf("Manifest(amd64 by digest) = %+v, %v", desc, err)
	}
	if _, err := r.Resolve(ctx, "team/app", "v2"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown tag: %v, want ErrNotFound", err)
	}

	d1 := digest.FromBytes(layer1)
	st, err := r.StatBlob(ctx, "team/app", d1)
	if err != nil || st.Size != int64(len(layer1)) {
		t.Fatalf("StatBlob = %+v, %v", st, err)
	}
	for _, off := range []int64{0, 12345} {
		rc, err := r.Blob(ctx, "team/app", d1, int64(len(layer1)), off)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(b, layer1[off:]) {
			t.Fatalf("Blob from %d: %d bytes, %v; want %d identical bytes", off, len(b), err, len(layer1)-int(off))
		}
	}
	if _, err := r.Blob(ctx, "team/app", digest.FromString("absent"), 6, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("absent blob: %v, want ErrNotFound", err)
	}
	// The upstream's own access log: one whole GET and one Range GET.
	if n, err := reg.BlobGETs(d1, 200); err != nil || n != 1 {
		t.Errorf("upstream logged %d 200 GETs of the layer (%v), want 1", n, err)
	}
	if n, err := reg.BlobGETs(d1, 206); err != nil || n != 1 {
		t.Errorf("upstream logged %d 206 GETs of the layer (%v), want 1", n, err)
	}

	// Upstream down: unavailable (the caller serves what it knew); back up: fine.
	reg.Stop()
	if _, err := r.Resolve(ctx, "team/app", "v1"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("upstream stopped: %v, want ErrUnavailable", err)
	}
	if st := r.Status(); st.LastErrorAt.IsZero() || st.LastSuccess.After(st.LastErrorAt) {
		t.Errorf("Status after the outage = %+v, want the error last", st)
	}
	if err := reg.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Resolve(ctx, "team/app", "v1"); err != nil || got.Digest != index.Digest {
		t.Fatalf("upstream back: %+v, %v", got, err)
	}

	for name, creds := range map[string]Credentials{
		"anonymous":      nil,
		"wrong password": staticCreds{"upstream.test": {"puller", "nope"}},
	} {
		r := newTestRegistryURL(t, reg.URL, creds)
		_, err := r.Resolve(ctx, "team/app", "v1")
		if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "upstream.test") ||
			!strings.Contains(err.Error(), "--upstream-credentials") {
			t.Errorf("%s: %v, want ErrUnauthorized naming upstream.test and --upstream-credentials", name, err)
		}
		if _, err := r.Blob(ctx, "team/app", d1, int64(len(layer1)), 0); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("%s: blob: %v, want ErrUnauthorized", name, err)
		}
	}
}

func newTestRegistryURL(t *testing.T, url string, creds Credentials) *Registry {
	t.Helper()
	r, err := New(Config{Name: "upstream.test", URL: url, Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.CloseIdleConnections)
	return r
}
