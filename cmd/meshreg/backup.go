package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
	"github.com/urfave/cli/v2"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/blobstore"
	"github.com/meshreg/meshreg/consensus"
	"github.com/meshreg/meshreg/internal/bytesize"
	"github.com/meshreg/meshreg/node/backup"
	"github.com/meshreg/meshreg/node/buildinfo"
	"github.com/meshreg/meshreg/node/datadir"
	"github.com/meshreg/meshreg/p2p"
)

// progressEvery is how often backup, restore, export and import print a
// progress line on stderr.
const progressEvery = 2 * time.Second

// progress counts bytes and items and prints a line on stderr every
// progressEvery and at the end.
type progress struct {
	w      io.Writer
	what   string
	start  time.Time
	bytes  atomic.Int64
	items  atomic.Int64
	total  int64 // items expected, 0 if unknown
	stop   chan struct{}
	done   chan struct{}
	ticker *time.Ticker
}

func newProgress(w io.Writer, what string) *progress {
	p := &progress{w: w, what: what, start: time.Now(), stop: make(chan struct{}), done: make(chan struct{}), ticker: time.NewTicker(progressEvery)}
	go func() { // stopped by finish
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			case <-p.ticker.C:
				p.line("")
			}
		}
	}()
	return p
}

func (p *progress) line(suffix string) {
	secs := max(time.Since(p.start).Seconds(), 0.001)
	items := fmt.Sprint(p.items.Load())
	if t := atomic.LoadInt64(&p.total); t > 0 {
		items += fmt.Sprintf("/%d", t)
	}
	fmt.Fprintf(p.w, "%s: %s, %s blobs, %s/s, %.1fs%s\n", p.what, bytesize.Human(p.bytes.Load()), items,
		bytesize.Human(int64(float64(p.bytes.Load())/secs)), secs, suffix)
}

// finish stops the ticker and prints the last line.
func (p *progress) finish(suffix string) {
	p.ticker.Stop()
	close(p.stop)
	<-p.done
	p.line(suffix)
}

// countingReader adds what it reads to a progress.
type countingReader struct {
	r io.Reader
	p *progress
}

func (c countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.p.bytes.Add(int64(n))
	return n, err
}

func backupCommand() *cli.Command {
	return &cli.Command{
		Name:  "backup",
		Usage: "write a consistent backup of the cluster's metadata (a Raft snapshot) and, with --blobs, every blob it references, as one archive",
		Description: "The node at --node (admin: with --auth-htpasswd a user with the admin right, else run it on the node's\n" +
			"machine) streams the archive; it reads blobs it does not hold from its peers. The archive is\n" +
			"checked as it arrives and written to a temporary file renamed to --out at the end: a failed\n" +
			"backup leaves no --out. Restore it with `meshreg restore`.",
		Flags: append([]cli.Flag{
			nodeFlag("the node whose"),
			&cli.StringFlag{Name: "out", Usage: "archive `FILE` to write, or - for stdout (required)"},
			&cli.BoolFlag{Name: "blobs", Usage: "include every blob the metadata references (else the metadata only)"},
		}, nodeClientFlags()...),
		Action: backupAction,
	}
}

func backupAction(c *cli.Context) error {
	args, err := trailingFlags(c)
	if err != nil {
		return err
	}
	if len(args) > 0 {
		return fmt.Errorf("backup takes no arguments (got %q): use --node and --out", args[0])
	}
	if err := requireFlags(c, "out"); err != nil {
		return err
	}
	base, err := nodeURL(c.String("node"))
	if err != nil {
		return err
	}
	u := base + "/_meshreg/v1/backup"
	if c.Bool("blobs") {
		u += "?blobs=1"
	}
	req, err := http.NewRequestWithContext(c.Context, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := nodeDoWithin(c, req, 0)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return fmt.Errorf("backup through %s: %s", base, apiErrorText(resp.StatusCode, b))
	}
	if ct := resp.Header.Get("Content-Type"); ct != api.BackupMediaType {
		return fmt.Errorf("backup through %s: the answer is %q, not a meshreg backup (is --node a meshreg node?)", base, ct)
	}

	out := c.String("out")
	var w io.Writer = c.App.Writer
	var tmp *os.File
	if out != "-" {
		tmp, err = os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".partial-*")
		if err != nil {
			return fmt.Errorf("backup: creating a temporary file beside %s: %w", out, err)
		}
		defer func() {
			if tmp != nil { // not renamed: drop it
				_ = tmp.Close()
				_ = os.Remove(tmp.Name())
			}
		}()
		w = tmp
	}
	prog := newProgress(c.App.ErrWriter, "backup")
	// The archive is checked as it is written: a stream that breaks off or
	// is altered fails here, and no --out appears.
	m, err := backup.Read(countingReader{r: io.TeeReader(resp.Body, w), p: prog}, backup.Visitor{
		Manifest: func(m backup.Manifest) error { atomic.StoreInt64(&prog.total, int64(m.Blobs)); return nil },
		Blob: func(digest.Digest, int64, io.Reader) error {
			prog.items.Add(1)
			return nil
		},
	})
	if err == nil {
		// Whatever follows the tar end (padding) is part of the file too.
		_, err = io.Copy(w, countingReader{r: resp.Body, p: prog})
	}
	if err != nil {
		prog.finish(": failed")
		return fmt.Errorf("backup through %s failed, nothing was written to %s: %w", base, out, err)
	}
	if tmp != nil {
		if err := tmp.Sync(); err != nil {
			return fmt.Errorf("backup: writing %s: %w", tmp.Name(), err)
		}
		if err := tmp.Close(); err != nil {
			return fmt.Errorf("backup: writing %s: %w", tmp.Name(), err)
		}
		if err := os.Rename(tmp.Name(), out); err != nil {
			return fmt.Errorf("backup: renaming the archive to %s: %w", out, err)
		}
		tmp = nil
	}
	prog.finish("")
	fmt.Fprintf(c.App.ErrWriter, "backup of node %s at Raft index %d (term %d): %d repositories, %d manifests, %d tags, %d blobs (%s) -> %s\n",
		m.NodeID, m.Index, m.Term, m.Repositories, m.Manifests, m.Tags, m.Blobs, bytesize.Human(m.BlobBytes), out)
	return nil
}

func restoreCommand() *cli.Command {
	return &cli.Command{
		Name:      "restore",
		Usage:     "build the data dir of a new one-node cluster from a backup archive; start it with `meshreg serve --data-dir DIR`",
		ArgsUsage: "FILE",
		Description: "FILE is an archive written by `meshreg backup` (- reads stdin). The new node has a new identity and is\n" +
			"the only member; others join it as usual (--join). The archive is checked to its end (digests,\n" +
			"trailer) while the data dir is built beside --data-dir (DIR.tmp) and only then moved into place:\n" +
			"a truncated or altered archive leaves nothing behind.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data-dir", Usage: "`DIR` to build, new or empty (required)", EnvVars: []string{"MESHREG_DATA_DIR"}},
			&cli.BoolFlag{Name: "force", Usage: "replace what --data-dir holds (a stopped node's data is deleted)"},
		},
		Action: restoreAction,
	}
}

func restoreAction(c *cli.Context) error {
	args, err := trailingFlags(c)
	if err != nil {
		return err
	}
	if len(args) != 1 {
		return errors.New("restore takes one argument: the backup archive (or - for stdin)")
	}
	if err := requireFlags(c, "data-dir"); err != nil {
		return err
	}
	var in io.Reader = os.Stdin
	if name := args[0]; name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		defer f.Close()
		in = f
	}
	log := slog.New(slog.NewTextHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: slog.LevelWarn}))
	res, err := restoreDataDir(c.Context, c.String("data-dir"), c.Bool("force"), in, c.App.ErrWriter, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "restored a backup of node %s at Raft index %d: %d repositories, %d manifests, %d tags, %d blobs (%s)\n",
		res.m.NodeID, res.m.Index, res.m.Repositories, res.m.Manifests, res.m.Tags, res.m.Blobs, bytesize.Human(res.m.BlobBytes))
	if !res.m.WithBlobs {
		fmt.Fprintln(c.App.Writer, "the archive holds no blobs (backup without --blobs): pulls fail until the blobs are pushed again")
	}
	fmt.Fprintf(c.App.Writer, "new node %s, a cluster of itself: start it with `meshreg serve --data-dir %s`; others join it with --join\n",
		res.id, c.String("data-dir"))
	return nil
}

type restored struct {
	m  backup.Manifest
	id peer.ID
}

// restoreDataDir builds dir from the archive in: in dir.tmp first, moved
// into dir only once the whole archive is read and checked.
func restoreDataDir(ctx context.Context, dir string, force bool, in io.Reader, errw io.Writer, log *slog.Logger) (res restored, err error) {
	if entries, err := os.ReadDir(dir); err == nil {
		var names []string
		for _, e := range entries {
			if e.Name() != datadir.LockFile {
				names = append(names, e.Name())
			}
		}
		if len(names) > 0 && !force {
			return res, fmt.Errorf("restore: data dir %s is not empty (it holds %s): pass a new or empty --data-dir, or --force to replace its content",
				dir, strings.Join(names[:min(len(names), 5)], ", "))
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return res, fmt.Errorf("restore: reading data dir %s: %w", dir, err)
	}
	_, statErr := os.Stat(dir)
	created := errors.Is(statErr, fs.ErrNotExist)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return res, fmt.Errorf("restore: creating data dir %s: %w", dir, err)
	}
	lock, err := datadir.Acquire(dir) // a running node keeps us out, and we keep it out
	if err != nil {
		return res, err
	}
	defer func() {
		_ = lock.Close()
		if err != nil && created { // a failed restore leaves no data dir it made
			_ = os.RemoveAll(dir)
		}
	}()

	tmp := filepath.Clean(dir) + ".tmp"
	if err := os.RemoveAll(tmp); err != nil { // what an interrupted restore left
		return res, fmt.Errorf("restore: removing %s: %w", tmp, err)
	}
	if err := os.Mkdir(tmp, 0o750); err != nil {
		return res, fmt.Errorf("restore: creating %s: %w", tmp, err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(tmp)
		}
	}()
	id, err := p2p.NewIdentity(tmp)
	if err != nil {
		return res, err
	}
	res.id = id
	blobs, err := blobstore.Open(tmp, log)
	if err != nil {
		return res, fmt.Errorf("restore: %w", err)
	}
	prog := newProgress(errw, "restore")
	m, err := backup.Read(countingReader{r: in, p: prog}, backup.Visitor{
		Manifest: func(m backup.Manifest) error { atomic.StoreInt64(&prog.total, int64(m.Blobs)); return ctx.Err() },
		Metadata: func(m backup.Manifest, r io.Reader) error {
			cfg := consensus.Config{Dir: filepath.Join(tmp, "meta"), NodeID: id.String(), Logger: log}
			// The real address is recorded when the node starts (a lone
			// leader records its own); until then only the id counts.
			return consensus.RestoreBackup(cfg, r, m.Index, m.Term, "/p2p/"+id.String())
		},
		Blob: func(d digest.Digest, size int64, r io.Reader) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			n, err := blobs.Put(d, r)
			if err != nil {
				return fmt.Errorf("restore: %w", err)
			}
			if n != size {
				return fmt.Errorf("restore: blob %s is %d bytes, its entry says %d", d, n, size)
			}
			prog.items.Add(1)
			return nil
		},
	})
	if err != nil {
		prog.finish(": failed")
		return res, fmt.Errorf("restore into %s failed, nothing was restored: %w", dir, err)
	}
	prog.finish("")
	res.m = m
	if _, err := datadir.CheckFormat(tmp, buildinfo.Read().Version); err != nil {
		return res, fmt.Errorf("restore: recording the data dir's format: %w", err)
	}
	return res, replaceDirContent(dir, tmp)
}

// replaceDirContent moves everything in tmp into dir, after removing what
// dir holds (but its lock file, which we hold), then removes tmp.
func replaceDirContent(dir, tmp string) error {
	old, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	for _, e := range old {
		if e.Name() == datadir.LockFile {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("restore: replacing the content of %s: %w", dir, err)
		}
	}
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	for _, e := range entries {
		if err := os.Rename(filepath.Join(tmp, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("restore: moving %s into %s: %w (the restored data dir is in %s)", e.Name(), dir, err, tmp)
		}
	}
	return os.Remove(tmp)
}

// trailingFlags returns the command's arguments, setting the flags found
// among them: backup, restore, export and import read their flags after
// their argument too (`meshreg export REPO --out F`), where urfave/cli
// stops parsing flags at the first argument. "--" ends the flags.
func trailingFlags(c *cli.Context) ([]string, error) {
	var pos []string
	args := c.Args().Slice()
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(pos, args[i+1:]...), nil
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			pos = append(pos, a)
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		var flag cli.Flag
		for _, f := range c.Command.Flags {
			for _, n := range f.Names() {
				if n == name {
					flag = f
				}
			}
		}
		if flag == nil {
			return nil, fmt.Errorf("unknown flag %s; see meshreg %s --help", a, c.Command.Name)
		}
		if _, isBool := flag.(*cli.BoolFlag); isBool && !hasVal {
			val = "true"
		} else if !hasVal {
			if i+1 >= len(args) {
				return nil, fmt.Errorf("%s needs a value; see meshreg %s --help", a, c.Command.Name)
			}
			i++
			val = args[i]
		}
		if err := c.Set(name, val); err != nil {
			return nil, fmt.Errorf("%s %q: %w", a, val, err)
		}
	}
	return pos, nil
}

// requireFlags reports the first of names that is not set.
func requireFlags(c *cli.Context, names ...string) error {
	for _, n := range names {
		if c.String(n) == "" {
			return fmt.Errorf("--%s is required; see meshreg %s --help", n, c.Command.Name)
		}
	}
	return nil
}
