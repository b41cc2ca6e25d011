package tier

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
	"unsafe"
)

// The cache is judged, as the paper it grew from judges one, by its hit rate
// HR and its average access time T = HR·Tc + (1 − HR)·(Tc + Tr), Tc being the
// time to look in the cache and Tr the time to read or compute what it
// misses. A meter counts the requests of one kind (tensors, values, one
// namespace) by the tier that served them and keeps their latencies in
// histograms, from which Measures computes both T by the formula and the
// mean actually measured.
//
// Timing a hit in L1 (tens of nanoseconds) with two clock reads would
// double its cost, so one L1 hit in sampleEvery is timed, and counts for
// sampleEvery in its histogram; every request that reaches a slower tier is
// timed, from the moment L1 missed (or from its start, if sampled).

const sampleEvery = 64 // a power of two

// numBuckets histogram buckets: bucket i holds latencies below
// bucketBase<<i (the last one any); 128 ns to 4.6 minutes.
const (
	numBuckets = 32
	bucketBase = 128 * time.Nanosecond
)

// histogram is a lock-free latency histogram with exponential buckets.
type histogram struct {
	counts [numBuckets]atomic.Uint64
	sum    atomic.Int64 // nanoseconds, weighted
}

func bucketOf(d time.Duration) int {
	if d < bucketBase {
		return 0
	}
	return min(bits.Len64(uint64(d/bucketBase)), numBuckets-1)
}

func (h *histogram) observe(d time.Duration, weight uint64) {
	h.counts[bucketOf(d)].Add(weight)
	h.sum.Add(int64(d) * int64(weight))
}

// BucketBounds are the upper bounds of Latency.Buckets, the last one
// infinite; shared, do not modify.
var BucketBounds = func() []time.Duration {
	b := make([]time.Duration, numBuckets)
	for i := range numBuckets - 1 {
		b[i] = bucketBase << i
	}
	b[numBuckets-1] = math.MaxInt64
	return b
}()

// Latency is a histogram of request times.
type Latency struct {
	Count uint64        `json:"count"`
	Sum   time.Duration `json:"sum_ns"`
	// Buckets[i] counts requests that took less than BucketBounds[i] and
	// at least BucketBounds[i-1] (not cumulative).
	Buckets []uint64 `json:"buckets"`
}

func (h *histogram) snapshot() Latency {
	l := Latency{Buckets: make([]uint64, numBuckets), Sum: time.Duration(h.sum.Load())}
	for i := range h.counts {
		l.Buckets[i] = h.counts[i].Load()
		l.Count += l.Buckets[i]
	}
	return l
}

// Mean is the mean request time; 0 without requests.
func (l Latency) Mean() time.Duration {
	if l.Count == 0 {
		return 0
	}
	return l.Sum / time.Duration(l.Count)
}

// Quantile estimates the q-quantile (0 < q ≤ 1) by interpolating within
// its bucket; 0 without requests.
func (l Latency) Quantile(q float64) time.Duration {
	if l.Count == 0 {
		return 0
	}
	rank := q * float64(l.Count)
	var seen float64
	for i, n := range l.Buckets {
		if n == 0 || seen+float64(n) < rank {
			seen += float64(n)
			continue
		}
		lo := time.Duration(0)
		if i > 0 {
			lo = BucketBounds[i-1]
		}
		hi := BucketBounds[i]
		if i == numBuckets-1 {
			return lo
		}
		return lo + time.Duration(float64(hi-lo)*(rank-seen)/float64(n))
	}
	return BucketBounds[numBuckets-2]
}

func (l Latency) plus(o Latency) Latency {
	out := Latency{Count: l.Count + o.Count, Sum: l.Sum + o.Sum, Buckets: make([]uint64, numBuckets)}
	for i := range out.Buckets {
		if i < len(l.Buckets) {
			out.Buckets[i] += l.Buckets[i]
		}
		if i < len(o.Buckets) {
			out.Buckets[i] += o.Buckets[i]
		}
	}
	return out
}

// numTiers is how many Tier values there are.
const numTiers = int(Fill) + 1

// meter counts and times the requests of one kind.
type meter struct {
	l1     stripedCounter          // requests served by L1: the hot path
	served [numTiers]atomic.Uint64 // by the other tiers
	failed atomic.Uint64
	lat    [numTiers]histogram // by Tier
	// miss times the reads of the source and the fills: Tr.
	miss histogram
	// l2Misses counts requests that looked in L2 and did not find it.
	l2Misses atomic.Uint64
}

// hitStripes is how many cache lines an L1 hit count is spread over.
const hitStripes = 32

// stripedCounter is a counter that goroutines on different cores add to
// without moving one cache line between them: on two cores, one shared
// counter cost an L1 hit 10%.
type stripedCounter struct {
	s [hitStripes]struct {
		n atomic.Uint64
		_ [120]byte
	}
}

func (c *stripedCounter) load() uint64 {
	var n uint64
	for i := range c.s {
		n += c.s[i].n.Load()
	}
	return n
}

// stripeOf picks a stripe for the calling goroutine from its stack's
// address, as l1 does (otter's idea): a goroutine keeps its stripe, and
// goroutines running at once mostly have different ones. The address's low
// 11 bits depend on call depth, not on the goroutine, and are dropped.
func stripeOf(n uint64) uint64 {
	var x byte
	a := uint64(uintptr(unsafe.Pointer(&x))) >> 11
	a ^= a >> 33
	a *= 0xff51afd7ed558ccd
	a ^= a >> 33
	return a & (n - 1)
}

// request times one request against a meter.
type request struct {
	m      *meter
	start  time.Time
	weight uint64 // 0: not timed (yet)
	stripe uint64 // of m.l1
}

// begin starts a request. An L1 hit is timed when its goroutine's stripe
// has counted a multiple of sampleEvery hits: a load of a line the hit
// writes anyway, where a random draw cost 3% of a hit.
func (c *Cache) begin(m *meter) request {
	if c.unmeasured {
		return request{}
	}
	r := request{m: m, stripe: stripeOf(hitStripes)}
	if m.l1.s[r.stripe].n.Load()&(sampleEvery-1) == 0 {
		r.start, r.weight = time.Now(), sampleEvery
	}
	return r
}

// missed marks that L1 did not have it: from here the request is timed, and
// counts once.
func (r *request) missed() {
	if r.weight == 0 {
		r.start = time.Now()
	}
	r.weight = 1
}

// end counts the request as served by tier, or failed.
func (r *request) end(by Tier, err error) {
	m := r.m
	switch {
	case m == nil:
		return
	case err != nil:
		m.failed.Add(1)
		return
	case by == L1:
		m.l1.s[r.stripe].n.Add(1)
	default:
		m.served[by].Add(1)
	}
	if r.weight != 0 {
		m.lat[by].observe(time.Since(r.start), r.weight)
	}
}

// missTook records a read of the source or a fill that took d.
func (r *request) missTook(d time.Duration) {
	if r.m != nil {
		r.m.miss.observe(d, 1)
	}
}

// l2Missed counts a look in L2 that found nothing.
func (r *request) l2Missed() {
	if r.m != nil {
		r.m.l2Misses.Add(1)
	}
}

// counts is a meter read at one moment; counts add up.
type counts struct {
	served           [numTiers]uint64
	failed, l2Misses uint64
	lat              [numTiers]Latency
	miss             Latency
}

func (m *meter) read() counts {
	var n counts
	for t := range numTiers {
		n.served[t] = m.served[t].Load()
		n.lat[t] = m.lat[t].snapshot()
	}
	n.served[L1] = m.l1.load()
	n.failed, n.l2Misses, n.miss = m.failed.Load(), m.l2Misses.Load(), m.miss.snapshot()
	return n
}

func (n counts) plus(o counts) counts {
	for t := range numTiers {
		n.served[t] += o.served[t]
		n.lat[t] = n.lat[t].plus(o.lat[t])
	}
	n.failed += o.failed
	n.l2Misses += o.l2Misses
	n.miss = n.miss.plus(o.miss)
	return n
}

// TierMeasure is what one tier did for the requests that reached it.
type TierMeasure struct {
	Tier string `json:"tier"`
	// Requests reached this tier (missed every faster one); Hits it served.
	Requests uint64  `json:"requests"`
	Hits     uint64  `json:"hits"`
	HitRate  float64 `json:"hit_rate"` // Hits / Requests; 0 without requests
	Latency  Latency `json:"latency"`  // of the requests it served
}

// Measures are the seed's measures of one kind of request.
type Measures struct {
	Requests uint64 `json:"requests"`
	// Hits were served by a cache tier (L1, L2); Misses read the source or
	// ran fill, or joined a concurrent caller that did (Shared).
	Hits    uint64  `json:"hits"`
	Misses  uint64  `json:"misses"`
	Shared  uint64  `json:"shared"`
	Failed  uint64  `json:"failed"`
	HitRate float64 `json:"hit_rate"`
	// Tiers are the cache tiers, fastest first, then the miss path
	// ("source" for tensors, "fill" for values) and "shared".
	Tiers []TierMeasure `json:"tiers"`
	// Tc is the mean time of a hit; Tr the mean time of a read of the source
	// or a fill (MissLatency's mean).
	Tc          time.Duration `json:"tc_ns"`
	Tr          time.Duration `json:"tr_ns"`
	MissLatency Latency       `json:"miss_latency"`
	// Formula is HR·Tc + (1 − HR)·(Tc + Tr); Measured the mean time of the
	// requests that did not fail.
	Formula  time.Duration `json:"formula_ns"`
	Measured time.Duration `json:"measured_ns"`
}

func (n counts) measures(missTier Tier) Measures {
	var s Measures
	l1, l2 := n.served[L1], n.served[L2]
	miss, shared := n.served[missTier], n.served[Shared]
	s.Hits, s.Misses, s.Shared, s.Failed = l1+l2, miss+shared, shared, n.failed
	s.Requests = s.Hits + s.Misses + s.Failed
	rate := func(hits, reqs uint64) float64 {
		if reqs == 0 {
			return 0
		}
		return float64(hits) / float64(reqs)
	}
	served := s.Hits + s.Misses
	s.HitRate = rate(s.Hits, served)
	reachedL2 := l2 + n.l2Misses
	s.Tiers = []TierMeasure{
		{Tier: L1.String(), Requests: served, Hits: l1, HitRate: rate(l1, served), Latency: n.lat[L1]},
		{Tier: L2.String(), Requests: reachedL2, Hits: l2, HitRate: rate(l2, reachedL2), Latency: n.lat[L2]},
		{Tier: missTier.String(), Requests: miss, Hits: miss, HitRate: rate(miss, miss), Latency: n.lat[missTier]},
		{Tier: Shared.String(), Requests: shared, Hits: shared, HitRate: rate(shared, shared), Latency: n.lat[Shared]},
	}
	hits := n.lat[L1].plus(n.lat[L2])
	all := hits.plus(n.lat[missTier]).plus(n.lat[Shared])
	s.Tc, s.Measured = hits.Mean(), all.Mean()
	s.MissLatency = n.miss
	s.Tr = s.MissLatency.Mean()
	hr := s.HitRate
	s.Formula = time.Duration(hr*float64(s.Tc) + (1-hr)*float64(s.Tc+s.Tr))
	return s
}
