package tier

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/internal/testmodels"
)

// writeManyTensors writes a safetensors file of n U8 tensors of size bytes
// each, with random contents, and returns its path and tensor names.
func writeManyTensors(t *testing.T, n, size int) (string, []string) {
	type entry struct {
		DType   string    `json:"dtype"`
		Shape   []uint64  `json:"shape"`
		Offsets [2]uint64 `json:"data_offsets"`
	}
	head := map[string]entry{}
	names := make([]string, n)
	data := make([]byte, n*size)
	r := rand.New(rand.NewPCG(uint64(n), uint64(size)))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	for i := range n {
		names[i] = fmt.Sprintf("t%04d", i)
		head[names[i]] = entry{"U8", []uint64{uint64(size)}, [2]uint64{uint64(i * size), uint64((i + 1) * size)}}
	}
	h, err := json.Marshal(head)
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "many.safetensors")
	require.NoError(t, os.WriteFile(p, testmodels.Build(string(h), data), 0o644))
	return p, names
}

// 16 readers of 600 tensors through an L1 far smaller than the model: a
// tensor L1 drops while its L2 write is queued is read from the queue, never
// from the file again, and never queued twice. Upstream of this, the same
// run read the file 13,821 times (23 per tensor). And every read counts once,
// under the tier its ServedBy names: the counters add up to Requests.
func TestCache_SmallL1LoadsEachTensorOnce(t *testing.T) {
	model, names := writeManyTensors(t, 600, 8<<10)
	c := openCache(t, &Options{Dir: t.TempDir(), MemoryBytes: 1 << 20})
	ctx := context.Background()
	var mu sync.Mutex
	served := map[Tier]uint64{}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 7))
			local := map[Tier]uint64{}
			for _, i := range r.Perm(len(names)) {
				tn, err := c.Tensor(ctx, model, names[i])
				if err != nil {
					t.Error(err)
					return
				}
				local[tn.ServedBy]++
			}
			mu.Lock()
			for k, v := range local {
				served[k] += v
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	c.Flush()
	st := c.Stats()
	t.Logf("served %v; source loads %d, queue hits %d, L2 puts %d, dropped %d",
		served, st.SourceLoads, st.WriteBehindHits, st.L2.Puts, st.WriteBehindDropped)
	require.Zero(t, st.WriteBehindDropped, "the queue is large enough for the model")
	require.LessOrEqual(t, st.SourceLoads, uint64(len(names)), "at most one file read per tensor")
	require.LessOrEqual(t, st.L2.Puts, uint64(len(names)), "at most one L2 write per tensor")

	require.Equal(t, uint64(16*len(names)), st.Requests)
	require.Equal(t, st.Requests, st.L1Hits+st.L2Hits+st.SourceLoads+st.SharedLoads+st.Failed)
	require.Equal(t, served[L1], st.L1Hits)
	require.Equal(t, served[L2], st.L2Hits)
	require.Equal(t, served[Source], st.SourceLoads)
	require.Equal(t, served[Shared], st.SharedLoads)
}
