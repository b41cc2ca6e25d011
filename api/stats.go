package api

import (
	"math"
	"time"
)

// Stats is the answer of GET PathStats: the JSON of the daemon's
// tier.Stats, with the same fields (see tier.Stats for what each counts).
// L1, L2, L3, Lifetime and Latency convert to tier's and l1's and l2's
// own types (l2.Stats(s.L2)); the others do not, as their fields are of
// this package's types.
type Stats struct {
	L1            L1Stats
	L2            L2Stats // zero without L2
	L3            L3Stats // zero without L3
	L2Unavailable string

	Requests    uint64
	L1Hits      uint64
	L2Hits      uint64
	L3Hits      uint64
	SourceLoads uint64
	SharedLoads uint64
	Failed      uint64

	WriteBehindHits uint64
	WarmLoads       uint64
	L2Errors        uint64
	Removed         uint64

	WriteBehindDropped uint64
	WriteBehindErrors  uint64

	// Measured are hit rates and average access times of the daemon's
	// requests since it started; LifetimeMeasured those of every process
	// that used its cache directory.
	Measured
	LifetimeMeasured Measured

	// Lifetime counts reads since the cache directory was created.
	Lifetime Counters
}

// L1Stats are the RAM tier's (l1.Stats).
type L1Stats struct {
	Hits, Misses, Evictions uint64
	Rejected                uint64
	Entries                 int
	Bytes                   int64
	MaxBytes                int64
}

// L2Stats are the disk tier's (l2.Stats).
type L2Stats struct {
	Dir          string
	Entries      int
	LogicalBytes uint64
	StoredBytes  uint64
	ChargedBytes uint64
	MaxBytes     int64
	DiskBytes    int64 // the directory's disk use (du); -1 if it could not be read

	Hits, Misses, Corrupt, Evictions, Expired, Puts, PutErrors uint64
}

// L3Stats are the fleet tier's (tier.L3Stats).
type L3Stats struct {
	Enabled                   bool
	Down                      bool
	Errors                    uint64
	Corrupt                   uint64
	Leases                    uint64
	Waits                     uint64
	Writes                    uint64
	WriteErrors, WriteDropped uint64
}

// Counters are read counts per tier (tier.Counters).
type Counters struct {
	Requests    uint64 `json:"requests"`
	L1Hits      uint64 `json:"l1_hits"`
	L2Hits      uint64 `json:"l2_hits"`
	L2Misses    uint64 `json:"l2_misses"`
	L3Hits      uint64 `json:"l3_hits"`
	SourceLoads uint64 `json:"source_loads"`
	SharedLoads uint64 `json:"shared_loads"`
	Failed      uint64 `json:"failed"`
	WarmLoads   uint64 `json:"warm_loads"`
	L2Errors    uint64 `json:"l2_errors"`
}

// Measured are the measures of tensor requests and of value requests, in
// all and by namespace (tier.Measured).
type Measured struct {
	Tensors         Measures            `json:"tensors"`
	Values          Measures            `json:"values"`
	Namespaces      map[string]Measures `json:"namespaces,omitempty"`
	OtherNamespaces *Measures           `json:"other_namespaces,omitempty"`
}

// Measures are the hit rate and the average access time of one kind of
// request: by the formula HR·Tc + (1 − HR)·(Tc + Tr), and as measured
// (tier.Measures).
type Measures struct {
	Requests    uint64        `json:"requests"`
	Hits        uint64        `json:"hits"`
	Misses      uint64        `json:"misses"`
	Shared      uint64        `json:"shared"`
	Absent      uint64        `json:"absent"`
	Failed      uint64        `json:"failed"`
	HitRate     float64       `json:"hit_rate"`
	Tiers       []TierMeasure `json:"tiers"` // l1, l2, l3, then source or fill, then shared
	Tc          time.Duration `json:"tc_ns"`
	Tr          time.Duration `json:"tr_ns"`
	MissLatency Latency       `json:"miss_latency"`
	Formula     time.Duration `json:"formula_ns"`
	Measured    time.Duration `json:"measured_ns"`
}

// TierMeasure is what one tier did for the requests that reached it
// (tier.TierMeasure).
type TierMeasure struct {
	Tier     string  `json:"tier"`
	Requests uint64  `json:"requests"`
	Hits     uint64  `json:"hits"`
	HitRate  float64 `json:"hit_rate"`
	Latency  Latency `json:"latency"`
}

// Latency is a histogram of request times (tier.Latency).
type Latency struct {
	Count uint64        `json:"count"`
	Sum   time.Duration `json:"sum_ns"`
	// Buckets[i] counts requests that took less than BucketBounds[i] and
	// at least BucketBounds[i-1] (not cumulative).
	Buckets []uint64 `json:"buckets"`
}

// BucketBounds are the upper bounds of Latency.Buckets, the last one
// infinite (tier.BucketBounds); shared, do not modify.
var BucketBounds = func() []time.Duration {
	const n, base = 32, 128 * time.Nanosecond
	b := make([]time.Duration, n)
	for i := range n - 1 {
		b[i] = base << i
	}
	b[n-1] = math.MaxInt64
	return b
}()

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
	last := len(BucketBounds) - 1
	rank := q * float64(l.Count)
	var seen float64
	for i, n := range l.Buckets {
		if i > last {
			break
		}
		if n == 0 || seen+float64(n) < rank {
			seen += float64(n)
			continue
		}
		lo := time.Duration(0)
		if i > 0 {
			lo = BucketBounds[i-1]
		}
		if i == last {
			return lo
		}
		return lo + time.Duration(float64(BucketBounds[i]-lo)*(rank-seen)/float64(n))
	}
	return BucketBounds[last-1]
}
