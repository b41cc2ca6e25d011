package l1

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func newCache(t testing.TB, maxBytes int64, p Policy) *Cache[string, []byte] {
	t.Helper()
	c, err := New(&Options[string, []byte]{MaxBytes: maxBytes, Policy: p, MaxEntryFraction: 1, CountHits: true})
	require.NoError(t, err)
	t.Cleanup(func() {
		s := c.Stats()
		require.LessOrEqual(t, s.Bytes, s.MaxBytes, "budget exceeded")
	})
	return c
}

func TestNew_Validates(t *testing.T) {
	for _, o := range []*Options[string, int]{nil, {MaxBytes: -1}, {MaxBytes: 10, Policy: "arc"}, {MaxBytes: 10, MaxEntryFraction: 2}} {
		_, err := New(o)
		require.Error(t, err)
	}
}

// Invariants every policy keeps.
func TestCache_EveryPolicy(t *testing.T) {
	for _, p := range Policies {
		t.Run(string(p), func(t *testing.T) {
			unit := int64(100 + EntryOverhead)
			c := newCache(t, 10*unit, p)
			_, ok := c.Get("a")
			require.False(t, ok)
			require.True(t, c.Set("a", []byte("A"), 100))
			v, ok := c.Get("a")
			require.True(t, ok)
			require.Equal(t, []byte("A"), v)
			require.True(t, c.Set("a", []byte("A2"), 100))
			v, _ = c.Get("a")
			require.Equal(t, []byte("A2"), v, "a replaced value is never served")
			for i := range 100 {
				c.Set(fmt.Sprint(i), []byte(fmt.Sprint(i)), 100)
				if i%3 == 0 {
					c.Get(fmt.Sprint(i / 2))
				}
			}
			s := c.Stats()
			require.Equal(t, 10, s.Entries)
			require.Equal(t, 10*unit, s.Bytes)
			require.NotZero(t, s.Evictions)
			for i := 90; i < 100; i++ {
				if v, ok := c.Get(fmt.Sprint(i)); ok {
					require.Equal(t, fmt.Sprint(i), string(v))
				}
			}
			c.Delete("99")
			_, ok = c.Get("99")
			require.False(t, ok)
		})
	}
}

func TestLRU_EvictsLeastRecentlyUsed(t *testing.T) {
	unit := int64(100 + EntryOverhead)
	c := newCache(t, 3*unit, LRU)
	for _, k := range []string{"a", "b", "c"} {
		require.True(t, c.Set(k, nil, 100))
	}
	c.Get("a")
	require.True(t, c.Set("d", nil, 100))
	_, ok := c.Get("b")
	require.False(t, ok, "b was least recently used")
	for _, k := range []string{"a", "c", "d"} {
		_, ok := c.Get(k)
		require.True(t, ok, k)
	}
	// One entry twice the size pushes out two.
	require.True(t, c.Set("big", nil, 2*unit-EntryOverhead))
	require.Equal(t, 2, c.Stats().Entries)
}

func TestFIFO_IgnoresHits(t *testing.T) {
	unit := int64(100 + EntryOverhead)
	c := newCache(t, 3*unit, FIFO)
	for _, k := range []string{"a", "b", "c"} {
		c.Set(k, nil, 100)
	}
	c.Get("a")
	c.Set("d", nil, 100)
	_, ok := c.Get("a")
	require.False(t, ok, "a was first in")
}

func TestLFU_KeepsFrequentAndAges(t *testing.T) {
	unit := int64(100 + EntryOverhead)
	c := newCache(t, 3*unit, LFU)
	for _, k := range []string{"a", "b", "c"} {
		c.Set(k, nil, 100)
	}
	for range 5 {
		c.Get("a")
		c.Get("c")
	}
	c.Set("d", nil, 100)
	_, ok := c.Get("b")
	require.False(t, ok, "b had the fewest hits")
	// Aging: a was popular long ago; after many hits on newer keys its
	// count has been halved repeatedly and it goes before them.
	c.Set("e", nil, 100) // evicts d (count 1)
	for range 200 {
		c.Get("c")
		c.Get("e")
	}
	c.Set("f", nil, 100)
	_, ok = c.Get("a")
	require.False(t, ok, "old popularity faded")
}

// A scan of keys read once does not flush the hot set of S3-FIFO or
// W-TinyLFU; it flushes LRU's.
func TestScanResistance(t *testing.T) {
	unit := int64(100 + EntryOverhead)
	hot := func(c *Cache[string, []byte]) int {
		n := 0
		for i := range 50 {
			if _, ok := c.Get(fmt.Sprint("hot", i)); ok {
				n++
			}
		}
		return n
	}
	kept := map[Policy]int{}
	for _, p := range []Policy{S3FIFO, TinyLFU, LRU} {
		c := newCache(t, 100*unit, p)
		for range 3 {
			for i := range 50 {
				k := fmt.Sprint("hot", i)
				if _, ok := c.Get(k); !ok {
					c.Set(k, nil, 100)
				}
			}
		}
		for i := range 500 { // a model load: every tensor once
			c.Set(fmt.Sprint("scan", i), nil, 100)
		}
		kept[p] = hot(c)
	}
	require.Equal(t, 50, kept[S3FIFO], "S3-FIFO kept the hot set")
	require.GreaterOrEqual(t, kept[TinyLFU], 45, "W-TinyLFU kept (nearly all of) the hot set")
	require.Zero(t, kept[LRU], "LRU lost it")
}

func TestCache_OversizedEntryNotAdmitted(t *testing.T) {
	c, err := New(&Options[string, []byte]{MaxBytes: 10_000, MaxEntryFraction: 0.25})
	require.NoError(t, err)
	require.True(t, c.Set("keep", []byte("x"), 10))
	require.True(t, c.Set("big", []byte("old"), 10))
	require.False(t, c.Set("big", []byte("huge"), 2_500))
	_, ok := c.Get("big")
	require.False(t, ok, "a refused Set must not leave the old value behind")
	_, ok = c.Get("keep")
	require.True(t, ok, "a refused Set must not flush other entries")
	require.Equal(t, uint64(1), c.Stats().Rejected)
}

// OnEvict runs after the locks are released: it may use the cache.
func TestCache_OnEvictOutsideTheLock(t *testing.T) {
	var c *Cache[string, []byte]
	var evicted []string
	c, err := New(&Options[string, []byte]{MaxBytes: 3 * (100 + EntryOverhead), Policy: LRU, MaxEntryFraction: 1,
		OnEvict: func(k string, v []byte, size int64) {
			require.Equal(t, int64(100), size)
			c.Get(k) // would deadlock under the lock
			evicted = append(evicted, k)
		}})
	require.NoError(t, err)
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		c.Set(k, nil, 100)
	}
	require.Equal(t, []string{"a", "b"}, evicted)
	c.Delete("c")
	require.Len(t, evicted, 2, "Delete is not an eviction")
}

func TestCache_DeleteFunc(t *testing.T) {
	c := newCache(t, 1<<20, S3FIFO)
	for _, k := range []string{"a/1", "a/2", "b/1"} {
		c.Set(k, nil, 10)
	}
	require.Equal(t, 2, c.DeleteFunc(func(k string) bool { return k[0] == 'a' }))
	_, ok := c.Get("b/1")
	require.True(t, ok)
	s := c.Stats()
	require.Equal(t, 1, s.Entries)
	require.Equal(t, int64(10+EntryOverhead), s.Bytes)
}

func TestCache_Concurrent(t *testing.T) {
	for _, p := range Policies {
		t.Run(string(p), func(t *testing.T) {
			c := newCache(t, 50*(64+EntryOverhead), p)
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					for i := range 2000 {
						k := fmt.Sprint((i * (g + 1)) % 200)
						if v, ok := c.Get(k); ok {
							require.Equal(t, k, string(v))
						} else {
							c.Set(k, []byte(k), 64)
						}
						if i%500 == 0 {
							c.Delete(k)
						}
					}
				})
			}
			wg.Wait()
			s := c.Stats()
			require.Equal(t, uint64(8*2000), s.Hits+s.Misses)
			require.LessOrEqual(t, s.Entries, 50)
		})
	}
}

// A hit allocates nothing.
func TestCache_GetAllocs(t *testing.T) {
	for _, p := range Policies {
		c := newCache(t, 1<<20, p)
		c.Set("k", []byte("v"), 1)
		require.Zero(t, testing.AllocsPerRun(100, func() { c.Get("k") }), p)
	}
}

// EntryOverhead covers what an entry really costs: the heap growth per entry
// of a cache of small values, measured, stays below it.
func TestEntryOverhead(t *testing.T) {
	for _, p := range Policies {
		const n = 100_000
		keys := make([]string, n)
		for i := range keys {
			keys[i] = fmt.Sprintf("key-%07d", i)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		c, err := New(&Options[string, []byte]{MaxBytes: 1 << 40, Policy: p})
		require.NoError(t, err)
		for _, k := range keys {
			c.Set(k, nil, 0)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		per := float64(after.HeapAlloc-before.HeapAlloc) / n
		t.Logf("%s: %.0f bytes of metadata per entry (EntryOverhead %d)", p, per, EntryOverhead)
		require.Less(t, per, float64(EntryOverhead), p)
		runtime.KeepAlive(c)
	}
}

func BenchmarkCache_GetHit(b *testing.B) {
	for _, p := range Policies {
		b.Run(string(p), func(b *testing.B) {
			c, _ := New(&Options[int, []byte]{MaxBytes: 1 << 30, Policy: p})
			for i := range 1024 {
				c.Set(i, nil, 1024)
			}
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					c.Get(i & 1023)
					i++
				}
			})
		})
	}
}

// The cache's real memory, values included, stays within its budget + 5%
// however many entries it turns over.
func TestCache_RealMemoryWithinBudget(t *testing.T) {
	var budget int64 = 32 << 20
	for _, p := range []Policy{S3FIFO, TinyLFU, GDSF} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		c, err := New(&Options[string, []byte]{MaxBytes: budget, Policy: p})
		require.NoError(t, err)
		for i := range 200_000 {
			// Sizes Go's allocator serves exactly, so that its rounding
			// is not counted against the cache.
			v := make([]byte, 512<<(i%3))
			c.Set(fmt.Sprintf("key-%d", i), v, int64(len(v)))
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
		t.Logf("%s: heap grew %d KiB for a budget of %d KiB", p, grew>>10, budget>>10)
		require.LessOrEqual(t, grew, int64(float64(budget)*1.05), p)
		runtime.KeepAlive(c)
	}
}

// A loop over more keys than fit: LRU and FIFO hit nothing, W-TinyLFU keeps a
// fixed part of the loop (all keys are equally frequent, so candidates do
// not displace what main holds) and hits about capacity/loop of requests.
func TestTinyLFU_Loop(t *testing.T) {
	const capacity, loop = 100, 400
	ratio := func(p Policy) float64 {
		c, err := New(&Options[int, int]{MaxBytes: capacity, Policy: p, ExcludeOverhead: true, MaxEntryFraction: 1})
		require.NoError(t, err)
		hits := 0
		for i := range 50 * loop {
			if _, ok := c.Get(i % loop); ok {
				hits++
			} else {
				c.Set(i%loop, i, 1)
			}
		}
		return float64(hits) / (50 * loop)
	}
	require.Zero(t, ratio(LRU))
	require.Greater(t, ratio(TinyLFU), 0.6*capacity/loop)
}

// GDSF gives up a large entry before small ones asked for as often, and
// keeps a large entry asked for more often than its size costs.
func TestGDSF_WeighsFrequencyBySize(t *testing.T) {
	c, err := New(&Options[string, int]{MaxBytes: 1000, Policy: GDSF, ExcludeOverhead: true, MaxEntryFraction: 1})
	require.NoError(t, err)
	for i := range 6 {
		require.True(t, c.Set(fmt.Sprint("small", i), 0, 100))
	}
	require.True(t, c.Set("big", 0, 400))
	// Full: every entry asked once. A new small entry takes the big one's
	// room, though the big one is the newest (LFU or LRU would take
	// small0's).
	require.True(t, c.Set("new", 0, 100))
	_, ok := c.Get("big")
	require.False(t, ok, "the big entry went first")
	for i := range 6 {
		_, ok := c.Get(fmt.Sprint("small", i))
		require.True(t, ok)
	}

	// Asked ten times, a big entry is worth more per byte (10/400) than a
	// small one asked once or twice (≤ 2/100): the smalls go.
	c, err = New(&Options[string, int]{MaxBytes: 1000, Policy: GDSF, ExcludeOverhead: true, MaxEntryFraction: 1})
	require.NoError(t, err)
	require.True(t, c.Set("big", 0, 400))
	for range 10 {
		c.Get("big")
	}
	for i := range 10 {
		c.Set(fmt.Sprint("small", i), 0, 100)
	}
	_, ok = c.Get("big")
	require.True(t, ok, "the frequent big entry stayed")
	require.Equal(t, 7, c.Stats().Entries, "the smalls went in its place")
}

// GDSF's clock ages popularity: an entry hit often long ago goes once newer
// entries have been asked for as often since; and a key that comes back
// after eviction returns with its frequency from the sketch.
func TestGDSF_AgesAndRemembers(t *testing.T) {
	c, err := New(&Options[int, int]{MaxBytes: 10, Policy: GDSF, ExcludeOverhead: true, MaxEntryFraction: 1})
	require.NoError(t, err)
	c.Set(-1, 0, 1)
	for range 20 {
		c.Get(-1)
	}
	evicted := false
	for i := range 2000 {
		for range 3 {
			if _, ok := c.Get(i); !ok {
				c.Set(i, 0, 1)
			}
		}
		if c.idx.get(c.hash(-1), -1) == nil {
			evicted = true
			break
		}
	}
	require.True(t, evicted, "old popularity faded")

	for range 5 {
		c.Set(-2, 0, 1)
		c.Get(-2)
		c.Delete(-2)
	}
	c.Set(-2, 0, 1)
	e := c.idx.get(c.hash(-2), -2)
	require.NotNil(t, e)
	require.GreaterOrEqual(t, e.count, uint32(8), "came back with the frequency the sketch counted")
}

func mix64(k int) uint64 {
	x := uint64(k)
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// With Options.Hash, the same calls make the same evictions in every cache,
// for every policy; without it, W-TinyLFU's sketch collides differently in
// each cache and its evictions differ.
func TestCache_HashMakesRunsRepeat(t *testing.T) {
	run := func(p Policy, hash func(int) uint64) []int {
		var evicted []int
		c, err := New(&Options[int, int]{MaxBytes: 200, Policy: p, ExcludeOverhead: true, Hash: hash,
			OnEvict: func(k, _ int, _ int64) { evicted = append(evicted, k) }})
		require.NoError(t, err)
		r := uint64(1)
		for range 20_000 {
			r ^= r << 13
			r ^= r >> 7
			r ^= r << 17
			k := int(r % 1000)
			if k%3 == 0 {
				k %= 50 // a hot set
			}
			if _, ok := c.Get(k); !ok {
				c.Set(k, k, int64(1+k%4))
			}
		}
		return evicted
	}
	for _, p := range Policies {
		require.Equal(t, run(p, mix64), run(p, mix64), p)
	}
	differ := false
	for range 5 {
		differ = differ || !slices.Equal(run(TinyLFU, nil), run(TinyLFU, nil))
	}
	require.True(t, differ, "seeded hashes: evictions differ from cache to cache")
}

func TestCache_Groups(t *testing.T) {
	for _, p := range Policies {
		t.Run(string(p), func(t *testing.T) {
			group := func(k string) string { g, _, _ := strings.Cut(k, "/"); return g }
			limits := map[string]int64{"small": 300}
			var evicted []string
			c, err := New(&Options[string, int]{MaxBytes: 10_000, Policy: p, ExcludeOverhead: true, Group: group,
				GroupLimit: func(g string) int64 { return limits[g] },
				OnEvict:    func(k string, _ int, _ int64) { evicted = append(evicted, k) }})
			require.NoError(t, err)
			for i := range 10 {
				require.True(t, c.Set(fmt.Sprintf("big/%d", i), i, 100))
			}
			// The small group holds at most 300 bytes: its oldest go, and
			// nothing of the big group does.
			for i := range 10 {
				require.True(t, c.Set(fmt.Sprintf("small/%d", i), i, 100))
			}
			b, n := c.GroupBytes("small")
			require.Equal(t, int64(300), b)
			require.Equal(t, 3, n)
			require.Len(t, evicted, 7)
			for _, k := range evicted {
				require.True(t, strings.HasPrefix(k, "small/"), k)
			}
			for i := 7; i < 10; i++ {
				require.True(t, c.Contains(fmt.Sprintf("small/%d", i)))
			}
			// Larger than its group's limit: refused.
			require.False(t, c.Set("small/huge", 0, 301))
			b, n = c.GroupBytes("big")
			require.Equal(t, int64(1000), b)
			require.Equal(t, 10, n)
			// Replacing, deleting and DeleteGroup keep the counts.
			c.Set("big/0", 0, 50)
			c.Delete("big/1")
			b, n = c.GroupBytes("big")
			require.Equal(t, int64(850), b)
			require.Equal(t, 9, n)
			require.Equal(t, 9, c.DeleteGroup("big"))
			require.Equal(t, 0, c.DeleteGroup("big"))
			require.False(t, c.Contains("big/5"))
			require.True(t, c.Contains("small/9"))
			b, n = c.GroupBytes("big")
			require.Zero(t, b)
			require.Zero(t, n)
			require.Equal(t, int64(300), c.Stats().Bytes)
			// Eviction by the whole budget keeps the groups' counts right.
			for i := range 200 {
				c.Set(fmt.Sprintf("other/%d", i), i, 100)
			}
			require.LessOrEqual(t, c.Stats().Bytes, int64(10_000))
			total := int64(0)
			for _, g := range []string{"small", "other"} {
				b, _ := c.GroupBytes(g)
				total += b
			}
			require.Equal(t, c.Stats().Bytes, total)
		})
	}
}
