package l1

import (
	"math/bits"
	"sync/atomic"

	"github.com/modelcache/modelcache/internal/stripe"
)

// Hits wait in read buffers for the policy lock, as in Caffeine and otter:
// a policy that reorders on every hit (LRU, LFU, W-TinyLFU, GDSF) would
// otherwise take its lock on every Get, and two cores hitting the cache
// would pass that lock's cache line back and forth on every hit. A Get
// claims a slot in its goroutine's ring with one compare-and-swap; the ring
// is drained under the lock when it fills and before every Set, so that the
// policy has seen every recorded hit before it chooses a victim. When the
// ring is full and the lock is busy, or two goroutines race for a slot, the
// hit is not recorded (the buffers are lossy, as the policy's statistics
// can afford to be).
const (
	readStripes = 64 // rings per cache; ≤ 64 (one bit each in readBuffers.dirty)
	ringSize    = 16 // slots per ring; a power of two
)

// readBuffers are a cache's rings, and a mask of those that may hold hits,
// so that a drain visits only those.
type readBuffers[K comparable, V any] struct {
	_     [64]byte
	dirty atomic.Uint64
	_     [56]byte
	rings [readStripes]readRing[K, V]
}

// add records a hit on e in the calling goroutine's ring and reports whether
// that ring is full.
func (b *readBuffers[K, V]) add(e *entry[K, V]) (full bool) {
	i := stripeOf(readStripes)
	full = b.rings[i].add(e)
	// Mark the ring after writing to it: a drain that clears the mark
	// before this check sees the hit or leaves the mark set again.
	if bit := uint64(1) << i; b.dirty.Load()&bit == 0 {
		b.dirty.Or(bit)
	}
	return full
}

// drain hands the recorded hits of every marked ring to f.
func (b *readBuffers[K, V]) drain(f func(*entry[K, V])) {
	if b.dirty.Load() == 0 {
		return // nothing buffered: leave the line shared with the recorders
	}
	for m := b.dirty.Swap(0); m != 0; m &= m - 1 {
		b.rings[bits.TrailingZeros64(m)].drain(f)
	}
}

// readRing is one bounded buffer of hits: recorders claim slots by
// advancing tail; the drainer, holding Cache.mu, consumes from head. Its
// fields fill whole cache lines of their own.
type readRing[K comparable, V any] struct {
	head  atomic.Uint64 // written only by the drainer
	tail  atomic.Uint64
	slots [ringSize]atomic.Pointer[entry[K, V]]
	_     [64 - (16+ringSize*8)%64]byte
}

// add records a hit on e, and reports whether the ring is full and should
// be drained.
func (r *readRing[K, V]) add(e *entry[K, V]) (full bool) {
	t, h := r.tail.Load(), r.head.Load()
	if t-h >= ringSize {
		return true
	}
	if !r.tail.CompareAndSwap(t, t+1) {
		return false // another goroutine took the slot: drop this hit
	}
	// The slot is free: the drainer emptied it before moving head past it.
	r.slots[t&(ringSize-1)].Store(e)
	return t+1-h >= ringSize
}

// drain hands the recorded hits to f in the order they were recorded. A
// slot claimed but not yet written ends the drain; the next one resumes
// there.
func (r *readRing[K, V]) drain(f func(*entry[K, V])) {
	h, t := r.head.Load(), r.tail.Load()
	for ; h != t; h++ {
		e := r.slots[h&(ringSize-1)].Swap(nil)
		if e == nil {
			break
		}
		f(e)
	}
	r.head.Store(h)
}

// stripeOf picks the calling goroutine's stripe (package stripe).
func stripeOf(n uint64) uint64 { return stripe.Of(n) }
