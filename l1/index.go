package l1

import (
	"sync"
	"sync/atomic"
)

// index maps keys to entries. Lookups take no lock and write no shared
// memory: each shard is an open-addressing table of atomic pointers, which
// writers (holding the shard's mutex) change slot by slot and replace whole
// when it grows. A sync.RWMutex here made every hit write the lock's reader
// count, and two cores hitting the same hot shard then spent their time
// moving that cache line between them.
//
// A reader may still hold a table that a writer has just replaced, and miss
// an entry inserted since: a miss a moment early, which a cache may give.
// To never hand out a value after it was replaced or evicted, lookups check
// the entry's gone flag, which is set before Set or Delete returns.
type index[K comparable, V any] struct {
	shards [numShards]indexShard[K, V]
	tomb   *entry[K, V] // marks a deleted slot; probing continues past it
}

type indexShard[K comparable, V any] struct {
	tab        atomic.Pointer[table[K, V]]
	mu         sync.Mutex // serialises writers
	live, used int        // entries; slots not nil (entries and tombstones)
	_          [24]byte
}

type table[K comparable, V any] struct {
	slots []atomic.Pointer[entry[K, V]]
	mask  uint64
}

const minTableSlots = 8

func (x *index[K, V]) init() {
	x.tomb = new(entry[K, V])
	for i := range x.shards {
		x.shards[i].tab.Store(newTable[K, V](minTableSlots))
	}
}

func newTable[K comparable, V any](n int) *table[K, V] {
	return &table[K, V]{slots: make([]atomic.Pointer[entry[K, V]], n), mask: uint64(n - 1)}
}

// The shard comes from the hash's low bits, the slot from the rest.
func shardIndex(h uint64) int         { return int(h & (numShards - 1)) }
func slotStart(h, mask uint64) uint64 { return (h >> 6) & mask }

// get returns the live entry for key, or nil.
func (x *index[K, V]) get(h uint64, key K) *entry[K, V] {
	t := x.shards[shardIndex(h)].tab.Load()
	for i := slotStart(h, t.mask); ; i = (i + 1) & t.mask {
		e := t.slots[i].Load()
		if e == nil {
			return nil
		}
		if e != x.tomb && e.hash == h && e.key == key {
			if e.gone.Load() {
				return nil
			}
			return e
		}
	}
}

// insert adds e, whose key must not be in the index.
func (x *index[K, V]) insert(e *entry[K, V]) {
	sh := &x.shards[shardIndex(e.hash)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t := sh.tab.Load()
	// Keep at least half of the slots nil so that probes end soon.
	if (sh.used+1)*2 > len(t.slots) {
		t = x.rehash(sh, t)
	}
	for i := slotStart(e.hash, t.mask); ; i = (i + 1) & t.mask {
		s := t.slots[i].Load()
		if s == nil || s == x.tomb {
			if s == nil {
				sh.used++
			}
			sh.live++
			t.slots[i].Store(e)
			return
		}
	}
}

// rehash copies the live entries into a new table sized for four times their
// number and publishes it (a quarter full); tombstones are dropped, so a table that deletes
// have filled is cleaned at its own size and one that has emptied shrinks.
func (x *index[K, V]) rehash(sh *indexShard[K, V], old *table[K, V]) *table[K, V] {
	n := minTableSlots
	for n < (sh.live+1)*4 {
		n *= 2
	}
	t := newTable[K, V](n)
	for i := range old.slots {
		e := old.slots[i].Load()
		if e == nil || e == x.tomb {
			continue
		}
		j := slotStart(e.hash, t.mask)
		for t.slots[j].Load() != nil {
			j = (j + 1) & t.mask
		}
		t.slots[j].Store(e)
	}
	sh.used = sh.live
	sh.tab.Store(t)
	return t
}

// remove takes key out of the index and returns its entry, or nil. The
// caller marks the entry gone.
func (x *index[K, V]) remove(h uint64, key K) *entry[K, V] {
	sh := &x.shards[shardIndex(h)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t := sh.tab.Load()
	for i := slotStart(h, t.mask); ; i = (i + 1) & t.mask {
		e := t.slots[i].Load()
		if e == nil {
			return nil
		}
		if e != x.tomb && e.hash == h && e.key == key {
			t.slots[i].Store(x.tomb)
			sh.live--
			// Shrink a table that has emptied, so that a burst of entries
			// does not pin its slots for good.
			if len(t.slots) > minTableSlots && sh.live*8 < len(t.slots) {
				x.rehash(sh, t)
			}
			return e
		}
	}
}

// each calls f for every entry; f must not change the index.
func (x *index[K, V]) each(f func(e *entry[K, V])) {
	for i := range x.shards {
		sh := &x.shards[i]
		sh.mu.Lock()
		t := sh.tab.Load()
		for j := range t.slots {
			if e := t.slots[j].Load(); e != nil && e != x.tomb {
				f(e)
			}
		}
		sh.mu.Unlock()
	}
}
