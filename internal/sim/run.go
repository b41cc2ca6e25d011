package sim

import (
	"fmt"
	"math"

	"github.com/modelcache/modelcache/l1"
)

// Result is one policy at one size on one trace.
type Result struct {
	Trace    string  `json:"trace"`
	Policy   string  `json:"policy"`
	Size     uint64  `json:"size"`
	Weighted bool    `json:"weighted"`
	Hits     uint64  `json:"hits"`
	Requests uint64  `json:"requests"`
	HitRatio float64 `json:"hit_ratio"`
	// The same in bytes (equal to the above for unweighted traces): a
	// policy that keeps small entries over large ones raises the hit ratio
	// and may lower this, the share of bytes L1 served.
	HitBytes     uint64  `json:"hit_bytes"`
	RequestBytes uint64  `json:"request_bytes"`
	ByteHitRatio float64 `json:"byte_hit_ratio"`
}

// Tally is what a replay counts.
type Tally struct {
	Hits, HitBytes uint64
}

// Cache is what Replay needs of a cache: a lookup that reports a hit, and
// an insertion after a miss. Rival caches are adapted to it by the
// benchmarks module.
type Cache interface {
	Get(key uint64) bool
	Set(key uint64, size uint32)
}

// Replay runs the trace through c: each request is a Get, and a miss is
// followed by a Set, as a read-through cache does.
func Replay(t *Trace, c Cache) (n Tally) {
	for i, k := range t.Keys {
		size := uint32(1)
		if t.Sizes != nil {
			size = t.Sizes[i]
		}
		if c.Get(k) {
			n.Hits++
			n.HitBytes += uint64(size)
			continue
		}
		c.Set(k, size)
	}
	return n
}

// l1Cache adapts l1 to Cache, counting only the trace's sizes.
type l1Cache struct{ c *l1.Cache[uint64, struct{}] }

func (a l1Cache) Get(k uint64) bool { _, ok := a.c.Get(k); return ok }
func (a l1Cache) Set(k uint64, size uint32) {
	a.c.Set(k, struct{}{}, int64(size))
}

// NewL1 returns an l1 cache of the policy holding size units (entries, or
// bytes for weighted traces), charging no per-entry overhead. For weighted
// traces l1's admission limit applies as in production (no entry over half
// the cache); unweighted entries are all one unit. Keys are hashed with a
// fixed function, so that a replay gives the same hit ratio every time.
func NewL1(policy l1.Policy, size uint64, weighted bool) (Cache, error) {
	frac := 1.0
	if weighted {
		frac = 0 // l1's default
	}
	c, err := l1.New(&l1.Options[uint64, struct{}]{MaxBytes: int64(size), Policy: policy, ExcludeOverhead: true, MaxEntryFraction: frac, Hash: mix64})
	if err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	return l1Cache{c}, nil
}

// Run replays t through an l1 cache of each policy at each size.
func Run(t *Trace, policies []l1.Policy, sizes []uint64) ([]Result, error) {
	var out []Result
	for _, p := range policies {
		for _, s := range sizes {
			c, err := NewL1(p, s, t.Sizes != nil)
			if err != nil {
				return nil, err
			}
			out = append(out, NewResult(t, string(p), s, Replay(t, c)))
		}
	}
	return out, nil
}

// NewResult fills a Result.
func NewResult(t *Trace, policy string, size uint64, n Tally) Result {
	r := Result{Trace: t.Name, Policy: policy, Size: size, Weighted: t.Sizes != nil,
		Hits: n.Hits, Requests: uint64(len(t.Keys)), HitBytes: n.HitBytes, RequestBytes: t.RequestBytes()}
	if r.Requests > 0 {
		r.HitRatio = float64(r.Hits) / float64(r.Requests)
		r.ByteHitRatio = float64(r.HitBytes) / float64(r.RequestBytes)
	}
	return r
}

// AutoSizes returns n sizes spaced evenly on a log scale from 0.5% to 50% of
// the trace's footprint: the range where a miss-ratio curve bends.
func AutoSizes(t *Trace, n int) []uint64 {
	keys, bytes := t.Footprint()
	total := uint64(keys)
	if t.Sizes != nil {
		total = bytes
	}
	out := make([]uint64, 0, n)
	lo, hi := 0.005, 0.5
	for i := range n {
		f := lo
		if n > 1 {
			f = lo * math.Pow(hi/lo, float64(i)/float64(n-1))
		}
		s := max(uint64(f*float64(total)), 1)
		if len(out) == 0 || s != out[len(out)-1] {
			out = append(out, s)
		}
	}
	return out
}

// mix64 is SplitMix64's finalizer: a fixed hash that spreads any keys, even
// consecutive integers, over all 64 bits.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}
