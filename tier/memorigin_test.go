package tier

import (
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcache/modelcache/loader"
)

// memOrigin serves model files from memory, each read of bytes waiting
// latency first: an origin that is not the local file system (an object
// store, HTTP), to run the cache's read paths over. It holds files only;
// a directory is any path that files lie under. Nothing it serves exists
// on disk, so a read that bypasses the Origin fails.
type memOrigin struct {
	latency time.Duration
	read    atomic.Int64 // bytes read through ReadAt, headers included

	mu    sync.Mutex
	files map[string]memEntry // by absolute path
	gen   int64
}

type memEntry struct {
	b  []byte
	id loader.Identity
}

func newMemOrigin(latency time.Duration) *memOrigin {
	return &memOrigin{latency: latency, files: map[string]memEntry{}}
}

// put stores b at path as a new version: its identity changes whenever its
// bytes do.
func (o *memOrigin) put(path string, b []byte) {
	abs, err := filepath.Abs(path)
	if err != nil {
		panic(err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.gen++
	o.files[abs] = memEntry{b: slices.Clone(b), id: loader.Identity{Path: abs, Size: int64(len(b)), ModTime: o.gen, Inode: uint64(o.gen)}}
}

func (o *memOrigin) get(path string) (memEntry, loader.Identity, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return memEntry{}, loader.Identity{}, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if e, ok := o.files[abs]; ok {
		return e, e.id, nil
	}
	for p := range o.files {
		if strings.HasPrefix(p, abs+"/") {
			return memEntry{}, loader.Identity{Path: abs, IsDir: true}, nil
		}
	}
	return memEntry{}, loader.Identity{}, fmt.Errorf("memorigin: %s: %w", abs, fs.ErrNotExist)
}

func (o *memOrigin) Stat(path string) (loader.Identity, error) {
	_, id, err := o.get(path)
	return id, err
}

func (o *memOrigin) List(dir string) ([]loader.Identity, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	o.mu.Lock()
	seen := map[string]loader.Identity{}
	for p, e := range o.files {
		rest, ok := strings.CutPrefix(p, abs+"/")
		if !ok {
			continue
		}
		if first, _, deeper := strings.Cut(rest, "/"); deeper {
			seen[first] = loader.Identity{Path: filepath.Join(abs, first), IsDir: true}
		} else {
			seen[rest] = e.id
		}
	}
	o.mu.Unlock()
	if len(seen) == 0 {
		return nil, fmt.Errorf("memorigin: %s: %w", abs, fs.ErrNotExist)
	}
	out := make([]loader.Identity, 0, len(seen))
	for _, id := range seen {
		out = append(out, id)
	}
	slices.SortFunc(out, func(a, b loader.Identity) int { return strings.Compare(a.Path, b.Path) })
	return out, nil
}

func (o *memOrigin) OpenBlob(path string) (loader.Blob, error) {
	e, id, err := o.get(path)
	if err != nil {
		return nil, err
	}
	if id.IsDir {
		return nil, fmt.Errorf("memorigin: %s: a directory", id.Path)
	}
	return &memBlob{o: o, e: e}, nil
}

func (o *memOrigin) Open(path string) (ModelFile, error) {
	b, err := o.OpenBlob(path)
	if err != nil {
		return nil, err
	}
	f, err := loader.OpenBlob(b, "")
	if err != nil {
		return nil, err
	}
	return f, nil
}

// memBlob is one version of a memOrigin's file: it reads that version
// whatever put does meanwhile, as an object store read with If-Match would.
type memBlob struct {
	o *memOrigin
	e memEntry
}

func (b *memBlob) Identity() loader.Identity { return b.e.id }

func (b *memBlob) ReadAt(p []byte, off int64) (int, error) {
	time.Sleep(b.o.latency)
	if off < 0 || off > int64(len(b.e.b)) {
		return 0, fmt.Errorf("memorigin: %s: offset %d of %d", b.e.id.Path, off, len(b.e.b))
	}
	n := copy(p, b.e.b[off:])
	b.o.read.Add(int64(n))
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
