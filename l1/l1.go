package l1

import (
	"errors"
	"sync"
	"sync/atomic"
)

// EntryOverhead is what one entry costs beyond its value: the map slot, the
// list node and the key header, rounded up. It is charged to the budget.
const EntryOverhead = 96

// Options configures a Cache.
type Options struct {
	// MaxBytes is the budget: the sum of admitted sizes plus EntryOverhead
	// per entry never exceeds it. Required, > 0.
	MaxBytes int64
}

func (o *Options) validate() error {
	if o == nil || o.MaxBytes <= 0 {
		return errors.New("l1: MaxBytes must be > 0")
	}
	return nil
}

// Stats are counters since the cache was created.
type Stats struct {
	Hits, Misses, Evictions uint64
	Rejected                uint64 // Sets refused because the entry exceeds the budget
	Entries                 int
	Bytes                   int64 // charged bytes, overhead included
	MaxBytes                int64
}

type node[K comparable, V any] struct {
	key        K
	value      V
	size       int64 // charged size, overhead included
	prev, next *node[K, V]
}

// Cache is a byte-bounded LRU cache. The zero value is not usable; call New.
type Cache[K comparable, V any] struct {
	maxBytes int64

	// mu guards items, used and the recency list rooted at root
	// (root.next is the most recently used).
	mu    sync.Mutex
	items map[K]*node[K, V]
	used  int64
	root  node[K, V]

	hits, misses, evictions, rejected atomic.Uint64
}

// New returns an empty cache.
func New[K comparable, V any](opts *Options) (*Cache[K, V], error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	c := &Cache[K, V]{maxBytes: opts.MaxBytes, items: make(map[K]*node[K, V])}
	c.root.next, c.root.prev = &c.root, &c.root
	return c, nil
}

func (c *Cache[K, V]) unlink(n *node[K, V]) {
	n.prev.next, n.next.prev = n.next, n.prev
	n.prev, n.next = nil, nil
}

func (c *Cache[K, V]) pushFront(n *node[K, V]) {
	n.prev, n.next = &c.root, c.root.next
	c.root.next.prev = n
	c.root.next = n
}

// Get returns the value for key and marks it recently used.
func (c *Cache[K, V]) Get(key K) (V, bool) {
	c.mu.Lock()
	n, ok := c.items[key]
	if ok {
		c.unlink(n)
		c.pushFront(n)
	}
	c.mu.Unlock()
	if !ok {
		c.misses.Add(1)
		var zero V
		return zero, false
	}
	c.hits.Add(1)
	return n.value, true
}

// Set stores value under key, charged size bytes plus EntryOverhead, and
// evicts least recently used entries to stay within the budget. It returns
// false, storing nothing, when the entry alone exceeds the budget; an older
// value under key is then removed, so a stale value is never left behind.
func (c *Cache[K, V]) Set(key K, value V, size int64) bool {
	charged := max(size, 0) + EntryOverhead
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.items[key]; ok {
		c.remove(old)
	}
	if charged > c.maxBytes {
		c.rejected.Add(1)
		return false
	}
	for c.used+charged > c.maxBytes {
		c.remove(c.root.prev)
		c.evictions.Add(1)
	}
	n := &node[K, V]{key: key, value: value, size: charged}
	c.items[key] = n
	c.used += charged
	c.pushFront(n)
	return true
}

func (c *Cache[K, V]) remove(n *node[K, V]) {
	c.unlink(n)
	delete(c.items, n.key)
	c.used -= n.size
}

// Delete removes key if present.
func (c *Cache[K, V]) Delete(key K) {
	c.mu.Lock()
	if n, ok := c.items[key]; ok {
		c.remove(n)
	}
	c.mu.Unlock()
}

// DeleteFunc removes every entry whose key del reports true for. It holds
// the lock throughout: del must be quick and must not use the cache.
func (c *Cache[K, V]) DeleteFunc(del func(K) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k, nd := range c.items {
		if del(k) {
			c.remove(nd)
			n++
		}
	}
	return n
}

// Stats returns the counters and current occupancy.
func (c *Cache[K, V]) Stats() Stats {
	c.mu.Lock()
	entries, used := len(c.items), c.used
	c.mu.Unlock()
	return Stats{
		Hits: c.hits.Load(), Misses: c.misses.Load(),
		Evictions: c.evictions.Load(), Rejected: c.rejected.Load(),
		Entries: entries, Bytes: used, MaxBytes: c.maxBytes,
	}
}
