package l2

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestStore_OpenCost measures what opening a store of many small entries
// costs in time and heap; L2_OPEN_COST=N sets the count (skipped without:
// filling takes a while), L2_OPEN_BUDGET the budget in bytes (20 MiB).
// docs/BENCHMARKS.md records runs.
func TestStore_OpenCost(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("L2_OPEN_COST"))
	if n == 0 {
		t.Skip("set L2_OPEN_COST=N to measure opening a store of N entries")
	}
	budget := int64(20 << 20)
	if b, _ := strconv.ParseInt(os.Getenv("L2_OPEN_BUDGET"), 10, 64); b > 0 {
		budget = b
	}
	dir := t.TempDir()
	o := &Options{Dir: dir, MaxBytes: budget, Logger: discardLogger()}
	s, err := Open(o)
	require.NoError(t, err)
	start := time.Now()
	for i := range n {
		key := fmt.Sprintf("/models/some/where/model-%07d.safetensors\x00123:456:789:1:2\x00tensor.%d", i, i)
		require.NoError(t, s.Put(key, "F32", []uint64{0}, nil))
	}
	t.Logf("%d puts in %v; stats %+v", n, time.Since(start), s.Stats())
	require.NoError(t, s.Close())
	du, _ := DiskUsage(dir)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start = time.Now()
	s, err = Open(o)
	require.NoError(t, err)
	took := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	st := s.Stats()
	t.Logf("open: %v, heap +%d MiB, entries %d, charged %d, du %d MiB", took,
		(int64(after.HeapAlloc)-int64(before.HeapAlloc))>>20, st.Entries, st.ChargedBytes, du>>20)
	require.NoError(t, s.GC())
	du, _ = DiskUsage(dir)
	t.Logf("after GC: entries %d, du %d MiB", s.Stats().Entries, du>>20)
	require.NoError(t, s.Close())
}
