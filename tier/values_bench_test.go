package tier

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/modelcache/modelcache/internal/key"
	"github.com/modelcache/modelcache/internal/sim"
	"github.com/modelcache/modelcache/l1"
)

// L1 hits on two goroutines: a tensor through a model handle, a value, and
// a value with the measures off (what the counters and sampled timing cost).
// A Prometheus collector is registered throughout: it reads at scrape time
// only.
//
//	go test -run '^$' -bench 'HitL1' -cpu 2 ./tier
func BenchmarkHitL1(b *testing.B) {
	ctx := context.Background()
	c, err := Open(&Options{Logger: nilLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(c))
	m, err := c.Model(ctx, testModel)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	if _, err := m.Tensor(ctx, "Const_59"); err != nil {
		b.Fatal(err)
	}
	if err := c.Put(ctx, "outputs", "prompt-0001", make([]byte, 4096), nil); err != nil {
		b.Fatal(err)
	}
	b.Run("tensor", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := m.Tensor(ctx, "Const_59"); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	value := func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := c.Get(ctx, "outputs", "prompt-0001", nil); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.Run("value", value)
	if _, err := reg.Gather(); err != nil {
		b.Fatal(err)
	}
	// What the measures cost a value hit: rounds with and without them,
	// alternated so that the machine's drift falls on both, compared by
	// their medians.
	b.Run("measures-overhead", func(b *testing.B) {
		const rounds, perRound = 40, 200_000
		var on, off []time.Duration
		for i := range rounds * b.N {
			c.unmeasured = i%2 == 1
			start := time.Now()
			var wg sync.WaitGroup
			for range 2 {
				wg.Go(func() {
					for range perRound / 2 {
						if _, err := c.Get(ctx, "outputs", "prompt-0001", nil); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			if c.unmeasured {
				off = append(off, time.Since(start))
			} else {
				on = append(on, time.Since(start))
			}
		}
		c.unmeasured = false
		median := func(d []time.Duration) time.Duration { slices.Sort(d); return d[len(d)/2] }
		b.ReportMetric(float64(median(on))/perRound, "ns/hit-measured")
		b.ReportMetric(float64(median(off))/perRound, "ns/hit-unmeasured")
		b.ReportMetric((float64(median(on))/float64(median(off))-1)*100, "overhead-%")
	})
}

// Values read from L2 (L1 too small to hold them): the median time of a
// 1 KiB value, and the rate of 1 MiB ones.
//
//	go test -run '^$' -bench 'ValueL2' ./tier
func BenchmarkValueL2(b *testing.B) {
	ctx := context.Background()
	for _, size := range []int{1 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			c, err := Open(&Options{Dir: b.TempDir(), MemoryBytes: 1 << 10, Logger: nilLogger()})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			rnd := rand.New(rand.NewPCG(1, 2))
			const keys = 64
			for i := range keys {
				v := make([]byte, size)
				for j := range v {
					v[j] = byte(rnd.Uint32() % 16) // compressible, as outputs are
				}
				if err := c.Put(ctx, "ns", fmt.Sprint(i), v, nil); err != nil {
					b.Fatal(err)
				}
			}
			times := make([]time.Duration, 0, b.N)
			b.SetBytes(int64(size))
			b.ResetTimer()
			for i := range b.N {
				start := time.Now()
				v, err := c.Get(ctx, "ns", fmt.Sprint(i%keys), nil)
				times = append(times, time.Since(start))
				if err != nil || v.ServedBy != L2 {
					b.Fatal(err, v)
				}
			}
			b.StopTimer()
			slices.Sort(times)
			b.ReportMetric(float64(times[len(times)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(times[len(times)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// The seed's experiment: values whose fill costs 1 ms, requested in a
// Zipf(0.99) stream over 1M keys, with L1 holding 10% of them. It checks
// that the average access time the formula gives from the measured Tc, Tr
// and hit rate is within 5% of the measured mean, and that the hit rate is
// within a point of what warm sim predicts for the same trace and policy.
// 64 goroutines overlap the fills; requests are taken in trace order.
//
//	go test -run '^$' -bench 'ZipfFill' -benchtime 1x -timeout 30m ./tier
func BenchmarkZipfFill(b *testing.B) {
	const (
		keys     = 1_000_000
		requests = 3_000_000
		budget   = keys / 10
		valueLen = 64
		workers  = 64
	)
	trace, err := sim.ZipfKeys(sim.ZipfOptions{Keys: keys, Requests: requests, Theta: 0.99, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	res, err := sim.Run(&sim.Trace{Keys: trace}, []l1.Policy{l1.TinyLFU}, []uint64{budget})
	if err != nil {
		b.Fatal(err)
	}
	predicted := res[0].HitRatio
	keyOf := func(k uint64) string { return fmt.Sprintf("%016x", k) }
	charge := int64(valueLen + len(key.Values("zipf", 0).Key(keyOf(0))) + l1.EntryOverhead)
	for range b.N {
		c, err := Open(&Options{MemoryBytes: budget * charge, MemoryPolicy: l1.TinyLFU, Logger: nilLogger()})
		if err != nil {
			b.Fatal(err)
		}
		fill := func(context.Context) ([]byte, error) {
			time.Sleep(time.Millisecond)
			return make([]byte, valueLen), nil
		}
		var next atomic.Int64
		var wg sync.WaitGroup
		ctx := context.Background()
		for range workers {
			wg.Go(func() {
				for {
					i := next.Add(1) - 1
					if i >= requests {
						return
					}
					if _, err := c.Get(ctx, "zipf", keyOf(trace[i]), fill); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		s := c.Stats().Values
		c.Close()
		gap := (float64(s.Formula) - float64(s.Measured)) / float64(s.Measured)
		b.ReportMetric(s.HitRate*100, "hit-%")
		b.ReportMetric(predicted*100, "sim-hit-%")
		b.ReportMetric(float64(s.Tc.Nanoseconds())/1e3, "Tc-µs")
		b.ReportMetric(float64(s.Tr.Nanoseconds())/1e3, "Tr-µs")
		b.ReportMetric(float64(s.Formula.Nanoseconds())/1e3, "T-formula-µs")
		b.ReportMetric(float64(s.Measured.Nanoseconds())/1e3, "T-measured-µs")
		b.ReportMetric(gap*100, "gap-%")
		if gap > 0.05 || gap < -0.05 {
			b.Errorf("formula %v vs measured %v: %.1f%% apart", s.Formula, s.Measured, gap*100)
		}
		if d := (s.HitRate - predicted) * 100; d > 1 || d < -1 {
			b.Errorf("hit rate %.2f%%, warm sim predicts %.2f%%", s.HitRate*100, predicted*100)
		}
	}
}
