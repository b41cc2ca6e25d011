// Package benchutil holds what benchmarks share.
package benchutil

import (
	"slices"
	"testing"
	"time"
)

// Latency runs f warm times, then b.N times timing each call, and reports
// the median and the 99th percentile (p50-µs, p99-µs).
func Latency(b *testing.B, warm int, f func() error) {
	b.Helper()
	for range warm {
		if err := f(); err != nil {
			b.Fatal(err)
		}
	}
	times := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if err := f(); err != nil {
			b.Fatal(err)
		}
		times = append(times, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(times)
	b.ReportMetric(float64(times[len(times)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(times[len(times)*99/100].Nanoseconds())/1e3, "p99-µs")
}
