package l1

import "math/bits"

// wtinylfu is W-TinyLFU (Einziger, Friedman, Manes, 2017), as in Caffeine
// and otter, byte-weighted: new entries enter a small LRU window (1% of the
// bytes); an entry leaving the window is admitted to the main space (an
// SLRU: probation, and protected for entries hit there) only if a frequency
// sketch says it is asked for more often than the main space's victim. One
// read of every tensor of a model (a scan) therefore cannot push out what is
// read often.
type wtinylfu[K comparable, V any] struct {
	// Entries that leave the window wait in pending, oldest at the back,
	// until an eviction compares each with probation's victim.
	window, pending, probation, protected queue[K, V]
	max, windowMax, protectedMax          int64
	sketch                                sketch

	// The window's size climbs the hill of the hit ratio (Caffeine's
	// adaptive W-TinyLFU): after each sample of requests, move it by step in
	// the direction that last raised the hit ratio, reverse when it fell.
	hits, misses int
	prevRatio    float64
	step         float64 // bytes, signed

	rand uint64 // xorshift state: deterministic
}

const (
	inWindow    = 3
	inProbation = 4
	inProtected = 5
	inPending   = 6

	// A candidate this frequent is admitted at random 1 time in 128 even
	// when it loses, as in Caffeine: otherwise an attacker who makes a key
	// hot could keep it out forever.
	admitHashDoSThreshold = 6
)

func newWTinyLFU[K comparable, V any](max int64) *wtinylfu[K, V] {
	p := &wtinylfu[K, V]{max: max, windowMax: max / 100, step: -0.0625 * float64(max)}
	p.protectedMax = (max - p.windowMax) * 8 / 10
	p.window.init()
	p.pending.init()
	p.probation.init()
	p.protected.init()
	p.sketch.init(256)
	p.rand = 0x9e3779b97f4a7c15
	return p
}

// climb adjusts the window once per sample of requests (10 per entry).
func (p *wtinylfu[K, V]) climb() {
	n := p.hits + p.misses
	if n < max(10*p.len(), 1000) {
		return
	}
	if p.used() < p.max/2 {
		// Not evicting yet: the hit ratio says nothing about the split.
		p.hits, p.misses = 0, 0
		return
	}
	ratio := float64(p.hits) / float64(n)
	change := ratio - p.prevRatio
	amount := p.step
	if change < 0 {
		amount = -amount
	}
	if change >= 0.05 || change <= -0.05 {
		p.step = 0.0625 * float64(p.max)
		if amount < 0 {
			p.step = -p.step
		}
	} else {
		p.step = 0.98 * amount
	}
	p.prevRatio, p.hits, p.misses = ratio, 0, 0
	p.windowMax = min(max(p.windowMax+int64(amount), 0), p.max*8/10)
	p.protectedMax = (p.max - p.windowMax) * 8 / 10
	p.shrinkWindow()
}

// shrinkWindow moves what overflows the window to pending, as admission
// candidates.
func (p *wtinylfu[K, V]) shrinkWindow() {
	for p.window.bytes > p.windowMax && p.window.n > 1 {
		c := p.window.back()
		p.window.unlink(c)
		c.queue = inPending
		p.pending.pushFront(c)
	}
}

func (p *wtinylfu[K, V]) add(e *entry[K, V]) {
	p.misses++
	p.climb()
	p.sketch.addNew(e.hash, p.len())
	// Candidates that no eviction has compared since they left the window
	// left it while there was room: they are admitted, as in Caffeine,
	// where only the entries a maintenance pass moves are candidates.
	for c := p.pending.back(); c != nil; c = p.pending.back() {
		p.pending.unlink(c)
		c.queue = inProbation
		p.probation.pushFront(c)
	}
	e.queue = inWindow
	p.window.pushFront(e)
	// What overflows the window becomes a candidate; whether it stays is
	// decided when something must be evicted.
	p.shrinkWindow()
}

func (p *wtinylfu[K, V]) hit(e *entry[K, V]) {
	p.hits++
	p.sketch.add(e.hash) // the sketch grows only as entries are added
	switch e.queue {
	case inWindow:
		p.window.moveToFront(e)
	case inProbation, inPending:
		p.queueOf(e).unlink(e)
		e.queue = inProtected
		p.protected.pushFront(e)
		for p.protected.bytes > p.protectedMax && p.protected.n > 1 {
			d := p.protected.back()
			p.protected.unlink(d)
			d.queue = inProbation
			p.probation.pushFront(d)
		}
	case inProtected:
		p.protected.moveToFront(e)
	}
}

func (p *wtinylfu[K, V]) queueOf(e *entry[K, V]) *queue[K, V] {
	switch e.queue {
	case inWindow:
		return &p.window
	case inProbation:
		return &p.probation
	case inPending:
		return &p.pending
	}
	return &p.protected
}

func (p *wtinylfu[K, V]) remove(e *entry[K, V]) { p.queueOf(e).unlink(e) }

// evict compares the oldest candidate (from pending, else the window's
// least recently used entry) with probation's least recently used entry
// and gives up the one the sketch says is asked for less often (TinyLFU
// admission); an admitted candidate joins probation. With no candidate, or
// no victim, the other goes; with neither, protected's oldest.
func (p *wtinylfu[K, V]) evict() *entry[K, V] {
	c := p.pending.back()
	if c == nil {
		c = p.window.back()
	}
	v := p.probation.back()
	if v == nil {
		if c == nil {
			c = p.protected.back()
		}
		p.queueOf(c).unlink(c)
		return c
	}
	if c == nil {
		p.probation.unlink(v)
		return v
	}
	if p.admit(c, v) {
		p.probation.unlink(v)
		if c.queue == inPending {
			p.pending.unlink(c)
			c.queue = inProbation
			p.probation.pushFront(c)
		}
		return v
	}
	p.queueOf(c).unlink(c)
	return c
}

func (p *wtinylfu[K, V]) admit(c, v *entry[K, V]) bool {
	cf, vf := p.sketch.estimate(c.hash), p.sketch.estimate(v.hash)
	if cf > vf {
		return true
	}
	if cf >= admitHashDoSThreshold {
		p.rand ^= p.rand << 13
		p.rand ^= p.rand >> 7
		p.rand ^= p.rand << 17
		return p.rand&127 == 0
	}
	return false
}

func (p *wtinylfu[K, V]) used() int64 {
	return p.window.bytes + p.pending.bytes + p.probation.bytes + p.protected.bytes
}
func (p *wtinylfu[K, V]) capacity() int64 { return p.max }
func (p *wtinylfu[K, V]) len() int {
	return p.window.n + p.pending.n + p.probation.n + p.protected.n
}

// sketch is a count-min sketch of 4-bit counters laid out as Caffeine's
// FrequencySketch: sixteen counters to a uint64, and the four counters of a
// key all in one 64-byte block, so that recording or estimating a key
// touches one cache line. Once 10 additions per entry have raised a counter
// (a key whose counters are all saturated adds nothing), every counter is
// halved so that old popularity fades (TinyLFU's reset), and the count of
// additions restarts at half, less what halving odd counters lost, as in
// Caffeine.
type sketch struct {
	table     []uint64
	blockMask uint64
	additions int
	period    int
}

func (s *sketch) init(entries int) {
	// One word (16 counters) per entry, as Caffeine sizes its sketch: a
	// quarter of that, tried first, made collisions inflate the estimates
	// and cost admission 2-4 points on the LIRS traces.
	n := 8 // one block at least
	for n < entries {
		n *= 2
	}
	s.table = make([]uint64, n)
	s.blockMask = uint64(n>>3) - 1
	s.additions, s.period = 0, 10*max(entries, 64)
}

// grow enlarges the table for entries, keeping every key's counts: a key's
// counters sit at the same offsets of its block, and its block in the larger
// table is its block in the smaller one plus a multiple of the smaller
// table's size, so copying the table into each multiple keeps them.
func (s *sketch) grow(entries int) {
	old := s.table
	additions := s.additions
	s.init(entries)
	for i := 0; i < len(s.table); i += len(old) {
		copy(s.table[i:], old)
	}
	s.additions = additions
}

// addNew counts a key entering a cache that holds entries, first growing
// the table if it is sized for fewer.
func (s *sketch) addNew(h uint64, entries int) {
	if entries > s.capacity() {
		s.grow(entries)
	}
	s.add(h)
}

// capacity is the number of entries the table is sized for.
func (s *sketch) capacity() int { return max(len(s.table), 64) }

// slots yields, for each of the key's four counters, the word and the
// counter (0-15) within it.
func (s *sketch) slot(h uint64, i int) (word int, shift uint) {
	block := (h & s.blockMask) << 3
	c := (h * 0x9e3779b97f4a7c15) >> (uint(i) << 3)
	idx := (c >> 1) & 15
	off := c & 1
	return int(block + off + uint64(i)<<1), uint(idx) << 2
}

func (s *sketch) add(h uint64) {
	added := false
	for i := range 4 {
		w, sh := s.slot(h, i)
		if (s.table[w]>>sh)&15 < 15 {
			s.table[w] += 1 << sh
			added = true
		}
	}
	if !added {
		return
	}
	if s.additions++; s.additions >= s.period {
		odd := 0
		for i := range s.table {
			odd += bits.OnesCount64(s.table[i] & 0x1111111111111111)
			s.table[i] = (s.table[i] >> 1) & 0x7777777777777777
		}
		s.additions = (s.additions - odd/4) / 2
	}
}

func (s *sketch) estimate(h uint64) uint8 {
	m := uint64(15)
	for i := range 4 {
		w, sh := s.slot(h, i)
		m = min(m, (s.table[w]>>sh)&15)
	}
	return uint8(m)
}
