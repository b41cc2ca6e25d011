package l1

import (
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// EntryOverhead is what one entry costs beyond its value: the index slot,
// the policy's node, the key header, and its share of the policy's side
// structures (S3-FIFO's ghost keys, W-TinyLFU's sketch), measured by
// TestEntryOverhead and TestCache_RealMemoryWithinBudget and rounded up. It
// is charged to the budget.
const EntryOverhead = 192

// Policy names an eviction policy.
type Policy string

// The policies. TinyLFU is the default: it resists the scans that loading a
// model makes (every tensor once, in file order), which flush an LRU of the
// tensors that are hot, and, unlike S3-FIFO, keeps part of a loop of keys
// larger than the cache: on the public traces it is within a point of the
// best of five rival caches in 30 of 45 cells and at most 4.6 points behind,
// where S3-FIFO trails by up to 34 (docs/BENCHMARKS.md). S3FIFO's hits take
// no lock and are 2-4x cheaper.
const (
	LRU    Policy = "lru"    // least recently used
	FIFO   Policy = "fifo"   // first in, first out
	LFU    Policy = "lfu"    // least frequently used, counts halved as they age
	S3FIFO Policy = "s3fifo" // S3-FIFO (Yang et al., SOSP 2023): small FIFO, main FIFO with reinsertion, ghost keys
	// TinyLFU is W-TinyLFU: an LRU window, then admission by a frequency sketch into an SLRU.
	TinyLFU Policy = "tinylfu"
	// GDSF is GreedyDual-Size-Frequency: frequency per byte, aged. It keeps
	// small entries over large ones, for the most hits per byte of budget,
	// at the cost of bytes served (docs/BENCHMARKS.md).
	GDSF Policy = "gdsf"
)

// Policies lists the policies, for flags and tests.
var Policies = []Policy{TinyLFU, S3FIFO, LRU, FIFO, LFU, GDSF}

// Options configures a Cache.
type Options[K comparable, V any] struct {
	// MaxBytes is the budget: the sum of admitted sizes plus EntryOverhead
	// per entry never exceeds it. Required, > 0.
	MaxBytes int64
	// Policy chooses what to evict; default TinyLFU.
	Policy Policy
	// MaxEntryFraction: an entry larger than this fraction of MaxBytes is
	// not admitted (Set returns false), so that one huge value cannot flush
	// the cache. Default 0.5; 1 admits anything that fits.
	MaxEntryFraction float64
	// ExcludeOverhead charges entries their given size only, without
	// EntryOverhead: for simulations that count entries or trace bytes.
	ExcludeOverhead bool
	// CountHits makes Stats count hits. Off, a hit writes no shared memory
	// but its entry's frequency bits (once saturated, none), so hits scale
	// with cores; on, every hit also increments a counter, which costs
	// about 6 ns on two contending cores (docs/BENCHMARKS.md). Otter and
	// Caffeine make the same choice. Misses are always counted.
	CountHits bool
	// Hash, if set, replaces the cache's hash of keys, which is seeded at
	// random per cache (and per process), and makes the cache
	// deterministic: every decision (where the index puts a key, what the
	// sketch and the ghost keys remember, the order in which the policy sees
	// hits) then follows from the order of calls alone and repeats exactly
	// from run to run, for tests and trace simulations. Hits then reach the
	// policy at once, under its lock, instead of through per-goroutine
	// buffers whose drain order depends on which stack each Get ran on; for
	// LRU, LFU, TinyLFU and GDSF that makes concurrent hits contend. Hash
	// must spread keys over all 64 bits. Leave it nil where others choose
	// the keys: a hash they know lets them make keys collide.
	Hash func(K) uint64
	// OnEvict, if set, is called for every entry evicted to make room (not
	// for Delete or replacement), after the cache's locks are released, on
	// the goroutine that called Set.
	OnEvict func(key K, value V, size int64)
	// Group, if set, names the group of a key ("" for none). Entries of a
	// group can be deleted together (DeleteGroup) without visiting the
	// others, and a group can be held to a share of the budget
	// (GroupLimit). It is called under the cache's lock: it must be quick.
	Group func(key K) string
	// GroupLimit, if set, is the most bytes (charged as by MaxBytes) the
	// entries of a group may hold; 0 means no limit of its own. A Set that
	// would take a group past it evicts that group's oldest entries (in
	// order of insertion) first, never another group's, so that one group
	// cannot flush the others. It is called under the cache's lock.
	GroupLimit func(group string) int64
}

func (o *Options[K, V]) validate() error {
	if o == nil || o.MaxBytes <= 0 {
		return errors.New("l1: MaxBytes must be > 0")
	}
	switch o.Policy {
	case "", LRU, FIFO, LFU, S3FIFO, TinyLFU, GDSF:
	default:
		return fmt.Errorf("l1: unknown policy %q (want one of %v)", o.Policy, Policies)
	}
	if o.MaxEntryFraction < 0 || o.MaxEntryFraction > 1 {
		return fmt.Errorf("l1: MaxEntryFraction %v outside [0, 1]", o.MaxEntryFraction)
	}
	return nil
}

// Stats are counters since the cache was created.
type Stats struct {
	Hits, Misses, Evictions uint64 // Hits only with Options.CountHits
	Rejected                uint64 // Sets refused because the entry is too large
	Entries                 int
	Bytes                   int64 // charged bytes, overhead included
	MaxBytes                int64
}

const numShards = 64 // index shards; a power of two

// counterStripe holds hit and miss counts on cache lines of their own, so
// that readers on different cores do not contend for them; 128 bytes, as the
// adjacent-line prefetcher moves lines in pairs.
type counterStripe struct {
	hits, misses atomic.Uint64
	_            [112]byte
}

// Cache is a byte-bounded cache with a pluggable eviction policy. It is safe
// for concurrent use. Lookups take no lock (see index); under S3FIFO and
// FIFO a hit takes no lock of the policy either (S3-FIFO only bumps an
// entry's saturating counter), so hits scale with cores. LRU, LFU, TinyLFU
// and GDSF reorder on every hit: a hit is recorded in its goroutine's read
// buffer with one compare-and-swap, and the policy applies buffered hits
// under its lock before each Set (see reads.go). No goroutines, no clock;
// with Options.Hash, decisions depend on nothing but the order of calls.
type Cache[K comparable, V any] struct {
	seed     maphash.Seed
	hashFn   func(K) uint64
	idx      index[K, V]
	counters [numShards]counterStripe
	onEvict  func(K, V, int64)
	groupOf  func(K) string
	limitOf  func(string) int64
	maxEntry int64
	overhead int64              // charged per entry: EntryOverhead, or 0
	hitLock  bool               // the policy must see hits under mu
	reads    *readBuffers[K, V] // where hits wait for mu: hitLock without Options.Hash; 12 KiB
	countHit bool

	// mu guards pol and everything reachable from it (queues, used bytes,
	// every entry's links).
	mu     sync.Mutex
	pol    policy[K, V]
	groups map[string]*group[K, V]

	evictions, rejected atomic.Uint64
}

// New returns an empty cache.
func New[K comparable, V any](opts *Options[K, V]) (*Cache[K, V], error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	frac := opts.MaxEntryFraction
	if frac == 0 {
		frac = 0.5
	}
	c := &Cache[K, V]{seed: maphash.MakeSeed(), hashFn: opts.Hash, onEvict: opts.OnEvict, countHit: opts.CountHits, maxEntry: int64(float64(opts.MaxBytes) * frac), overhead: EntryOverhead,
		groupOf: opts.Group, limitOf: opts.GroupLimit, groups: map[string]*group[K, V]{}}
	if opts.ExcludeOverhead {
		c.overhead = 0
	}
	c.idx.init()
	switch opts.Policy {
	case LRU:
		c.pol, c.hitLock = newLRU[K, V](opts.MaxBytes), true
	case FIFO:
		c.pol = newFIFO[K, V](opts.MaxBytes)
	case LFU:
		c.pol, c.hitLock = newLFU[K, V](opts.MaxBytes), true
	case S3FIFO:
		c.pol = newS3FIFO[K, V](opts.MaxBytes)
	case GDSF:
		c.pol, c.hitLock = newGDSF[K, V](opts.MaxBytes), true
	default:
		c.pol, c.hitLock = newWTinyLFU[K, V](opts.MaxBytes), true
	}
	if c.hitLock && c.hashFn == nil {
		c.reads = new(readBuffers[K, V])
	}
	return c, nil
}

func (c *Cache[K, V]) hash(key K) uint64 {
	if c.hashFn != nil {
		return c.hashFn(key)
	}
	return maphash.Comparable(c.seed, key)
}

// stripe picks the calling goroutine's counter stripe. By key, goroutines
// hitting one hot key would share a stripe and move its cache line between
// their cores on every hit; at random, about half the increments on two
// cores did; a per-processor stripe (a sync.Pool token) cost more than it
// saved.
func (c *Cache[K, V]) stripe() *counterStripe {
	return &c.counters[stripeOf(numShards)]
}

// Contains reports whether key is cached, without counting a hit or a miss
// or telling the policy.
func (c *Cache[K, V]) Contains(key K) bool {
	return c.idx.get(c.hash(key), key) != nil
}

// Get returns the value for key and records the hit with the policy.
func (c *Cache[K, V]) Get(key K) (V, bool) {
	e := c.idx.get(c.hash(key), key)
	if e == nil {
		c.stripe().misses.Add(1)
		var zero V
		return zero, false
	}
	if c.countHit {
		c.stripe().hits.Add(1)
	}
	switch {
	case c.reads != nil:
		if c.reads.add(e) && c.mu.TryLock() {
			c.drainReads()
			c.mu.Unlock()
		}
	case c.hitLock:
		c.mu.Lock()
		c.hitLocked(e)
		c.mu.Unlock()
	default:
		e.touch()
	}
	return e.value, true
}

// drainReads hands the buffered hits to the policy; c.mu is held. It runs
// before every change, so that the policy counts hits on entries about to
// go; entries removed since their hit was recorded are skipped.
func (c *Cache[K, V]) drainReads() {
	if c.reads != nil {
		c.reads.drain(c.hitLocked)
	}
}

// hitLocked tells the policy of a hit on e unless e has left the cache
// since; c.mu is held.
func (c *Cache[K, V]) hitLocked(e *entry[K, V]) {
	if !e.gone.Load() {
		c.pol.hit(e)
	}
}

// Set stores value under key, charged size bytes plus EntryOverhead, and
// evicts to stay within the budget. It returns false, storing nothing, when
// the entry is larger than MaxEntryFraction of the budget; an older value
// under key is then removed, so a stale value is never left behind.
func (c *Cache[K, V]) Set(key K, value V, size int64) bool {
	charged := max(size, 0) + c.overhead
	h := c.hash(key)
	var evicted []*entry[K, V]
	c.mu.Lock()
	c.drainReads()
	if old := c.idx.remove(h, key); old != nil {
		c.removeLocked(old)
	}
	gname, limit := "", int64(0)
	if c.groupOf != nil {
		if gname = c.groupOf(key); gname != "" && c.limitOf != nil {
			limit = c.limitOf(gname)
		}
	}
	if charged > c.maxEntry || charged > c.pol.capacity() || (limit > 0 && charged > limit) {
		c.mu.Unlock()
		c.rejected.Add(1)
		return false
	}
	e := &entry[K, V]{key: key, value: value, size: charged, hash: h}
	if g := c.groups[gname]; g != nil && limit > 0 {
		for g.bytes+charged > limit {
			v := g.root.gnext
			c.idx.remove(v.hash, v.key)
			c.removeLocked(v)
			evicted = append(evicted, v)
		}
	}
	for c.pol.used()+charged > c.pol.capacity() {
		v := c.pol.evict()
		v.gone.Store(true)
		c.ungroup(v)
		c.idx.remove(v.hash, v.key)
		evicted = append(evicted, v)
	}
	c.pol.add(e)
	c.idx.insert(e)
	if gname != "" {
		c.join(e, gname)
	}
	c.mu.Unlock()
	c.evictions.Add(uint64(len(evicted)))
	if c.onEvict != nil {
		for _, v := range evicted {
			c.onEvict(v.key, v.value, v.size-c.overhead)
		}
	}
	return true
}

// Delete removes key if present.
func (c *Cache[K, V]) Delete(key K) {
	h := c.hash(key)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.drainReads()
	if e := c.idx.remove(h, key); e != nil {
		c.removeLocked(e)
	}
}

// removeLocked takes e, already out of the index, out of the policy and its
// group; c.mu is held.
func (c *Cache[K, V]) removeLocked(e *entry[K, V]) {
	e.gone.Store(true)
	c.pol.remove(e)
	c.ungroup(e)
}

// DeleteGroup removes every entry of group g (Options.Group) and returns
// how many; it visits those entries only.
func (c *Cache[K, V]) DeleteGroup(g string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.drainReads()
	grp := c.groups[g]
	if grp == nil {
		return 0
	}
	n := 0
	for grp.n > 0 {
		e := grp.root.gnext
		c.idx.remove(e.hash, e.key)
		c.removeLocked(e)
		n++
	}
	return n
}

// GroupBytes is what the entries of group g hold, charged as by MaxBytes,
// and how many there are.
func (c *Cache[K, V]) GroupBytes(g string) (bytes int64, entries int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if grp := c.groups[g]; grp != nil {
		return grp.bytes, grp.n
	}
	return 0, 0
}

// DeleteFunc removes every entry whose key del reports true for. It holds
// the cache's locks throughout: del must be quick and must not use the cache.
func (c *Cache[K, V]) DeleteFunc(del func(K) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.drainReads()
	var doomed []*entry[K, V]
	c.idx.each(func(e *entry[K, V]) {
		if del(e.key) {
			doomed = append(doomed, e)
		}
	})
	for _, e := range doomed {
		c.idx.remove(e.hash, e.key)
		c.removeLocked(e)
	}
	return len(doomed)
}

// Stats returns the counters and current occupancy.
func (c *Cache[K, V]) Stats() Stats {
	s := Stats{Evictions: c.evictions.Load(), Rejected: c.rejected.Load()}
	for i := range c.counters {
		s.Hits += c.counters[i].hits.Load()
		s.Misses += c.counters[i].misses.Load()
	}
	c.mu.Lock()
	s.Entries, s.Bytes, s.MaxBytes = c.pol.len(), c.pol.used(), c.pol.capacity()
	c.mu.Unlock()
	return s
}

// group links the entries of one group in order of insertion; the lists
// and counts are guarded by Cache.mu.
type group[K comparable, V any] struct {
	name  string
	root  entry[K, V] // root.gnext is the oldest
	bytes int64
	n     int
}

// join appends e to group name; c.mu is held.
func (c *Cache[K, V]) join(e *entry[K, V], name string) {
	g := c.groups[name]
	if g == nil {
		g = &group[K, V]{name: name}
		g.root.gnext, g.root.gprev = &g.root, &g.root
		c.groups[name] = g
	}
	e.grp = g
	e.gprev, e.gnext = g.root.gprev, &g.root
	g.root.gprev.gnext = e
	g.root.gprev = e
	g.bytes += e.size
	g.n++
}

// ungroup takes e out of its group, if it is in one; c.mu is held.
func (c *Cache[K, V]) ungroup(e *entry[K, V]) {
	g := e.grp
	if g == nil {
		return
	}
	e.gprev.gnext, e.gnext.gprev = e.gnext, e.gprev
	e.gprev, e.gnext, e.grp = nil, nil, nil
	g.bytes -= e.size
	if g.n--; g.n == 0 {
		delete(c.groups, g.name)
	}
}
