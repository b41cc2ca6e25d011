package tier

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/internal/key"
	"github.com/modelcache/modelcache/loader"
	"github.com/modelcache/modelcache/resolve"
)

// Model is one version of a model, opened through the cache: a model file
// of any format, or a sharded checkpoint (every shard). It is stat'ed and
// parsed once, by Cache.Model, and its files are held open at the version
// opened until Close, so every tensor read through it belongs to that
// version: a file replaced (renamed over, deleted) meanwhile is still read
// as it was, and a file changed in place is errs.ErrChanged, never a mix.
// It is safe for concurrent use.
type Model struct {
	c       *Cache
	path    string // absolute: the file, or the checkpoint's index
	files   []*pinnedFile
	tensors []TensorInfo // in storage order: file by file, by offset
	byName  map[string]int
	bytes   uint64
	version string
	// cachedOnly: the file is gone; the tensors are those L2 holds.
	cachedOnly bool

	closeOnce sync.Once
	closed    atomic.Bool
}

// usable is errs.ErrClosed once the handle is closed: its files may be
// closed under it.
func (m *Model) usable() error {
	if m.closed.Load() {
		return fmt.Errorf("tier: %s: model handle: %w", m.path, errs.ErrClosed)
	}
	return nil
}

// pinnedFile is one open file of a Model and the key prefix of its tensors.
type pinnedFile struct {
	f       ModelFile
	release func()
	group   key.Group
}

// TensorInfo describes one tensor of a model.
type TensorInfo struct {
	Name  string
	DType string
	Shape []uint64 // shared: do not modify
	Bytes uint64   // logical bytes: little-endian, row-major
	// File is the file that holds the tensor: the model's own path, or a
	// shard of a sharded checkpoint.
	File string

	file int    // index in Model.files
	key  string // its cache key
}

// Model opens the model at path: a model file of any format package loader
// reads, a sharded safetensors checkpoint (its index, or the directory
// holding it), whose shards are checked against the index, or a name that
// package resolve knows (hf:ORG/NAME[@REV], ollama:NAME[:TAG]). Close it when
// done: it holds its files open.
func (c *Cache) Model(ctx context.Context, path string) (*Model, error) {
	if err := c.enter(); err != nil {
		return nil, err
	}
	defer c.exit()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	path, err := resolve.Name(path)
	if err != nil {
		return nil, err
	}
	id, err := c.origin.Stat(path)
	if err != nil {
		if m, cerr := c.cachedModel(path); cerr == nil {
			return m, nil
		}
		return nil, err
	}
	m := &Model{c: c, path: id.Path, byName: map[string]int{}}
	ok := false
	defer func() {
		if !ok {
			m.Close()
		}
	}()
	if !sharded(id) {
		if err := m.pin(id); err != nil {
			return nil, err
		}
	} else {
		idx, ip, err := c.shardIndexOf(id)
		if err != nil {
			return nil, err
		}
		m.path = ip
		for _, shard := range idx.Shards {
			sid, err := c.origin.Stat(filepath.Join(filepath.Dir(ip), shard))
			if err != nil {
				return nil, fmt.Errorf("tier: %s: shard %s: %w", ip, shard, err)
			}
			if err := m.pin(sid); err != nil {
				return nil, fmt.Errorf("tier: %s: shard %s: %w", ip, shard, err)
			}
		}
		if err := m.checkShards(idx, ip); err != nil {
			return nil, err
		}
	}
	m.version = m.versionOf()
	ok = true
	return m, nil
}

// pin opens the file of version id (a newer one if it changed since) and
// adds its tensors.
func (m *Model) pin(id loader.Identity) error {
	f, release, err := m.c.acquire(id)
	if err != nil {
		return err
	}
	pf := &pinnedFile{f: f, release: release}
	m.files = append(m.files, pf)
	if pf.group, err = m.c.groupOf(f.Identity()); err != nil {
		return err
	}
	return m.add(pf)
}

// add lists the tensors of pf, a file of the model, in storage order.
func (m *Model) add(pf *pinnedFile) error {
	ts := slices.Clone(pf.f.Tensors())
	slices.SortStableFunc(ts, func(a, b loader.TensorInfo) int { return cmp.Compare(a.Offset, b.Offset) })
	for _, t := range ts {
		if _, dup := m.byName[t.Name]; dup {
			return fmt.Errorf("tier: %s: %w: tensor %s is in two files", m.path, errs.ErrInvalidModel, errs.Quote(t.Name))
		}
		m.byName[t.Name] = len(m.tensors)
		m.tensors = append(m.tensors, TensorInfo{
			Name: t.Name, DType: string(t.DType), Shape: t.Shape, Bytes: t.Length,
			File: pf.f.Path(), file: len(m.files) - 1, key: pf.group.Key(t.Name),
		})
		m.bytes += t.Length
	}
	return nil
}

// checkShards checks that each shard holds exactly the tensors the index
// places in it, as loader.OpenSharded does.
func (m *Model) checkShards(idx *loader.ShardIndex, ip string) error {
	for _, t := range m.tensors {
		shard := filepath.Base(t.File)
		if want := idx.WeightMap[t.Name]; want != shard {
			return fmt.Errorf("tier: %s: %w: shard %s holds tensor %s, which the index places in %s",
				ip, errs.ErrInvalidModel, shard, errs.Quote(t.Name), errs.Quote(want))
		}
	}
	for name, shard := range idx.WeightMap {
		if _, ok := m.byName[name]; !ok {
			return fmt.Errorf("tier: %s: %w: tensor %s is not in its shard %s", ip, errs.ErrInvalidModel, errs.Quote(name), shard)
		}
	}
	return nil
}

// versionOf spells the version of every file: for one file its identity
// (or content digest), for a checkpoint a digest of its shards' ones.
func (m *Model) versionOf() string {
	if len(m.files) == 1 {
		if g := m.files[0].group; g.Kind == key.DigestTensor {
			return g.Head
		}
		return m.files[0].group.Version
	}
	h := sha256.New()
	for _, pf := range m.files {
		h.Write([]byte(pf.group.Prefix()))
	}
	return "shards:" + hex.EncodeToString(h.Sum(nil)[:16])
}

// Path is the model's absolute path: the file, or a checkpoint's index.
func (m *Model) Path() string { return m.path }

// CachedOnly reports that the model's file could not be read (gone, or its
// origin down) and the handle serves the version L2 holds whole: every
// tensor from the cache, listed in name order.
func (m *Model) CachedOnly() bool { return m.cachedOnly }

// Version names the version of the model's files that the handle holds:
// equal for two handles exactly when every file is the same version. It is
// the file's size:mtime:ctime:dev:inode, its content digest with
// Options.ContentDigest, or a digest of the shards' versions.
func (m *Model) Version() string { return m.version }

// Tensors lists the model's tensors in storage order (file by file, by
// offset): the order in which reading them is sequential. The slice is
// shared; do not modify it.
func (m *Model) Tensors() []TensorInfo { return m.tensors }

// Bytes is the logical size of every tensor together.
func (m *Model) Bytes() uint64 { return m.bytes }

// Info describes the named tensor.
func (m *Model) Info(name string) (TensorInfo, bool) {
	i, ok := m.byName[name]
	if !ok {
		return TensorInfo{}, false
	}
	return m.tensors[i], true
}

// lookup is the named tensor and its file, or errs.ErrNotFound.
func (m *Model) lookup(name string) (*TensorInfo, *pinnedFile, error) {
	i, ok := m.byName[name]
	if !ok {
		return nil, nil, fmt.Errorf("tier: %s: tensor %s: %w", m.path, errs.Quote(name), errs.ErrNotFound)
	}
	ti := &m.tensors[i]
	return ti, m.files[ti.file], nil
}

// Tensor returns the named tensor from the fastest tier that has it, as
// Cache.Tensor does, of the version the handle holds.
func (m *Model) Tensor(ctx context.Context, name string) (t *Tensor, err error) {
	c := m.c
	// As for values, an L1 hit takes no lock; loads count as operations
	// for Close on their own (flight).
	if c.shut.Load() {
		return nil, fmt.Errorf("tier: %w", errs.ErrClosed)
	}
	req := c.begin(&c.tensors)
	defer func() { req.end(servedBy(t), err) }()
	if err := m.usable(); err != nil {
		return nil, err
	}
	ti, pf, err := m.lookup(name)
	if err != nil {
		return nil, err
	}
	return c.read(ctx, &req, ti.key, name, func() *read {
		return &read{key: ti.key, where: pf.f.Path(), name: name, file: pf.f, wait: true, keep: true, detach: true}
	})
}

// Close releases the model's files. Tensors returned earlier stay valid.
func (m *Model) Close() error {
	m.closeOnce.Do(func() {
		m.closed.Store(true)
		for _, pf := range m.files {
			pf.release()
		}
	})
	return nil
}

// WarmOptions configures Model.Warm.
type WarmOptions struct {
	// Progress, if set, is called once before any tensor with the totals
	// (Tensor empty), then once per tensor as it is stored or found stored,
	// from several goroutines at once.
	Progress func(WarmProgress)
	// Parallel is how many tensors are read and encoded at once; default
	// GOMAXPROCS.
	Parallel int
}

// WarmProgress reports one step of Model.Warm.
type WarmProgress struct {
	Tensor string // "" for the first call, which carries the totals alone
	Bytes  uint64 // the tensor's logical bytes
	Stored bool   // written now (false: L2 held it already)

	TotalTensors int
	TotalBytes   uint64
}

// Warm writes every tensor of the model to L2, skipping those it already
// holds, and returns when all are stored or at the first error; what was
// stored before an error stays stored.
func (m *Model) Warm(ctx context.Context, opts *WarmOptions) (*WarmResult, error) {
	c := m.c
	if err := c.enter(); err != nil {
		return nil, err
	}
	defer c.exit()
	if c.l2 == nil {
		return nil, fmt.Errorf("tier: Warm needs an L2 directory (Options.Dir)")
	}
	if err := m.usable(); err != nil {
		return nil, err
	}
	if opts == nil {
		opts = &WarmOptions{}
	}
	// Close cancels a Warm in progress.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	defer context.AfterFunc(c.ctx, stop)()
	res := &WarmResult{Path: m.path, Tensors: len(m.tensors), LogicalBytes: m.bytes}
	progress := func(WarmProgress) {}
	if opts.Progress != nil {
		progress = opts.Progress
	}
	progress(WarmProgress{TotalTensors: len(m.tensors), TotalBytes: m.bytes})
	var mu sync.Mutex // guards res's counters
	err := m.each(ctx, opts.Parallel, func(t *TensorInfo) error {
		pf := m.files[t.file]
		stored, err := c.warmOne(ctx, pf, t, false)
		if err != nil {
			return err
		}
		mu.Lock()
		if stored {
			res.Written++
			res.WrittenBytes += t.Bytes
		} else {
			res.Skipped++
		}
		mu.Unlock()
		progress(WarmProgress{Tensor: t.Name, Bytes: t.Bytes, Stored: stored,
			TotalTensors: len(m.tensors), TotalBytes: m.bytes})
		return nil
	})
	if err == nil && !m.cachedOnly {
		// L2 holds every tensor: the model can be served if its file goes.
		for _, pf := range m.files {
			c.markComplete(pf.f.Identity(), len(pf.f.Tensors()))
		}
	}
	return res, err
}

// each calls fn for every tensor, parallel at once (default GOMAXPROCS),
// until the first error.
func (m *Model) each(ctx context.Context, parallel int, fn func(*TensorInfo) error) error {
	if parallel <= 0 {
		parallel = runtime.GOMAXPROCS(0)
	}
	// parallel workers taking the next tensor, not a goroutine per tensor:
	// each new goroutine grows its stack in the walk, which cost a Warm of
	// a model L2 holds 18% more CPU than the work itself.
	g, gctx := errgroup.WithContext(ctx)
	var next atomic.Int64
	for range min(parallel, len(m.tensors)) {
		g.Go(func() error {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(m.tensors) {
					return nil
				}
				if err := gctx.Err(); err != nil {
					return err
				}
				if err := fn(&m.tensors[i]); err != nil {
					return err
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// warmOne writes one tensor of pf to L2 unless L2 holds it, and says
// whether it wrote it: from L3 if the fleet has it (else
// read from the file and written to L3 too); tensors past StreamAbove
// are streamed into L2 and do not go through L3. A write a load left for
// after it (later) reads the file it has at hand, not L3, and is waited
// for by Close, not cancelled.
//
// ctx ends a wait for another machine's read of the tensor.
func (c *Cache) warmOne(ctx context.Context, pf *pinnedFile, t *TensorInfo, later bool) (bool, error) {
	if _, err := c.l2.Stat(t.key); err == nil {
		return false, nil // as the walk would find, without it
	}
	var req request // warming is not a request
	f, err := c.walk(ctx, &req, &read{key: t.key, where: pf.f.Path(), name: t.Name, file: pf.f, sink: toL2,
		wait: true, lookup: later, afterClose: later})
	if err != nil {
		return false, err
	}
	return f.stored, nil
}
