package tier

import (
	"cmp"
	"errors"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcache/modelcache/api"
	"github.com/modelcache/modelcache/internal/key"
	"github.com/modelcache/modelcache/internal/stripe"
)

// The cache is judged, as the paper it grew from judges one, by its hit rate
// HR and its average access time T = HR·Tc + (1 − HR)·(Tc + Tr), Tc being the
// time to look in the cache and Tr the time to read or compute what it
// misses. A meter counts the requests of one kind (tensors, values, one
// namespace) by the tier that served them and keeps their latencies in
// histograms, from which Measures computes both T by the formula and the
// mean actually measured.
//
// Timing a hit in L1 (tens of nanoseconds) with two clock reads would add
// half to its cost, so one L1 hit in sampleEvery is timed: L1's histogram
// holds that sample, and the means weigh its mean by the exact count of L1
// hits. Every request that reaches a slower tier is timed, from the moment
// L1 missed (or from its start, if sampled).

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
	sum    atomic.Int64 // nanoseconds
}

func bucketOf(d time.Duration) int {
	if d < bucketBase {
		return 0
	}
	return min(bits.Len64(uint64(d/bucketBase)), numBuckets-1)
}

func (h *histogram) observe(d time.Duration) {
	h.counts[bucketOf(d)].Add(1)
	h.sum.Add(int64(d))
}

// BucketBounds are the upper bounds of Latency.Buckets, the last one
// infinite; shared, do not modify. They are the wire's (api), which the
// histogram's numBuckets and bucketBase spell again as constants.
var BucketBounds = api.BucketBounds

// Latency is a histogram of request times, with its Mean and Quantile:
// the wire's type, so that a client reads what the cache measured.
type Latency = api.Latency

func (h *histogram) snapshot() Latency {
	l := Latency{Buckets: make([]uint64, numBuckets), Sum: time.Duration(h.sum.Load())}
	for i := range h.counts {
		l.Buckets[i] = h.counts[i].Load()
		l.Count += l.Buckets[i]
	}
	return l
}

// addLatency is the histogram of the requests of l and of o.
func addLatency(l, o Latency) Latency {
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
const numTiers = int(L3) + 1

// meter counts and times the requests of one kind.
type meter struct {
	l1     stripedCounter          // requests served by L1: the hot path
	served [numTiers]atomic.Uint64 // by the other tiers
	failed atomic.Uint64
	lat    [numTiers]histogram // by Tier
	// miss times the reads of the source and the fills: Tr.
	miss histogram
	// l2Misses and l3Misses count requests that looked in L2 (L3) and
	// did not find it.
	l2Misses, l3Misses atomic.Uint64
	// absent counts and times the misses of lookups without a fill
	// (values): nothing served them, yet they are requests the cache
	// missed, not failures.
	absent    atomic.Uint64
	absentLat histogram
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

// request times one request against a meter.
type request struct {
	m      *meter
	start  time.Time
	timed  bool   // start is set
	stripe uint64 // of m.l1
}

// begin starts a request. An L1 hit is timed when its goroutine's stripe
// has counted a multiple of sampleEvery hits: a load of a line the hit
// writes anyway, where a random draw cost 3% of a hit.
func (c *Cache) begin(m *meter) request {
	if c.unmeasured {
		return request{}
	}
	r := request{m: m, stripe: stripe.Of(hitStripes)}
	if m.l1.s[r.stripe].n.Load()&(sampleEvery-1) == 0 {
		r.startTimer()
	}
	return r
}

func (r *request) startTimer() { r.start, r.timed = time.Now(), true }

// hit counts an L1 hit: the hot path, small enough to be inlined.
func (r *request) hit() {
	if r.m != nil {
		r.m.l1.s[r.stripe].n.Add(1)
		if r.timed {
			r.m.lat[L1].observe(time.Since(r.start))
		}
	}
}

// missed marks that L1 did not have it: from here the request is timed, and
// counts once.
func (r *request) missed() {
	if !r.timed {
		r.startTimer()
	}
}

// end counts the request as served by tier, or failed.
func (r *request) end(by Tier, err error) {
	if err == nil && by == L1 {
		r.hit()
		return
	}
	m := r.m
	switch {
	case m == nil:
		return
	case errors.Is(err, errAbsent):
		m.absent.Add(1)
		m.absentLat.observe(time.Since(r.start))
		return
	case err != nil:
		m.failed.Add(1)
		return
	case by == L1:
		m.l1.s[r.stripe].n.Add(1)
	default:
		m.served[by].Add(1)
	}
	if r.timed {
		m.lat[by].observe(time.Since(r.start))
	}
}

// missTook records a read of the source or a fill that took d.
func (r *request) missTook(d time.Duration) {
	if r.m != nil {
		r.m.miss.observe(d)
	}
}

// l2Missed counts a look in L2 that found nothing.
func (r *request) l2Missed() {
	if r.m != nil {
		r.m.l2Misses.Add(1)
	}
}

// l3Missed counts a look in L3 that found nothing.
func (r *request) l3Missed() {
	if r.m != nil {
		r.m.l3Misses.Add(1)
	}
}

// errAbsent marks, wrapped beside errs.ErrNotFound, the error of a lookup
// without a fill that missed; it adds nothing to the message.
var errAbsent = errors.New("")

// counts is a meter read at one moment; counts add up.
type counts struct {
	served                   [numTiers]uint64
	failed, l2Misses, absent uint64
	l3Misses                 uint64
	lat                      [numTiers]Latency
	miss, absentLat          Latency
}

func (m *meter) read() counts {
	var n counts
	for t := range numTiers {
		n.served[t] = m.served[t].Load()
		n.lat[t] = m.lat[t].snapshot()
	}
	n.served[L1] = m.l1.load()
	n.failed, n.l2Misses, n.miss = m.failed.Load(), m.l2Misses.Load(), m.miss.snapshot()
	n.l3Misses = m.l3Misses.Load()
	n.absent, n.absentLat = m.absent.Load(), m.absentLat.snapshot()
	return n
}

func (n counts) plus(o counts) counts {
	for t := range numTiers {
		n.served[t] += o.served[t]
		n.lat[t] = addLatency(n.lat[t], o.lat[t])
	}
	n.failed += o.failed
	n.l2Misses += o.l2Misses
	n.l3Misses += o.l3Misses
	n.miss = addLatency(n.miss, o.miss)
	n.absent += o.absent
	n.absentLat = addLatency(n.absentLat, o.absentLat)
	return n
}

// TierMeasure is what one tier did for the requests that reached it.
type TierMeasure struct {
	Tier string `json:"tier"`
	// Requests reached this tier (missed every faster one); Hits it served.
	Requests uint64  `json:"requests"`
	Hits     uint64  `json:"hits"`
	HitRate  float64 `json:"hit_rate"` // Hits / Requests; 0 without requests
	// Latency is of the requests it served; for L1, of a sample of them
	// (one in 64).
	Latency Latency `json:"latency"`
}

// Measures are the hit rate and the average access time of one kind of
// request, per tier and in all.
type Measures struct {
	Requests uint64 `json:"requests"`
	// Hits were served by a cache tier (L1, L2, L3); Misses read the source or
	// ran fill, or joined a concurrent caller that did (Shared), or were
	// lookups of values without a fill that found nothing (Absent).
	Hits    uint64  `json:"hits"`
	Misses  uint64  `json:"misses"`
	Shared  uint64  `json:"shared"`
	Absent  uint64  `json:"absent"`
	Failed  uint64  `json:"failed"`
	HitRate float64 `json:"hit_rate"`
	// Tiers are the cache tiers, fastest first (l1, l2, l3), then the
	// miss path ("source" for tensors, "fill" for values) and "shared".
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
	l1, l2, l3 := n.served[L1], n.served[L2], n.served[L3]
	miss, shared := n.served[missTier], n.served[Shared]
	s.Hits, s.Misses, s.Shared, s.Absent, s.Failed = l1+l2+l3, miss+shared+n.absent, shared, n.absent, n.failed
	s.Requests = s.Hits + s.Misses + s.Failed
	rate := func(hits, reqs uint64) float64 {
		if reqs == 0 {
			return 0
		}
		return float64(hits) / float64(reqs)
	}
	served := s.Hits + s.Misses
	s.HitRate = rate(s.Hits, served)
	reachedL2, reachedL3 := l2+n.l2Misses, l3+n.l3Misses
	s.Tiers = []TierMeasure{
		{Tier: L1.String(), Requests: served, Hits: l1, HitRate: rate(l1, served), Latency: n.lat[L1]},
		{Tier: L2.String(), Requests: reachedL2, Hits: l2, HitRate: rate(l2, reachedL2), Latency: n.lat[L2]},
		{Tier: L3.String(), Requests: reachedL3, Hits: l3, HitRate: rate(l3, reachedL3), Latency: n.lat[L3]},
		{Tier: missTier.String(), Requests: miss, Hits: miss, HitRate: rate(miss, miss), Latency: n.lat[missTier]},
		{Tier: Shared.String(), Requests: shared, Hits: shared, HitRate: rate(shared, shared), Latency: n.lat[Shared]},
	}
	// L1's samples stand for all its hits; the other tiers time every
	// request.
	l1Time := float64(l1) * float64(n.lat[L1].Mean())
	mean := func(total float64, count uint64) time.Duration {
		if count == 0 {
			return 0
		}
		return time.Duration(total / float64(count))
	}
	rest := []Latency{n.lat[missTier], n.lat[Shared], n.absentLat}
	total := l1Time + float64(n.lat[L2].Sum) + float64(n.lat[L3].Sum)
	count := l1 + n.lat[L2].Count + n.lat[L3].Count
	s.Tc = mean(total, count)
	for _, l := range rest {
		total += float64(l.Sum)
		count += l.Count
	}
	s.Measured = mean(total, count)
	s.MissLatency = n.miss
	s.Tr = s.MissLatency.Mean()
	hr := s.HitRate
	s.Formula = time.Duration(hr*float64(s.Tc) + (1-hr)*float64(s.Tc+s.Tr))
	return s
}

// Measured are the measures of tensor requests and of value requests, in
// all and by namespace.
type Measured struct {
	Tensors Measures `json:"tensors"`
	Values  Measures `json:"values"`
	// Namespaces are by name, for at most Options.MaxNamespaceMeters
	// namespaces (the busiest); OtherNamespaces are those of every other
	// namespace together, and of lookups in namespaces that hold nothing
	// (nil if there were none). Values adds up all of them.
	Namespaces      map[string]Measures `json:"namespaces,omitempty"`
	OtherNamespaces *Measures           `json:"other_namespaces,omitempty"`
}

// DefaultMaxNamespaceMeters is Options.MaxNamespaceMeters' default.
const DefaultMaxNamespaceMeters = 64

// otherNamespaces stands, in maps of counts by namespace, for the
// namespaces measured together; no namespace can be called so (NUL).
const otherNamespaces = "\x00other"

// promoteEvery: a namespace counted in the shared meter asks for one of
// its own every promoteEvery requests.
const promoteEvery = 256

// nsMeters bounds what measuring namespaces holds, whatever names clients
// make up: max namespaces (Options.MaxNamespaceMeters) have a meter of
// their own, chosen among those kept (configured, or holding values): the
// first ones, then any whose requests outnumber those of the least busy
// one, which gives up its meter; the others, and lookups that keep no
// state, count in other.
type nsMeters struct {
	max   int
	other meter
	mu    sync.Mutex
	own   []*nsState // with a meter of their own, at most max
	// folded is what the meters namespaces gave up had counted: other's
	// from then on. A request that began before the change and ends after
	// its meter was read goes uncounted.
	folded counts
	// known are the namespaces L2's lifetime counters measure by name (at
	// most max): namespaces of earlier processes, whose state a lookup
	// keeps, so that a process's misses in them (every warm command is
	// one) count under their name.
	knownOnce sync.Once
	known     map[string]bool
}

// knownNamespace says whether L2's lifetime counters measure ns by name.
func (c *Cache) knownNamespace(ns string) bool {
	c.nsm.knownOnce.Do(func() {
		if c.l2 == nil {
			return
		}
		stored, err := c.rec.Counts()
		if err != nil {
			return
		}
		_, fields := keptMeters(stored)
		byNS := make(map[string]counts, len(fields))
		for ns, f := range fields {
			byNS[ns] = countsFrom(f)
		}
		c.nsm.known = namedMeters(c.nsm.max, nil, byNS)
	})
	return c.nsm.known[ns]
}

func (m *nsMeters) init(n int) {
	if n == 0 {
		n = DefaultMaxNamespaceMeters
	}
	m.max = n
}

// assign gives st, just kept, a meter of its own if there is room.
func (m *nsMeters) assign(st *nsState) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.own) < m.max {
		st.meter.Store(new(meter))
		m.own = append(m.own, st)
	}
}

// meterOf is the meter of a request in namespace st: small enough to be
// inlined on the way to an L1 hit.
func (c *Cache) meterOf(st *nsState) *meter {
	m := st.meter.Load()
	if m == &c.nsm.other {
		c.nsm.unmetered(st)
	}
	return m
}

// unmetered counts a request of st in the shared meter, and every
// promoteEvery of them asks for a meter of its own.
func (m *nsMeters) unmetered(st *nsState) {
	if !st.transient && st.unmetered.Add(1)%promoteEvery == 0 {
		m.promote(st)
	}
}

// promote gives st the meter of the least busy namespace with one, if st
// has been asked more since it counts in other than that one since it got
// its meter.
func (m *nsMeters) promote(st *nsState) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if st.meter.Load() != &m.other || len(m.own) == 0 {
		return
	}
	least, fewest := -1, st.unmetered.Load()
	for i, o := range m.own {
		if n := o.meter.Load().requests(); n < fewest {
			least, fewest = i, n
		}
	}
	if least < 0 {
		return
	}
	victim := m.own[least]
	m.folded = m.folded.plus(victim.meter.Load().read())
	victim.unmetered.Store(0)
	victim.meter.Store(&m.other)
	st.meter.Store(new(meter))
	m.own[least] = st
}

// requests is how many requests m counted.
func (m *meter) requests() uint64 {
	n := m.l1.load() + m.failed.Load() + m.absent.Load()
	for t := range m.served {
		n += m.served[t].Load()
	}
	return n
}

// requests is how many requests n counts.
func (n counts) requests() uint64 {
	r := n.failed + n.absent
	for _, s := range n.served {
		r += s
	}
	return r
}

// The meters of every process that used a directory are kept in L2's
// counters, added at each Close as the read counters are: under
// meterRecord, "t\x00" for tensors, "v\x00<namespace>\x00" (values of no
// namespace: "v\x00\x00") or "o\x00" for the other namespaces, then a
// field.
const meterRecord = "meter\x00"

// add adds n's non-zero fields to deltas under prefix.
func (n counts) add(prefix string, deltas map[string]uint64) {
	put := func(name string, v uint64) {
		if v != 0 {
			deltas[prefix+name] += v
		}
	}
	for t := range numTiers {
		ts := strconv.Itoa(t)
		put("s"+ts, n.served[t])
		put("L"+ts, uint64(n.lat[t].Sum))
		for i, b := range n.lat[t].Buckets {
			put("l"+ts+"."+strconv.Itoa(i), b)
		}
	}
	put("f", n.failed)
	put("x", n.l2Misses)
	put("y", n.l3Misses)
	put("a", n.absent)
	put("A", uint64(n.absentLat.Sum))
	for i, b := range n.absentLat.Buckets {
		put("a"+strconv.Itoa(i), b)
	}
	put("M", uint64(n.miss.Sum))
	for i, b := range n.miss.Buckets {
		put("m"+strconv.Itoa(i), b)
	}
}

// countsFrom reads back what add wrote: records maps a field to its value.
func countsFrom(fields map[string]uint64) counts {
	var n counts
	for t := range numTiers {
		n.lat[t].Buckets = make([]uint64, numBuckets)
	}
	n.miss.Buckets = make([]uint64, numBuckets)
	n.absentLat.Buckets = make([]uint64, numBuckets)
	bucket := func(s string) (int, bool) {
		i, err := strconv.Atoi(s)
		return i, err == nil && i >= 0 && i < numBuckets
	}
	tier := func(s string) (int, bool) {
		t, err := strconv.Atoi(s)
		return t, err == nil && t >= 0 && t < numTiers
	}
	for f, v := range fields {
		if f == "" {
			continue
		}
		rest := f[1:]
		switch f[0] {
		case 's':
			if t, ok := tier(rest); ok {
				n.served[t] = v
			}
		case 'L':
			if t, ok := tier(rest); ok {
				n.lat[t].Sum = time.Duration(v)
			}
		case 'l':
			ts, bs, _ := strings.Cut(rest, ".")
			t, ok1 := tier(ts)
			i, ok2 := bucket(bs)
			if ok1 && ok2 {
				n.lat[t].Buckets[i] = v
				n.lat[t].Count += v
			}
		case 'f':
			n.failed = v
		case 'x':
			n.l2Misses = v
		case 'y':
			n.l3Misses = v
		case 'A':
			n.absentLat.Sum = time.Duration(v)
		case 'a':
			if rest == "" {
				n.absent = v
			} else if i, ok := bucket(rest); ok {
				n.absentLat.Buckets[i] = v
				n.absentLat.Count += v
			}
		case 'M':
			n.miss.Sum = time.Duration(v)
		case 'm':
			if i, ok := bucket(rest); ok {
				n.miss.Buckets[i] = v
				n.miss.Count += v
			}
		}
	}
	return n
}

// sessionCounts is this process's counts: tensors, all values, and by
// namespace (the other namespaces under otherNamespaces).
func (c *Cache) sessionCounts() (tensors, values counts, byNS map[string]counts) {
	tensors, values, byNS = c.tensors.read(), c.values.read(), map[string]counts{}
	m := &c.nsm
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, st := range m.own {
		if n := st.meter.Load().read(); n.any() {
			byNS[st.name] = n
			values = values.plus(n)
		}
	}
	if n := m.other.read().plus(m.folded); n.any() {
		byNS[otherNamespaces] = n
		values = values.plus(n)
	}
	return tensors, values, byNS
}

func (n counts) any() bool {
	for _, s := range n.served {
		if s != 0 {
			return true
		}
	}
	return n.failed != 0 || n.absent != 0
}

// recordOf is the prefix of the kept fields of namespace ns (or of
// otherNamespaces) in L2's counters.
func recordOf(ns string) string {
	if ns == otherNamespaces {
		return meterRecord + "o\x00"
	}
	return meterRecord + "v\x00" + ns + "\x00"
}

// keptMeters are the kept meters read back from L2's counters: fields by
// owner ("t", a namespace, otherNamespaces; values of no namespace under
// "").
func keptMeters(stored map[string]uint64) (tensors map[string]uint64, byNS map[string]map[string]uint64) {
	tensors, byNS = map[string]uint64{}, map[string]map[string]uint64{}
	for name, val := range stored {
		rest, ok := strings.CutPrefix(name, meterRecord)
		if !ok {
			continue
		}
		var ns, field string
		switch {
		case strings.HasPrefix(rest, "t\x00"):
			tensors[rest[2:]] = val
			continue
		case strings.HasPrefix(rest, "o\x00"):
			ns, field = otherNamespaces, rest[2:]
		case strings.HasPrefix(rest, "v\x00"):
			if ns, field, ok = strings.Cut(rest[2:], "\x00"); !ok {
				continue
			}
		default:
			continue
		}
		if byNS[ns] == nil {
			byNS[ns] = map[string]uint64{}
		}
		byNS[ns][field] = val
	}
	return tensors, byNS
}

// namedMeters is which namespaces keep their measures by name, at most max
// of those in session (this process's) and stored (kept in L2): first
// those asked most in this process, then those asked most in all; a name
// no entry point accepts now (an older build's) never. The others are
// measured together.
func namedMeters(limit int, session, stored map[string]counts) map[string]bool {
	type cand struct {
		ns            string
		session, life uint64
	}
	var cs []cand
	seen := map[string]bool{}
	for _, m := range []map[string]counts{session, stored} {
		for ns := range m {
			if seen[ns] || ns == "" || ns == otherNamespaces || key.CheckNamespace(ns) != nil {
				continue
			}
			seen[ns] = true
			s := session[ns].requests()
			cs = append(cs, cand{ns, s, s + stored[ns].requests()})
		}
	}
	slices.SortFunc(cs, func(a, b cand) int {
		return cmp.Or(cmp.Compare(b.session, a.session), cmp.Compare(b.life, a.life), strings.Compare(a.ns, b.ns))
	})
	keep := map[string]bool{}
	for _, c := range cs[:min(max(limit, 0), len(cs))] {
		keep[c.ns] = true
	}
	return keep
}

// foldNamed adds the counts of every namespace of byNS not in keep to
// those of otherNamespaces.
func foldNamed(byNS map[string]counts, keep map[string]bool) {
	for ns, n := range byNS {
		if ns != "" && ns != otherNamespaces && !keep[ns] {
			byNS[otherNamespaces] = byNS[otherNamespaces].plus(n)
			delete(byNS, ns)
		}
	}
}

// counterBatch bounds the counters Close adds in one L2 transaction: one
// namespace moved to the other ones is 2 × 274 at most, and Badger takes
// thousands in one transaction even with its smallest memtable (4 MiB).
const counterBatch = 1024

// saveCounters adds this process's read counters and meters to those kept
// in L2, at Close. What is kept stays bounded: at most MaxNamespaceMeters
// namespaces by name (namedMeters), the others' counts moved to the other
// namespaces' (a namespace's move in one transaction, so that a crash
// loses or doubles none of it), in transactions of at most counterBatch
// counters.
func (c *Cache) saveCounters() error {
	stored, err := c.rec.Counts()
	if err != nil {
		stored = nil // add this process's alone
	}
	t, _, session := c.sessionCounts()
	_, storedFields := keptMeters(stored)
	storedNS := make(map[string]counts, len(storedFields))
	for ns, f := range storedFields {
		storedNS[ns] = countsFrom(f)
	}
	keep := namedMeters(c.nsm.max, session, storedNS)

	first := c.session().asMap()
	t.add(meterRecord+"t\x00", first)
	// Failures without a namespace (an invalid name) count under "".
	c.values.read().add(meterRecord+"v\x00\x00", first)
	foldNamed(session, keep)
	var batches []map[string]uint64
	for ns, n := range session {
		if ns == otherNamespaces {
			n.add(recordOf(ns), first)
			continue
		}
		d := map[string]uint64{}
		n.add(recordOf(ns), d)
		batches = append(batches, d)
	}
	for ns, f := range storedFields {
		if ns == "" || ns == otherNamespaces || keep[ns] {
			continue
		}
		// Moved: added to the other namespaces', and removed (a counter
		// that comes to 0 is removed: -v is added).
		d := map[string]uint64{}
		for field, v := range f {
			d[recordOf(ns)+field] -= v
			d[recordOf(otherNamespaces)+field] += v
		}
		batches = append(batches, d)
	}
	batch := first
	var errs []error
	for _, d := range batches {
		if len(batch)+len(d) > counterBatch {
			errs = append(errs, c.rec.Add(batch))
			batch = map[string]uint64{}
		}
		for k, v := range d {
			batch[k] += v
		}
	}
	errs = append(errs, c.rec.Add(batch))
	return errors.Join(errs...)
}

// measured turns counts into Measures.
func measured(tensors, values counts, byNS map[string]counts) Measured {
	m := Measured{Tensors: tensors.measures(Source), Values: values.measures(Fill)}
	for ns, n := range byNS {
		switch {
		case ns == "":
			continue
		case ns == otherNamespaces:
			o := n.measures(Fill)
			m.OtherNamespaces = &o
			continue
		}
		if m.Namespaces == nil {
			m.Namespaces = map[string]Measures{}
		}
		m.Namespaces[ns] = n.measures(Fill)
	}
	return m
}

// lifetimeMeasured adds the kept meters (stored, L2's counters) to this
// process's counts (sessionCounts; byNS is changed), by name for the
// namespaces the next Close will keep by name.
func (c *Cache) lifetimeMeasured(t, v counts, byNS map[string]counts, stored map[string]uint64) Measured {
	tf, fields := keptMeters(stored)
	t = t.plus(countsFrom(tf))
	storedNS := make(map[string]counts, len(fields))
	for ns, f := range fields {
		storedNS[ns] = countsFrom(f)
	}
	keep := namedMeters(c.nsm.max, byNS, storedNS)
	for ns, n := range storedNS {
		v = v.plus(n)
		byNS[ns] = byNS[ns].plus(n)
	}
	foldNamed(byNS, keep)
	return measured(t, v, byNS)
}
