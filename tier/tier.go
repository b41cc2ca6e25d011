package tier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/internal/key"
	"github.com/modelcache/modelcache/l1"
	"github.com/modelcache/modelcache/l2"
	"github.com/modelcache/modelcache/l3"
	"github.com/modelcache/modelcache/loader"
	"github.com/modelcache/modelcache/resolve"
)

// Defaults for Options.
const (
	DefaultMemoryBytes      = 1 << 30
	DefaultWriteBehindBytes = 256 << 20
)

// records is what tier keeps in L2 beside the entries (l2.Records): its
// lifetime counters, the key mode, content digests and complete versions.
type records interface {
	Get(prefix string) (map[string][]byte, error)
	Set(name string, value []byte) error
	Add(deltas map[string]uint64) error
	Counts() (map[string]uint64, error)
}

// Options configures a Cache.
type Options struct {
	// Dir is the L2 directory. Empty means no L2: RAM and source only.
	Dir string
	// MemoryBytes is the L1 budget; default DefaultMemoryBytes.
	MemoryBytes int64
	// MemoryPolicy is L1's eviction policy; default l1.TinyLFU.
	MemoryPolicy l1.Policy
	// DiskBytes is the L2 budget for stored bytes; 0 means no limit.
	DiskBytes int64
	// WriteBehindBytes bounds the tensor bytes queued for L2 writes;
	// default DefaultWriteBehindBytes.
	WriteBehindBytes int64
	// ChunkSize is L2's chunk size; default serialize.DefaultChunk.
	ChunkSize int
	// TTL is how long an L2 entry lives; 0 means until evicted.
	TTL time.Duration
	// EncryptionKey encrypts L2 at rest (AES, 16, 24 or 32 bytes).
	EncryptionKey []byte
	// ReserveBytes is the free space L2 writes leave on the file system;
	// see l2.Options.ReserveBytes.
	ReserveBytes int64
	// ContentDigest keys tensors by the BLAKE3 digest of their file's
	// content instead of by its path and version, so that copies of one
	// file at different paths (every replica's own download, a model under
	// two names) share their cached tensors. Each version of a file is
	// hashed once, when it is first read (2.6–2.8 GB/s here), and its digest is
	// kept in L2 so that a restart does not hash it again. A directory keeps
	// the mode it was created with: opening it the other way logs a warning
	// and keys as the directory does.
	ContentDigest bool
	// L2Optional makes an L2 directory that cannot be used (held by another
	// process, read-only, on a full disk, unreadable) a warning instead of
	// an error: the cache runs on L1 and the source alone, and
	// Stats.L2Unavailable says why. Options that no directory could satisfy
	// and a wrong encryption key are errors still.
	L2Optional bool
	// L3, if set, is the fleet tier: Redis (one node or a cluster) shared
	// by every machine of a fleet. Reads go L1, L2, L3, then the source;
	// one machine reads an entry from the origin while the others wait for
	// it. See package l3 and docs/L3.md.
	L3 *l3.Options
	// L3WriteBytes bounds the bytes queued for L3 writes; default
	// DefaultWriteBehindBytes.
	L3WriteBytes int64
	// MaxValueBytes bounds the values read from L3 (default
	// DefaultMaxValueBytes, 4 GiB): a meta in Redis that announces a longer
	// one is a damaged entry, a miss, and nothing is allocated for it.
	// (Tensors are bounded by what their file says.)
	MaxValueBytes uint64
	// Origin is where model files are read from on a miss; default
	// LocalFiles, the local file system.
	Origin Origin
	// Clock tells the time for TTLs and rate-limited warnings; default
	// time.Now.
	Clock func() time.Time
	// Logger receives warnings (corrupt entries, failed writes); default
	// slog.Default().
	Logger *slog.Logger
	// MaxNamespaceMeters is how many namespaces are measured by name (in
	// Stats, the Prometheus labels and the lifetime counters): the
	// busiest; the others are measured together. Default
	// DefaultMaxNamespaceMeters (64); negative: none.
	MaxNamespaceMeters int
}

func (o *Options) validate() error {
	if o.MemoryBytes < 0 || o.DiskBytes < 0 || o.WriteBehindBytes < 0 {
		return errors.New("tier: budgets must not be negative")
	}
	return nil
}

// Tier names where a tensor was served from.
type Tier uint8

const (
	Source Tier = iota // the model file
	L1                 // RAM (L1, or the queue of writes to L2)
	L2                 // local disk
	// Shared: the reader joined another reader's load of the same tensor
	// (from L2 or the source), or another caller's fill of the same value,
	// and got its result; it caused no read.
	Shared
	Fill // a value computed by the fill function of Cache.Get
	L3   // the fleet tier (Redis), shared by every machine
)

func (t Tier) String() string {
	switch t {
	case L1:
		return "l1"
	case L2:
		return "l2"
	case Shared:
		return "shared"
	case Fill:
		return "fill"
	case L3:
		return "l3"
	}
	return "source"
}

// Tensor is one tensor's description and bytes.
type Tensor struct {
	Name     string
	DType    string
	Shape    []uint64 // shared: do not modify
	ServedBy Tier
	data     []byte
}

// Bytes returns the tensor's bytes. They are shared with the cache and with
// every other reader of this tensor: writing to them corrupts what all of
// them see. Copy before modifying.
func (t *Tensor) Bytes() []byte { return t.data }

// Stats are counters since Open and the tiers' own.
type Stats struct {
	L1 l1.Stats
	L2 l2.Stats // zero without L2
	L3 L3Stats  // zero without L3
	// L2Unavailable is why the cache runs without the L2 directory it was
	// given (Options.L2Optional); empty when L2 is in use or none was given.
	L2Unavailable string

	// Every read of a tensor (Tensor, a tensor of Load, OpenTensor)
	// counts once in Requests and once in one of L1Hits, L2Hits, L3Hits,
	// SourceLoads, SharedLoads and Failed, as its ServedBy says (or its
	// error): they add up to Requests.
	Requests    uint64 // reads of tensors
	L1Hits      uint64 // served from RAM (WriteBehindHits among them)
	L2Hits      uint64 // read from L2 for this call
	L3Hits      uint64 // read from the fleet tier for this call
	SourceLoads uint64 // read from the model file for this call
	SharedLoads uint64 // joined another call's load of the same tensor (ServedBy Shared)
	Failed      uint64 // returned an error (not found, invalid model, cancelled, closed)

	WriteBehindHits uint64 // served from the queue of L2 writes, after L1 dropped the tensor
	WarmLoads       uint64 // tensors Warm read from model files
	L2Errors        uint64 // L2 reads that failed other than by a miss, served from the source instead
	Removed         uint64 // L2 entries removed because their file changed, vanished or was evicted

	WriteBehindDropped uint64 // L2 writes skipped because the queue was full
	WriteBehindErrors  uint64 // L2 writes that failed

	// Measured are the hit rates and average access times (per tier and
	// in all) of this process's requests: of tensors (Requests to Failed
	// above, with latencies) and of values (Cache.Get), in all and by
	// namespace.
	Measured
	// LifetimeMeasured are those of every process that used the cache
	// directory, kept as Lifetime is; without L2, this process's.
	LifetimeMeasured Measured

	// Lifetime counts reads since the cache directory was created: the
	// counts of every process that used it, added up at each Close, plus
	// this one's so far. Without L2 it is this process's alone.
	Lifetime Counters
}

// Counters are read counts per tier (see Stats for what each counts).
type Counters struct {
	Requests    uint64 `json:"requests"`
	L1Hits      uint64 `json:"l1_hits"`
	L2Hits      uint64 `json:"l2_hits"`
	L2Misses    uint64 `json:"l2_misses"`
	L3Hits      uint64 `json:"l3_hits"`
	SourceLoads uint64 `json:"source_loads"`
	SharedLoads uint64 `json:"shared_loads"`
	Failed      uint64 `json:"failed"`
	WarmLoads   uint64 `json:"warm_loads"`
	L2Errors    uint64 `json:"l2_errors"`
}

// fields lists the counters by their names in L2 (and JSON).
func (c *Counters) fields() map[string]*uint64 {
	return map[string]*uint64{
		"requests": &c.Requests, "l1_hits": &c.L1Hits, "l2_hits": &c.L2Hits, "l2_misses": &c.L2Misses, "l3_hits": &c.L3Hits,
		"source_loads": &c.SourceLoads, "shared_loads": &c.SharedLoads, "failed": &c.Failed,
		"warm_loads": &c.WarmLoads, "l2_errors": &c.L2Errors,
	}
}

func (c Counters) asMap() map[string]uint64 {
	m := map[string]uint64{}
	for k, p := range c.fields() {
		m[k] = *p
	}
	return m
}

func countersFrom(m map[string]uint64) Counters {
	var c Counters
	for k, p := range c.fields() {
		*p = m[k]
	}
	return c
}

func (c Counters) plus(o Counters) Counters {
	of := o.fields()
	for k, p := range c.fields() {
		*p += *of[k]
	}
	return c
}

type l1Value struct {
	dtype string
	shape []uint64
	data  []byte
	// Values only: when stored and when it expires (Unix nanoseconds; 0:
	// never).
	stored, expires int64
}

// Cache composes the tiers. It is safe for concurrent use.
type Cache struct {
	log   *slog.Logger
	l1    *l1.Cache[string, *l1Value]
	l2    *l2.Store // nil without L2
	l3    *l3.Store // nil without L3
	l3wb  *writeBehind
	fleet fleetStats
	// background runs followEpochs until Close.
	background sync.WaitGroup
	rec        records // L2's records, with L2
	files      *fileTable
	origin     Origin
	wb         *writeBehind
	// indexes caches parsed shard indexes by index path, with the identity
	// they were parsed at.
	indexes sync.Map // string -> *shardIndex
	// With Options.ContentDigest: digests by identity, and one hashing of
	// a version at a time.
	digest  bool
	digests sync.Map // identity string -> loader.Digest
	hashing singleflight.Group
	reads   flights // the walk's loads in progress
	// l1Bytes is L1's budget; promoting serializes the L2 writes that
	// loads leave for after they finish.
	l1Bytes    int64
	promoting  sync.Mutex
	promotions sync.WaitGroup // promoteLater's writes, for Flush

	// mu guards closed; ops counts the calls and loads in progress, which
	// Close waits for (up to closeWait) after cancelling ctx.
	mu     sync.Mutex
	closed bool
	// shut is closed, read without the lock by L1 hits, which need not
	// count as operations: they touch nothing Close closes.
	shut   atomic.Bool
	ops    sync.WaitGroup
	ctx    context.Context // cancelled by Close: loads and Warm stop early
	cancel context.CancelFunc
	warn   *rateLimitedLog

	l2Unavailable string // why Options.Dir is not in use (L2Optional)

	// tensors and values count and time their requests.
	tensors, values meter
	// namespaces holds every namespace of values kept (configured, or
	// holding values): string -> *nsState; nsm their meters.
	namespaces                                sync.Map
	nsm                                       nsMeters
	unmeasured                                bool          // no meter counts or times (benchmarks of their cost)
	ttl                                       time.Duration // Options.TTL
	maxValue                                  uint64        // Options.MaxValueBytes
	now                                       func() time.Time
	wbHits, warmLoads, l2Errors, staleRemoved atomic.Uint64
}

// Open opens a cache; with opts.Dir set it opens (or creates) the L2 store
// there, which fails with errs.ErrLocked if another process uses it.
func Open(opts *Options) (*Cache, error) {
	if opts == nil {
		opts = &Options{}
	}
	if err := opts.validate(); err != nil {
		return nil, err
	}
	c := &Cache{log: opts.Logger, origin: opts.Origin, digest: opts.ContentDigest, ttl: opts.TTL, now: opts.Clock}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.origin == nil {
		c.origin = LocalFiles{}
	}
	c.files = newFileTable(c.origin)
	c.nsm.init(opts.MaxNamespaceMeters)
	c.warn = newRateLimitedLog(c.log, warnInterval)
	if opts.Clock != nil {
		c.warn.now = opts.Clock
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	mem := opts.MemoryBytes
	if mem == 0 {
		mem = DefaultMemoryBytes
	}
	var err error
	c.l1Bytes = mem
	// L1 does not count hits: the meters do, by kind and namespace, and
	// Stats adds them up.
	if c.l1, err = l1.New(&l1.Options[string, *l1Value]{MaxBytes: mem, Policy: opts.MemoryPolicy,
		Group: key.Owner, GroupLimit: c.namespaceShare}); err != nil {
		return nil, err
	}
	c.maxValue = opts.MaxValueBytes
	if c.maxValue == 0 {
		c.maxValue = DefaultMaxValueBytes
	}
	if opts.L3 != nil {
		lo := *opts.L3
		if lo.Clock == nil {
			lo.Clock = opts.Clock // expiries are checked on the cache's clock
		}
		if c.l3, err = l3.Open(&lo); err != nil {
			return nil, err
		}
		n := opts.L3WriteBytes
		if n == 0 {
			n = DefaultWriteBehindBytes
		}
		c.l3wb = newWriteBehind("l3", nil, n, c.warn)
		c.background.Go(c.followEpochs)
	}
	if opts.Dir != "" {
		lo := &l2.Options{
			Dir: opts.Dir, MaxBytes: opts.DiskBytes, ChunkSize: opts.ChunkSize, TTL: opts.TTL,
			EncryptionKey: opts.EncryptionKey, ReserveBytes: opts.ReserveBytes, Logger: c.log,
			Clock: opts.Clock,
		}
		if err := lo.Validate(); err != nil {
			return nil, err
		}
		c.l2, err = l2.Open(lo)
		if err != nil {
			if !opts.L2Optional || errors.Is(err, errs.ErrWrongKey) {
				return nil, err
			}
			c.l2Unavailable = err.Error()
			c.log.Warn("tier: running without the cache directory, reading model files directly", "dir", opts.Dir, "err", err)
			return c, nil
		}
		c.rec = c.l2.Records()
		if err := c.checkKeyMode(opts.Dir); err != nil {
			c.l2.Close()
			return nil, err
		}
		wbBytes := opts.WriteBehindBytes
		if wbBytes == 0 {
			wbBytes = DefaultWriteBehindBytes
		}
		c.wb = newWriteBehind("l2", c.l2, wbBytes, c.warn)
	}
	return c, nil
}

// Tensor returns the named tensor of the model file at path, from the
// fastest tier that has it. Errors wrap errs.ErrNotFound for a tensor the
// file does not have and errs.ErrInvalidModel for a malformed file.
func (c *Cache) Tensor(ctx context.Context, path, name string) (t *Tensor, err error) {
	if err := c.enter(); err != nil {
		return nil, err
	}
	defer c.exit()
	req := c.begin(&c.tensors)
	defer func() { req.end(servedBy(t), err) }()
	if path, err = resolve.Name(path); err != nil {
		return nil, err
	}
	id, err := c.origin.Stat(path)
	if err != nil {
		m, cerr := c.cachedModel(path)
		if cerr != nil {
			return nil, err
		}
		defer m.Close()
		ti, pf, err := m.lookup(name)
		if err != nil {
			return nil, err
		}
		return c.read(ctx, &req, ti.key, name, func() *read {
			return &read{key: ti.key, where: pf.f.Path(), name: name, file: pf.f, wait: true, keep: true, detach: true}
		})
	}
	if sharded(id) {
		// Route the name to its shard; the shard's own identity keys it.
		shard, err := c.shardOf(id, name)
		if err != nil {
			return nil, err
		}
		if id, err = c.origin.Stat(shard); err != nil {
			return nil, err
		}
	}
	key, err := c.keyOf(id, name)
	if err != nil {
		return nil, err
	}
	return c.read(ctx, &req, key, name, func() *read {
		return &read{key: key, where: id.Path, name: name, id: id, wait: true, keep: true, detach: true}
	})
}

// InRAM returns the named tensor of the model file at path if L1 holds it
// (counted as an L1 hit), and ok false otherwise, without reading anything:
// a server's fast path, which needs neither the file's index nor L2. A
// sharded checkpoint is never found here (its shard is found by parsing
// the index).
func (c *Cache) InRAM(ctx context.Context, path, name string) (*Tensor, bool) {
	if c.shut.Load() {
		return nil, false
	}
	path, err := resolve.Name(path)
	if err != nil {
		return nil, false
	}
	id, err := c.origin.Stat(path)
	if err != nil || sharded(id) {
		return nil, false
	}
	key, err := c.keyOf(id, name)
	if err != nil {
		return nil, false
	}
	req := c.begin(&c.tensors)
	v, ok := c.l1.Get(key)
	if !ok {
		return nil, false
	}
	req.hit()
	return &Tensor{Name: name, DType: v.dtype, Shape: v.shape, ServedBy: L1, data: v.data}, true
}

// read returns the tensor under key: from L1 without a walk (the hot
// path allocates nothing but the Tensor), else by the walk of the read mk
// makes.
func (c *Cache) read(ctx context.Context, req *request, key, name string, mk func() *read) (*Tensor, error) {
	if v, ok := c.l1.Get(key); ok {
		return &Tensor{Name: name, DType: v.dtype, Shape: v.shape, ServedBy: L1, data: v.data}, nil
	}
	r := mk()
	f, err := c.walk(ctx, req, r)
	if err != nil {
		return nil, err
	}
	return &Tensor{Name: r.name, DType: f.v.dtype, Shape: f.v.shape, ServedBy: f.by, data: f.v.data}, nil
}

// servedBy is t's ServedBy, for a request's end; t is nil on an error.
func servedBy(t *Tensor) Tier {
	if t == nil {
		return Source
	}
	return t.ServedBy
}

// closeWait bounds how long Close waits for calls and loads in progress
// once it has cancelled them; one reading a large tensor from a slow disk
// cannot stop halfway.
const closeWait = 10 * time.Second

// enter counts an operation in progress, or is ErrClosed once Close has
// begun; exit ends it.
func (c *Cache) enter() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("tier: %w", errs.ErrClosed)
	}
	c.ops.Add(1)
	return nil
}

func (c *Cache) exit() { c.ops.Done() }

// inRAM returns the tensor under key from L1 or, when L1 dropped it before
// its L2 write was done, from the queue of those writes (queued): the queue
// has its bytes, and reading the file again would queue it again.
func (c *Cache) inRAM(key string) (v *l1Value, queued, ok bool) {
	if v, ok := c.l1.Get(key); ok {
		return v, false, true
	}
	if c.wb != nil {
		if j, ok := c.wb.pending(key); ok {
			c.wbHits.Add(1)
			return &l1Value{dtype: j.dtype, shape: j.shape, data: j.data}, true, true
		}
	}
	return nil, false, false
}

// keepL1 offers v to L1, charged its bytes and its key's.
func (c *Cache) keepL1(key string, v *l1Value) {
	c.l1.Set(key, v, int64(len(v.data)+len(key)))
}

// l2Failed files an L2 read that did not succeed: a miss, or a failure
// (corrupt entries are already dropped by l2) counted and warned about, for
// the caller to read the file instead; or, when L2 is closed, the error to
// give up with.
func (c *Cache) l2Failed(req *request, err error, path, tensor string) error {
	switch {
	case errors.Is(err, errs.ErrNotFound):
		req.l2Missed()
	case errors.Is(err, errs.ErrClosed):
		return err
	default:
		c.l2Errors.Add(1)
		c.warn.Warn("tier: L2 read failed, reading the source", "path", path, "tensor", tensor, "err", err)
	}
	return nil
}

// acquire opens (or shares) the file of version id. The first time this
// process opens a version, L2 entries of older versions of the same path are
// removed: they can never be read again.
func (c *Cache) acquire(id loader.Identity) (ModelFile, func(), error) {
	f, release, opened, err := c.files.acquire(id)
	if err == nil && opened && c.l2 != nil && !c.digest {
		current := key.File(f.Identity())
		if _, rerr := c.removeVersions(key.FileTensor, f.Path(), func(g key.Group) bool { return g != current }); rerr != nil && !errors.Is(rerr, errs.ErrClosed) {
			c.warn.Warn("tier: removing entries of older versions failed", "path", f.Path(), "err", rerr)
		}
	}
	return f, release, err
}

// DescribeKey spells an entry's key for messages: "PATH: tensor NAME",
// "blake3:HEX: tensor NAME" or "namespace NS: value KEY".
func DescribeKey(k string) string {
	g, name, ok := key.Parse(k)
	switch {
	case !ok:
		return "entry " + errs.Quote(k)
	case g.Kind == key.Value:
		return "namespace " + errs.Quote(g.Head) + ": value " + errs.Quote(name)
	}
	return g.Head + ": tensor " + errs.Quote(name)
}

// removeVersions removes the L2 entries with kind and head (every version
// of a file, a content, every epoch of a namespace) whose group drop says
// to, and returns how many.
func (c *Cache) removeVersions(kind key.Kind, head string, drop func(key.Group) bool) (int, error) {
	var stale []string
	err := c.l2.Range(key.HeadPrefix(kind, head), func(e *l2.EntryInfo) bool {
		if g, _, ok := key.Parse(e.Key); ok && g.Kind == kind && drop(g) {
			stale = append(stale, e.Key)
		}
		return true
	})
	if err != nil || len(stale) == 0 {
		return 0, err
	}
	if err := c.l2.Delete(stale...); err != nil {
		return 0, err
	}
	if kind != key.Value {
		c.staleRemoved.Add(uint64(len(stale)))
	}
	if kind == key.FileTensor {
		c.forgetComplete(head, drop)
	}
	return len(stale), nil
}

// GC removes L2 entries whose source file is gone or has changed, then
// evicts down to the disk budget and reclaims disk space. Entries keyed by
// content digest are never stale; they leave by the disk budget or Evict.
func (c *Cache) GC() error {
	if err := c.enter(); err != nil {
		return err
	}
	defer c.exit()
	if c.l2 == nil {
		return nil
	}
	paths := map[string]bool{}
	if err := c.l2.Range("", func(e *l2.EntryInfo) bool {
		if g, _, ok := key.Parse(e.Key); ok && g.Kind == key.FileTensor {
			paths[g.Head] = true
		}
		return true
	}); err != nil {
		return err
	}
	if err := c.gcDigests(); err != nil {
		return err
	}
	if err := c.gcValues(); err != nil {
		return err
	}
	for p := range paths {
		var current key.Group
		if id, err := c.origin.Stat(p); err == nil {
			current = key.File(id)
		}
		if _, err := c.removeVersions(key.FileTensor, p, func(g key.Group) bool { return g != current }); err != nil {
			return err
		}
	}
	return c.l2.GC()
}

// CachedTensor describes one tensor held in L2.
type CachedTensor struct {
	Path         string // the model file
	Version      string // its identity when cached: size:mtime:ctime:dev:inode
	Tensor       string
	DType        string
	Shape        []uint64
	LogicalBytes uint64
	StoredBytes  uint64
	Written      time.Time
}

// Cached calls fn for every tensor in L2, grouped by file, until fn returns
// false.
func (c *Cache) Cached(fn func(*CachedTensor) bool) error {
	if err := c.enter(); err != nil {
		return err
	}
	defer c.exit()
	if c.l2 == nil {
		return nil
	}
	return c.l2.Range("", func(e *l2.EntryInfo) bool {
		g, name, ok := key.Parse(e.Key)
		if !ok || g.Kind == key.Value {
			return true
		}
		return fn(&CachedTensor{
			Path: g.Head, Version: g.Version, Tensor: name, DType: e.DType, Shape: e.Shape,
			LogicalBytes: e.LogicalBytes, StoredBytes: e.StoredBytes, Written: e.Written,
		})
	})
}

// FileEntries describes the L2 entries of the current version of the file
// at path: how many, and their logical and stored bytes.
func (c *Cache) FileEntries(path string) (n int, logical, stored uint64, err error) {
	if err = c.enter(); err != nil {
		return 0, 0, 0, err
	}
	defer c.exit()
	if c.l2 == nil {
		return 0, 0, 0, nil
	}
	if path, err = resolve.Name(path); err != nil {
		return 0, 0, 0, err
	}
	paths, err := c.modelFiles(path)
	if err != nil {
		return 0, 0, 0, err
	}
	for _, p := range paths {
		id, err := c.origin.Stat(p)
		if err != nil {
			return 0, 0, 0, err
		}
		g, err := c.groupOf(id)
		if err != nil {
			return 0, 0, 0, err
		}
		err = c.l2.Range(g.Prefix(), func(e *l2.EntryInfo) bool {
			n++
			logical += e.LogicalBytes
			stored += e.StoredBytes
			return true
		})
		if err != nil {
			return 0, 0, 0, err
		}
	}
	return n, logical, stored, nil
}

// Repairs says what L2's Open found damaged in the directory and repaired,
// and what that cost, a line per finding; nil when nothing was.
func (c *Cache) Repairs() []string {
	if c.l2 == nil {
		return nil
	}
	return c.l2.Damage().Lines()
}

// Verify checks every L2 entry's checksums, drops damaged ones and reports
// each to bad. It returns how many entries it checked and how many were bad.
func (c *Cache) Verify(bad func(key string, err error)) (checked, corrupt int, err error) {
	if err = c.enter(); err != nil {
		return 0, 0, err
	}
	defer c.exit()
	if c.l2 == nil {
		return 0, 0, nil
	}
	return c.l2.Verify(bad)
}

// Evict removes every L2 and L1 entry of the file at path, whatever version,
// and returns how many L2 entries it removed. With Options.ContentDigest it
// removes the entries of the file's current content, which copies of it at
// other paths share.
func (c *Cache) Evict(path string) (int, error) {
	if err := c.enter(); err != nil {
		return 0, err
	}
	defer c.exit()
	path, err := resolve.Name(path)
	if err != nil {
		return 0, err
	}
	paths, err := c.modelFiles(path)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range paths {
		// Every version of the path, or the content's digest.
		abs, err := filepath.Abs(p)
		if err != nil {
			return n, err
		}
		g := key.Group{Kind: key.FileTensor, Head: abs}
		if c.digest {
			id, err := c.origin.Stat(abs)
			if err != nil {
				return n, err
			}
			if g, err = c.groupOf(id); err != nil {
				return n, err
			}
		}
		c.l1.DeleteGroup(key.OwnerOf(g.Kind, g.Head))
		if c.l2 == nil {
			continue
		}
		k, err := c.removeVersions(g.Kind, g.Head, func(key.Group) bool { return true })
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// WarmResult says what Warm did.
type WarmResult struct {
	Path         string
	Tensors      int    // tensors in the file
	Written      int    // tensors written to L2 now
	Skipped      int    // tensors L2 already held
	LogicalBytes uint64 // tensor bytes of the file
	WrittenBytes uint64 // logical bytes written now
}

// Warm writes every tensor of the model at path to L2, skipping those it
// already holds. path is a file of any format loader reads, or a sharded
// checkpoint (its index, or the directory holding it), whose shards are
// all checked against the index first. It returns when they are all stored or at the first error;
// what was stored before an error stays stored.
func (c *Cache) Warm(ctx context.Context, path string) (*WarmResult, error) {
	return c.WarmFunc(ctx, path, nil)
}

// WarmFunc is Warm that calls progress (if not nil, from several goroutines)
// with the logical bytes of each tensor as it is stored or found stored.
// Model.Warm reports tensor names and totals.
func (c *Cache) WarmFunc(ctx context.Context, path string, progress func(bytes uint64)) (*WarmResult, error) {
	if c.l2 == nil {
		return nil, errors.New("tier: Warm needs an L2 directory (Options.Dir)")
	}
	m, err := c.Model(ctx, path)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	var o WarmOptions
	if progress != nil {
		o.Progress = func(p WarmProgress) {
			if p.Tensor != "" {
				progress(p.Bytes)
			}
		}
	}
	return m.Warm(ctx, &o)
}

// Stats returns a snapshot of the counters.
func (c *Cache) Stats() Stats {
	t, v, byNS := c.sessionCounts()
	s := Stats{
		L1:     c.l1.Stats(),
		L1Hits: t.served[L1], L2Hits: t.served[L2], L3Hits: t.served[L3],
		SourceLoads: t.served[Source], SharedLoads: t.served[Shared], Failed: t.failed,
		WriteBehindHits: c.wbHits.Load(), WarmLoads: c.warmLoads.Load(),
		L2Errors: c.l2Errors.Load(), Removed: c.staleRemoved.Load(),
		Measured: measured(t, v, byNS),
	}
	s.Requests = s.Tensors.Requests
	s.L1.Hits = s.Tensors.Tiers[0].Hits + s.Values.Tiers[0].Hits
	s.LifetimeMeasured = s.Measured
	s.L3 = c.l3Stats()
	s.Lifetime = c.countersOf(t)
	s.L2Unavailable = c.l2Unavailable
	if c.l2 != nil {
		s.L2 = c.l2.Stats()
		s.WriteBehindDropped, s.WriteBehindErrors = c.wb.dropped.Load(), c.wb.failed.Load()
		if stored, err := c.rec.Counts(); err == nil {
			s.Lifetime = s.Lifetime.plus(countersFrom(stored))
			s.LifetimeMeasured = c.lifetimeMeasured(t, v, byNS, stored)
		}
	}
	return s
}

// Flush waits until every queued L2 and L3 write is done, and those loads
// left for after they finished.
func (c *Cache) Flush() {
	if c.wb != nil {
		c.wb.flush()
	}
	c.promotions.Wait()
	if c.l3wb != nil {
		c.l3wb.flush() // after the promotions, which may queue more
	}
}

// Close stops new calls (they return errs.ErrClosed), cancels the loads
// and Warm calls in progress and waits for them and for the L2 writes that
// finished loads left (up to 10 s in all: a read from a slow disk cannot
// stop halfway), finishes queued L2 writes, closes L2 and unmaps the model
// files. Nothing of the model files is mapped once it
// returns. Tensors returned earlier stay valid.
func (c *Cache) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.shut.Store(true)
	c.mu.Unlock()
	c.cancel()
	done := make(chan struct{})
	go func() { c.ops.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(closeWait):
		// What still runs meets closed tiers and files (ErrClosed), never
		// a closed Badger or an unmapped file.
		c.log.Warn("tier: closing with reads still in progress", "waited", closeWait)
	}
	var err error
	if c.wb != nil {
		c.wb.close()
	}
	if c.l3 != nil {
		c.background.Wait()
		c.l3wb.close()
		err = c.l3.Close()
	}
	if c.l2 != nil {
		if cerr := c.saveCounters(); cerr != nil {
			c.log.Warn("tier: saving read counters failed", "err", cerr)
		}
		err = errors.Join(err, c.l2.Close())
	}
	return errors.Join(err, c.files.closeAll())
}

// session is this process's read counts.
func (c *Cache) session() Counters { return c.countersOf(c.tensors.read()) }

// countersOf is the read counts of t, the tensor meter read.
func (c *Cache) countersOf(t counts) Counters {
	n := Counters{
		L1Hits: t.served[L1], L2Hits: t.served[L2], L3Hits: t.served[L3],
		L2Misses: t.l2Misses, SourceLoads: t.served[Source], SharedLoads: t.served[Shared],
		Failed: t.failed, WarmLoads: c.warmLoads.Load(), L2Errors: c.l2Errors.Load(),
	}
	n.Requests = n.L1Hits + n.L2Hits + n.L3Hits + n.SourceLoads + n.SharedLoads + n.Failed
	return n
}
