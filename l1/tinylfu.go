package l1

// wtinylfu is W-TinyLFU (Einziger, Friedman, Manes, 2017), as in Caffeine
// and otter, byte-weighted: new entries enter a small LRU window (1% of the
// bytes); an entry leaving the window is admitted to the main space (an
// SLRU: probation, and protected for entries hit there) only if a frequency
// sketch says it is asked for more often than the main space's victim. One
// read of every tensor of a model (a scan) therefore cannot push out what is
// read often.
type wtinylfu[K comparable, V any] struct {
	window, probation, protected queue[K, V]
	max, windowMax, protectedMax int64
	sketch                       sketch

	// The window's size climbs the hill of the hit ratio (Caffeine's
	// adaptive W-TinyLFU): after each sample of requests, move it by step in
	// the direction that last raised the hit ratio, reverse when it fell.
	hits, misses int
	prevRatio    float64
	step         float64 // bytes, signed
}

const (
	inWindow    = 3
	inProbation = 4
	inProtected = 5
)

func newWTinyLFU[K comparable, V any](max int64) *wtinylfu[K, V] {
	p := &wtinylfu[K, V]{max: max, windowMax: max / 100, step: -0.0625 * float64(max)}
	p.protectedMax = (max - p.windowMax) * 8 / 10
	p.window.init()
	p.probation.init()
	p.protected.init()
	p.sketch.init(256)
	return p
}

func (p *wtinylfu[K, V]) record(h uint64) {
	if n := p.len(); n > p.sketch.capacity() {
		p.sketch.init(n)
	}
	p.sketch.add(h)
}

// climb adjusts the window once per sample of requests (10 per entry).
func (p *wtinylfu[K, V]) climb() {
	n := p.hits + p.misses
	if n < max(10*p.len(), 1000) {
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

// shrinkWindow moves what overflows the window into probation as admission
// candidates.
func (p *wtinylfu[K, V]) shrinkWindow() {
	for p.window.bytes > p.windowMax && p.window.n > 1 {
		c := p.window.back()
		p.window.unlink(c)
		c.queue, c.fresh = inProbation, true
		p.probation.pushFront(c)
	}
}

func (p *wtinylfu[K, V]) add(e *entry[K, V]) {
	p.misses++
	p.climb()
	p.record(e.hash)
	e.queue = inWindow
	p.window.pushFront(e)
	// What overflows the window enters probation as a candidate; whether it
	// stays is decided when something must be evicted.
	p.shrinkWindow()
}

func (p *wtinylfu[K, V]) hit(e *entry[K, V]) {
	p.hits++
	p.record(e.hash)
	switch e.queue {
	case inWindow:
		p.window.unlink(e)
		p.window.pushFront(e)
	case inProbation:
		p.probation.unlink(e)
		e.queue, e.fresh = inProtected, false
		p.protected.pushFront(e)
		for p.protected.bytes > p.protectedMax && p.protected.n > 1 {
			d := p.protected.back()
			p.protected.unlink(d)
			d.queue = inProbation
			p.probation.pushFront(d)
		}
	case inProtected:
		p.protected.unlink(e)
		p.protected.pushFront(e)
	}
}

func (p *wtinylfu[K, V]) queueOf(e *entry[K, V]) *queue[K, V] {
	switch e.queue {
	case inWindow:
		return &p.window
	case inProbation:
		return &p.probation
	}
	return &p.protected
}

func (p *wtinylfu[K, V]) remove(e *entry[K, V]) { p.queueOf(e).unlink(e) }

// evict gives up probation's least recently used entry, unless a candidate
// that just left the window is asked for less often than it: then the
// candidate goes instead (TinyLFU admission).
func (p *wtinylfu[K, V]) evict() *entry[K, V] {
	v := p.probation.back()
	if v == nil {
		if v = p.protected.back(); v == nil {
			v = p.window.back()
		}
		p.queueOf(v).unlink(v)
		return v
	}
	if c := p.probation.root.next; c != v && c.fresh {
		c.fresh = false
		if p.sketch.estimate(c.hash) <= p.sketch.estimate(v.hash) {
			p.probation.unlink(c)
			return c
		}
	}
	p.probation.unlink(v)
	return v
}

func (p *wtinylfu[K, V]) used() int64 {
	return p.window.bytes + p.probation.bytes + p.protected.bytes
}
func (p *wtinylfu[K, V]) capacity() int64 { return p.max }
func (p *wtinylfu[K, V]) len() int        { return p.window.n + p.probation.n + p.protected.n }

// sketch is a count-min sketch of 4-bit counters laid out as Caffeine's
// FrequencySketch: sixteen counters to a uint64, and the four counters of a
// key all in one 64-byte block, so that recording or estimating a key
// touches one cache line. Counters are halved every 10 × width additions so
// that old popularity fades (TinyLFU's reset).
type sketch struct {
	table     []uint64
	blockMask uint64
	additions int
	period    int
}

func (s *sketch) init(entries int) {
	n := 8 // one block at least
	for n < entries/4 {
		n *= 2
	}
	s.table = make([]uint64, n)
	s.blockMask = uint64(n>>3) - 1
	s.additions, s.period = 0, 10*max(entries, 64)
}

// capacity is the number of entries the table is sized for.
func (s *sketch) capacity() int { return max(len(s.table)*4, 64) }

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
	for i := range 4 {
		w, sh := s.slot(h, i)
		if (s.table[w]>>sh)&15 < 15 {
			s.table[w] += 1 << sh
		}
	}
	if s.additions++; s.additions >= s.period {
		s.additions = 0
		for i := range s.table {
			s.table[i] = (s.table[i] >> 1) & 0x7777777777777777
		}
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
