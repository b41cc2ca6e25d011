package tier

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestHistogram_BucketsMeanQuantile(t *testing.T) {
	var h histogram
	for range 90 {
		h.observe(10 * time.Microsecond)
	}
	for range 10 {
		h.observe(5 * time.Millisecond)
	}
	l := h.snapshot()
	require.Equal(t, uint64(100), l.Count)
	require.Equal(t, 90*10*time.Microsecond+10*5*time.Millisecond, l.Sum)
	require.Equal(t, l.Sum/100, l.Mean())
	// Quantiles land in the bucket of what they stand for: bucket bounds
	// double, so within a factor of two.
	p50, p99 := l.Quantile(0.5), l.Quantile(0.99)
	require.True(t, p50 > 5*time.Microsecond && p50 <= 20*time.Microsecond, "p50 %v", p50)
	require.True(t, p99 > 2500*time.Microsecond && p99 <= 10*time.Millisecond, "p99 %v", p99)
	require.Zero(t, Latency{}.Quantile(0.5))
	require.Zero(t, Latency{}.Mean())
	// Bucket i holds what is below BucketBounds[i]; the last, anything.
	require.Equal(t, 0, bucketOf(0))
	require.Equal(t, 1, bucketOf(bucketBase))
	require.Equal(t, numBuckets-1, bucketOf(time.Hour))
	for i := 1; i < numBuckets-1; i++ {
		require.Equal(t, i, bucketOf(BucketBounds[i]-1), "just below bound %d", i)
	}
}

// What Close keeps of a meter reads back as it was.
func TestCounts_KeptAndReadBack(t *testing.T) {
	var m meter
	r := request{m: &m}
	r.missed()
	r.missTook(3 * time.Millisecond)
	r.l2Missed()
	r.end(Fill, nil)
	r = request{m: &m, timed: true, start: time.Now()}
	r.end(L1, nil)
	n := m.read()
	deltas := map[string]uint64{}
	n.add("p\x00", deltas)
	fields := map[string]uint64{}
	for k, v := range deltas {
		fields[k[len("p\x00"):]] = v
	}
	back := countsFrom(fields)
	require.Equal(t, n.served, back.served)
	require.Equal(t, n.l2Misses, back.l2Misses)
	require.Equal(t, n.miss.Count, back.miss.Count)
	require.Equal(t, n.miss.Sum, back.miss.Sum)
	require.Equal(t, n.lat[L1].Count, back.lat[L1].Count)
	require.Equal(t, n.measures(Fill), back.measures(Fill))
}

// The histogram's buckets are the wire's: numBuckets bounds, bucketBase
// doubling.
func TestLatency_BucketsAreTheWires(t *testing.T) {
	require.Len(t, BucketBounds, numBuckets)
	for i := range numBuckets - 1 {
		require.Equal(t, bucketBase<<i, BucketBounds[i], "bucket %d", i)
		require.Equal(t, i, bucketOf(bucketBase<<i-1), "bucket %d", i)
	}
}
