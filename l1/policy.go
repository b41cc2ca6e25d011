package l1

import (
	"container/heap"
	"sync/atomic"
)

// entry is one cached value with the bookkeeping of every policy; a policy
// uses the fields it needs. key, value, size and hash are set before the
// entry is published and never change; freq and gone are atomic; the rest is
// guarded by Cache.mu.
type entry[K comparable, V any] struct {
	key   K
	value V
	size  int64  // charged, overhead included
	hash  uint64 // of key, with the cache's seed

	prev, next *entry[K, V] // queue links (LRU, FIFO, S3-FIFO)
	freq       atomic.Int32 // S3-FIFO: hits since insertion or reinsertion, 0..3
	queue      uint8        // S3-FIFO, W-TinyLFU: which queue holds it
	gone       atomic.Bool  // no longer in the cache

	count uint32  // LFU: aged hit count; GDSF: frequency
	pri   float64 // LFU, GDSF: priority in the heap, lowest evicted first
	seq   uint64  // LFU, GDSF: recency, breaks ties
	index int     // LFU, GDSF: position in the heap

	grp          *group[K, V] // Options.Group's, or nil
	gprev, gnext *entry[K, V] // links in grp's list
}

// touch records a hit for S3-FIFO without a lock.
func (e *entry[K, V]) touch() {
	for {
		f := e.freq.Load()
		if f >= 3 || e.freq.CompareAndSwap(f, f+1) {
			return
		}
	}
}

// policy is the single-threaded core of an eviction policy; Cache calls it
// under its mutex only.
type policy[K comparable, V any] interface {
	add(e *entry[K, V])
	hit(e *entry[K, V]) // only for policies that set Cache.hitLock
	remove(e *entry[K, V])
	evict() *entry[K, V] // removes and returns the victim; called when not empty
	used() int64
	capacity() int64
	len() int
}

// queue is an intrusive doubly linked list; root.next is the head (newest).
type queue[K comparable, V any] struct {
	root  entry[K, V]
	bytes int64
	n     int
}

func (q *queue[K, V]) init() *queue[K, V] {
	q.root.next, q.root.prev = &q.root, &q.root
	return q
}

func (q *queue[K, V]) pushFront(e *entry[K, V]) {
	e.prev, e.next = &q.root, q.root.next
	q.root.next.prev = e
	q.root.next = e
	q.bytes += e.size
	q.n++
}

func (q *queue[K, V]) unlink(e *entry[K, V]) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
	q.bytes -= e.size
	q.n--
}

// moveToFront makes e, which q holds, the newest. Writing nothing when it
// already is matters: a hot entry is hit again and again, and every write
// to its links takes its cache line from the cores reading its key.
func (q *queue[K, V]) moveToFront(e *entry[K, V]) {
	if q.root.next == e {
		return
	}
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = &q.root, q.root.next
	q.root.next.prev = e
	q.root.next = e
}

func (q *queue[K, V]) back() *entry[K, V] {
	if q.n == 0 {
		return nil
	}
	return q.root.prev
}

// lru evicts the least recently used entry.
type lru[K comparable, V any] struct {
	q   queue[K, V]
	max int64
}

func newLRU[K comparable, V any](max int64) *lru[K, V] {
	p := &lru[K, V]{max: max}
	p.q.init()
	return p
}

func (p *lru[K, V]) add(e *entry[K, V])    { p.q.pushFront(e) }
func (p *lru[K, V]) hit(e *entry[K, V])    { p.q.moveToFront(e) }
func (p *lru[K, V]) remove(e *entry[K, V]) { p.q.unlink(e) }
func (p *lru[K, V]) evict() *entry[K, V] {
	e := p.q.back()
	p.q.unlink(e)
	return e
}
func (p *lru[K, V]) used() int64     { return p.q.bytes }
func (p *lru[K, V]) capacity() int64 { return p.max }
func (p *lru[K, V]) len() int        { return p.q.n }

// fifo evicts the oldest entry; hits change nothing.
type fifo[K comparable, V any] struct{ lru[K, V] }

func newFIFO[K comparable, V any](max int64) *fifo[K, V] {
	p := &fifo[K, V]{lru[K, V]{max: max}}
	p.q.init()
	return p
}

func (p *fifo[K, V]) hit(*entry[K, V]) {}

// s3fifo is S3-FIFO made byte-weighted: new entries go to a small FIFO
// holding about 10% of the bytes; one that is hit there before it reaches
// the end moves to the main FIFO, one that is not is evicted and its key
// remembered in a ghost FIFO. A key that comes back while remembered goes
// straight to the main FIFO. The main FIFO reinserts entries hit since their
// last pass (lazy promotion, up to 3 passes). A scan (every tensor of a model
// read once) passes through the small FIFO without disturbing the main one.
type s3fifo[K comparable, V any] struct {
	small, main queue[K, V]
	max         int64
	smallMax    int64
	// The ghost FIFO remembers evicted keys by hash, so that it holds no
	// key alive; a collision only sends a new key to main early.
	ghost     map[uint64]uint64 // key hash -> its number in ghostQ
	ghostQ    []ghostKey
	ghostHead int
	ghostSeq  uint64
}

type ghostKey struct {
	hash, seq uint64
}

const (
	inSmall = 1
	inMain  = 2
)

func newS3FIFO[K comparable, V any](max int64) *s3fifo[K, V] {
	p := &s3fifo[K, V]{max: max, smallMax: max / 10, ghost: make(map[uint64]uint64)}
	p.small.init()
	p.main.init()
	return p
}

func (p *s3fifo[K, V]) add(e *entry[K, V]) {
	h := e.hash
	if _, ok := p.ghost[h]; ok {
		delete(p.ghost, h)
		e.queue = inMain
		p.main.pushFront(e)
		return
	}
	e.queue = inSmall
	p.small.pushFront(e)
}

func (p *s3fifo[K, V]) hit(*entry[K, V]) {}

func (p *s3fifo[K, V]) remove(e *entry[K, V]) {
	if e.queue == inSmall {
		p.small.unlink(e)
	} else {
		p.main.unlink(e)
	}
}

func (p *s3fifo[K, V]) evict() *entry[K, V] {
	for {
		if p.small.n > 0 && (p.small.bytes > p.smallMax || p.main.n == 0) {
			e := p.small.back()
			p.small.unlink(e)
			if e.freq.Load() > 0 {
				e.freq.Store(0)
				e.queue = inMain
				p.main.pushFront(e)
				continue
			}
			p.remember(e.hash)
			return e
		}
		e := p.main.back()
		p.main.unlink(e)
		if f := e.freq.Load(); f > 0 {
			e.freq.Store(f - 1)
			p.main.pushFront(e)
			continue
		}
		return e
	}
}

// remember adds key to the ghost FIFO, which holds about as many keys as the
// main queue holds entries.
func (p *s3fifo[K, V]) remember(h uint64) {
	p.ghostSeq++
	p.ghost[h] = p.ghostSeq
	p.ghostQ = append(p.ghostQ, ghostKey{h, p.ghostSeq})
	for len(p.ghost) > max(p.main.n, 16) && p.ghostHead < len(p.ghostQ) {
		g := p.ghostQ[p.ghostHead]
		p.ghostHead++
		if p.ghost[g.hash] == g.seq {
			delete(p.ghost, g.hash)
		}
	}
	// Compact the queue once half of it is consumed.
	if p.ghostHead > len(p.ghostQ)/2 && p.ghostHead > 1024 {
		p.ghostQ = append(p.ghostQ[:0], p.ghostQ[p.ghostHead:]...)
		p.ghostHead = 0
	}
}

func (p *s3fifo[K, V]) used() int64     { return p.small.bytes + p.main.bytes }
func (p *s3fifo[K, V]) capacity() int64 { return p.max }
func (p *s3fifo[K, V]) len() int        { return p.small.n + p.main.n }

// lfu evicts the entry with the fewest hits, the older on a tie. Counts are
// halved whenever the hits since the last halving reach ten times the number
// of entries, so that old popularity fades.
type lfu[K comparable, V any] struct {
	h       entryHeap[K, V]
	max     int64
	sinceAg int
}

func newLFU[K comparable, V any](max int64) *lfu[K, V] { return &lfu[K, V]{max: max} }

func (p *lfu[K, V]) add(e *entry[K, V]) {
	e.count = 1
	p.h.push(e, 1)
}

func (p *lfu[K, V]) hit(e *entry[K, V]) {
	e.count++
	p.h.fix(e, float64(e.count))
	if p.sinceAg++; p.sinceAg >= 10*max(p.h.Len(), 1) {
		p.sinceAg = 0
		for _, x := range p.h.es {
			x.count /= 2
			x.pri = float64(x.count)
		}
		heap.Init(&p.h)
	}
}

func (p *lfu[K, V]) remove(e *entry[K, V]) { p.h.remove(e) }
func (p *lfu[K, V]) evict() *entry[K, V]   { return p.h.pop() }
func (p *lfu[K, V]) used() int64           { return p.h.bytes }
func (p *lfu[K, V]) capacity() int64       { return p.max }
func (p *lfu[K, V]) len() int              { return p.h.Len() }

// gdsf is GreedyDual-Size-Frequency (Cherkasova, 1998): an entry's priority
// is clock + frequency / size, the entry of lowest priority is evicted, and
// the clock rises to each victim's priority, so that entries not hit since
// the clock was low age out. Dividing by size keeps many small entries in
// the room of one large one: it maximizes the share of requests served
// (hit ratio), not of bytes (see docs/BENCHMARKS.md for the trade). A new
// entry's frequency is the sketch's count of its key's requests, so a key
// evicted and asked again comes back with its popularity; the sketch is
// W-TinyLFU's, one 64-bit word per entry, halved as it ages.
type gdsf[K comparable, V any] struct {
	h      entryHeap[K, V]
	max    int64
	clock  float64
	sketch sketch
}

func newGDSF[K comparable, V any](max int64) *gdsf[K, V] {
	p := &gdsf[K, V]{max: max}
	p.sketch.init(256)
	return p
}

func (p *gdsf[K, V]) add(e *entry[K, V]) {
	p.sketch.addNew(e.hash, p.h.Len()+1)
	e.count = uint32(max(p.sketch.estimate(e.hash), 1))
	p.h.push(e, p.priority(e))
}

func (p *gdsf[K, V]) hit(e *entry[K, V]) {
	p.sketch.add(e.hash)
	if e.count < 1<<30 {
		e.count++
	}
	p.h.fix(e, p.priority(e))
}

func (p *gdsf[K, V]) priority(e *entry[K, V]) float64 {
	return p.clock + float64(e.count)/float64(max(e.size, 1))
}

func (p *gdsf[K, V]) remove(e *entry[K, V]) { p.h.remove(e) }
func (p *gdsf[K, V]) evict() *entry[K, V] {
	e := p.h.pop()
	p.clock = max(p.clock, e.pri)
	return e
}
func (p *gdsf[K, V]) used() int64     { return p.h.bytes }
func (p *gdsf[K, V]) capacity() int64 { return p.max }
func (p *gdsf[K, V]) len() int        { return p.h.Len() }

// entryHeap is a min-heap of entries by priority, the older on a tie, that
// keeps each entry's position in entry.index and sums their sizes.
type entryHeap[K comparable, V any] struct {
	es    []*entry[K, V]
	seq   uint64
	bytes int64
}

func (h *entryHeap[K, V]) push(e *entry[K, V], pri float64) {
	h.seq++
	e.pri, e.seq = pri, h.seq
	heap.Push(h, e)
	h.bytes += e.size
}

// fix gives e a new priority and makes it the newest of its priority.
func (h *entryHeap[K, V]) fix(e *entry[K, V], pri float64) {
	h.seq++
	e.pri, e.seq = pri, h.seq
	heap.Fix(h, e.index)
}

func (h *entryHeap[K, V]) remove(e *entry[K, V]) {
	heap.Remove(h, e.index)
	h.bytes -= e.size
}

func (h *entryHeap[K, V]) pop() *entry[K, V] {
	e := heap.Pop(h).(*entry[K, V])
	h.bytes -= e.size
	return e
}

func (h *entryHeap[K, V]) Len() int { return len(h.es) }
func (h *entryHeap[K, V]) Less(i, j int) bool {
	a, b := h.es[i], h.es[j]
	if a.pri != b.pri {
		return a.pri < b.pri
	}
	return a.seq < b.seq
}
func (h *entryHeap[K, V]) Swap(i, j int) {
	h.es[i], h.es[j] = h.es[j], h.es[i]
	h.es[i].index, h.es[j].index = i, j
}
func (h *entryHeap[K, V]) Push(x any) {
	e := x.(*entry[K, V])
	e.index = len(h.es)
	h.es = append(h.es, e)
}
func (h *entryHeap[K, V]) Pop() any {
	e := h.es[len(h.es)-1]
	h.es[len(h.es)-1] = nil
	h.es = h.es[:len(h.es)-1]
	return e
}
