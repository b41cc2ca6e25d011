package l2

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// Filling three times the budget keeps the directory's real disk use (du)
// within MaxBytes × 1.1 + FixedOverhead at every step, and the newest
// entries stay readable.
func TestStore_DiskUseStaysWithinBudget(t *testing.T) {
	var budget int64 = 64 << 20
	dir := t.TempDir()
	s := openStore(t, dir, func(o *Options) { o.MaxBytes = budget; o.ChunkSize = 1 << 20 })
	limit := int64(float64(budget)*1.1) + FixedOverhead(budget, 1<<20)
	r := rand.New(rand.NewPCG(1, 2))
	entry := make([]byte, 1<<20) // incompressible: stored = logical
	var peak int64
	n := int(3 * budget / int64(len(entry)))
	for i := range n {
		for j := range entry {
			entry[j] = byte(r.Uint32())
		}
		require.NoError(t, s.Put(fmt.Sprint(i), "U8", nil, entry))
		du, err := s.DiskUsage()
		require.NoError(t, err)
		peak = max(peak, du)
		require.LessOrEqual(t, du, limit, "after %d MiB written: du %d MiB over the %d MiB limit", i+1, du>>20, limit>>20)
	}
	st := s.Stats()
	require.LessOrEqual(t, st.ChargedBytes, uint64(float64(budget)*highWater))
	require.NotZero(t, st.Evictions)
	v, err := s.Get(fmt.Sprint(n - 1))
	require.NoError(t, err)
	require.Equal(t, entry, v.Data)
	t.Logf("budget %d MiB, limit %d MiB (fixed overhead %d MiB), peak du %d MiB, %d entries live of %d written",
		budget>>20, limit>>20, FixedOverhead(budget, 1<<20)>>20, peak>>20, st.Entries, n)
}

// A budget that can hold an entry holds it: a 4 MiB chunk that does not
// compress went to a value-log file of budget/32 and was refused under
// budgets below 128 MiB. A budget too small to use is refused at Open,
// naming the minimum.
func TestStore_SmallBudgetsHoldFullChunks(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	data := make([]byte, 6<<20) // two chunks of the default size
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	for _, budget := range []int64{16 << 20, 100 << 20} {
		s := openStore(t, "", func(o *Options) { o.MaxBytes = budget; o.ChunkSize = 0 })
		require.NoError(t, s.Put("big", "U8", nil, data), "budget %d MiB", budget>>20)
		v, err := s.Get("big")
		require.NoError(t, err)
		require.Equal(t, data, v.Data)
	}
	_, err := Open(&Options{Dir: t.TempDir(), MaxBytes: 512 << 10})
	require.ErrorContains(t, err, "below the minimum of 1048576")
}

// Entries charge their keys and meta records to the budget, not only their
// chunks: many empty tensors stay within it (a million under 20 MiB took
// 93 MiB of disk), and GC compacts what eviction deleted.
func TestStore_EmptyEntriesAreChargedToTheBudget(t *testing.T) {
	var budget int64 = 2 << 20
	dir := t.TempDir()
	s := openStore(t, dir, func(o *Options) { o.MaxBytes = budget })
	for i := range 40_000 {
		key := fmt.Sprintf("/models/m-%06d.safetensors\x00123:456:789:1:2\x00tensor.%d", i, i)
		require.NoError(t, s.Put(key, "F32", []uint64{0}, nil))
	}
	st := s.Stats()
	require.NotZero(t, st.Evictions)
	require.LessOrEqual(t, st.ChargedBytes, uint64(float64(budget)*highWater))
	require.NoError(t, s.GC())
	require.NoError(t, s.Close())
	du, err := DiskUsage(dir)
	require.NoError(t, err)
	// Closed, the store's fixed costs are gone but for Badger's 1 MiB
	// DISCARD file and its small manifest and key registry.
	limit := int64(float64(budget)*1.1) + 1<<20 + 512<<10
	require.LessOrEqual(t, du, limit, "du %d KiB, limit %d KiB", du>>10, limit>>10)
	t.Logf("%d entries kept of 40000, du %d KiB (limit %d KiB)", st.Entries, du>>10, limit>>10)
}

// After a clean Close, Open reads no entry: the totals and the LRU order
// are on disk, so its time and memory do not grow with the entries (a
// million of them took 3 s and 520 MB). After a crash it reads them all,
// and the totals come out the same. The LRU order survives a restart.
func TestStore_OpenReadsNoEntryAfterACleanClose(t *testing.T) {
	dir := t.TempDir()
	o := func(o *Options) { o.ChunkSize = 4096 }
	s := openStore(t, dir, o)
	for i := range 300 {
		require.NoError(t, s.Put(fmt.Sprint(i), "U8", nil, payload(5000, uint64(i))))
	}
	_, err := s.Get("0") // 1 is now the least recently used
	require.NoError(t, err)
	want := s.Stats()
	require.NoError(t, s.Close())

	s = openStore(t, dir, o)
	require.False(t, s.recovered, "a clean Close leaves what Open needs")
	got := s.Stats()
	require.Equal(t, want.Entries, got.Entries)
	require.Equal(t, want.LogicalBytes, got.LogicalBytes)
	require.Equal(t, want.StoredBytes, got.StoredBytes)
	require.Equal(t, want.ChargedBytes, got.ChargedBytes)
	victims, err := s.pickVictims("", got.ChargedBytes-1)
	require.NoError(t, err)
	require.Equal(t, []string{"1"}, victims, "the read of 0 outlived the restart")

	crash(t, s)
	s = openStore(t, dir, o)
	require.True(t, s.recovered)
	got = s.Stats()
	require.Equal(t, want.Entries, got.Entries)
	require.Equal(t, want.StoredBytes, got.StoredBytes)
	require.Equal(t, want.ChargedBytes, got.ChargedBytes)
}
