package tier

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/internal/testmodels"
)

// writeModel writes a safetensors file of n F32 tensors "t000"... of size
// bytes each (a multiple of 4), filled from seed, and returns their bytes.
func writeTensors(t *testing.T, path string, n, size int, seed uint64) map[string][]byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	var head strings.Builder
	head.WriteString("{")
	data := make([]byte, 0, n*size)
	want := map[string][]byte{}
	for i := range n {
		name := fmt.Sprintf("t%03d", i)
		if i > 0 {
			head.WriteString(",")
		}
		fmt.Fprintf(&head, `%q:{"dtype":"F32","shape":[%d],"data_offsets":[%d,%d]}`, name, size/4, len(data), len(data)+size)
		b := make([]byte, size)
		for j := 0; j < size; j += 4 {
			// Small floats, as weights are: compressible like real ones.
			v := uint32(rng.IntN(1 << 12))
			b[j], b[j+1], b[j+2], b[j+3] = byte(v), byte(v>>8), 0x80, 0x3c
		}
		want[name] = b
		data = append(data, b...)
	}
	head.WriteString("}")
	require.NoError(t, os.WriteFile(path, testmodels.Build(head.String(), data), 0o644))
	return want
}

// loadAll loads m and returns the tensors' bytes (copied) and the order of
// delivery.
func loadAll(t *testing.T, m *Model, opts *LoadOptions) (map[string][]byte, []string, *LoadResult) {
	t.Helper()
	got := map[string][]byte{}
	var order []string
	res, err := m.Load(context.Background(), opts, func(tn *Tensor) error {
		got[tn.Name] = append([]byte(nil), tn.Bytes()...)
		order = append(order, tn.Name)
		return nil
	})
	require.NoError(t, err)
	return got, order, res
}

func TestModel_LoadThroughEveryTier(t *testing.T) {
	dir, path := t.TempDir(), filepath.Join(t.TempDir(), "m.safetensors")
	want := writeTensors(t, path, 40, 64<<10, 1)
	ctx := context.Background()

	c := openCache(t, &Options{Dir: dir, Logger: nilLogger()})
	m, err := c.Model(ctx, path)
	require.NoError(t, err)
	require.Len(t, m.Tensors(), 40)
	require.Equal(t, uint64(40*64<<10), m.Bytes())
	for i, ti := range m.Tensors() {
		require.Equal(t, fmt.Sprintf("t%03d", i), ti.Name, "storage order")
		require.Equal(t, "F32", ti.DType)
		require.Equal(t, []uint64{16 << 10}, ti.Shape)
	}

	got, order, res := loadAll(t, m, nil)
	require.Equal(t, want, got)
	require.Equal(t, 40, res.Source)
	for i, name := range order {
		require.Equal(t, fmt.Sprintf("t%03d", i), name, "file order")
	}
	got, _, res = loadAll(t, m, &LoadOptions{Order: ReadyOrder})
	require.Equal(t, want, got)
	require.Equal(t, 40, res.L1, "the model fits in L1")
	c.Flush()
	require.NoError(t, m.Close())
	s := c.Stats()
	require.Equal(t, s.Requests, s.L1Hits+s.L2Hits+s.SourceLoads+s.SharedLoads+s.Failed)
	require.Equal(t, uint64(80), s.Requests)
	require.NoError(t, c.Close())

	c2 := openCache(t, &Options{Dir: dir, Logger: nilLogger()})
	m2, err := c2.Model(ctx, path)
	require.NoError(t, err)
	defer m2.Close()
	require.Equal(t, m.Version(), m2.Version())
	got, _, res = loadAll(t, m2, &LoadOptions{Parallel: 3})
	require.Equal(t, want, got)
	require.Equal(t, 40, res.L2)
	tn, err := m2.Tensor(ctx, "t007")
	require.NoError(t, err)
	require.Equal(t, L1, tn.ServedBy)
	require.Equal(t, want["t007"], tn.Bytes())
	_, err = m2.Tensor(ctx, "nope")
	require.ErrorIs(t, err, errs.ErrNotFound)
	require.NoError(t, m2.Close())
	_, err = m2.Tensor(ctx, "t007")
	require.ErrorIs(t, err, errs.ErrClosed)
	_, err = m2.Load(ctx, nil, func(*Tensor) error { return nil })
	require.ErrorIs(t, err, errs.ErrClosed)
	_, err = m2.OpenTensor(ctx, "t007")
	require.ErrorIs(t, err, errs.ErrClosed)
}

// With Into every tier writes into the caller's buffer, and the cache keeps
// no reference to it.
func TestModel_LoadInto(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.safetensors")
	want := writeTensors(t, path, 12, 256<<10, 2)
	ctx := context.Background()
	for _, tier := range []Tier{Source, L2, L1} {
		t.Run(tier.String(), func(t *testing.T) {
			c := openCache(t, &Options{Dir: t.TempDir(), Logger: nilLogger()})
			m, err := c.Model(ctx, path)
			require.NoError(t, err)
			defer m.Close()
			switch tier {
			case L2:
				_, err := m.Warm(ctx, nil)
				require.NoError(t, err)
			case L1:
				loadAll(t, m, nil)
			}
			bufs := map[string][]byte{}
			var mu sync.Mutex
			opts := &LoadOptions{Into: func(ti *TensorInfo) ([]byte, error) {
				b := make([]byte, ti.Bytes)
				mu.Lock()
				bufs[ti.Name] = b
				mu.Unlock()
				return b, nil
			}}
			_, err = m.Load(ctx, opts, func(tn *Tensor) error {
				require.Equal(t, tier, tn.ServedBy)
				mu.Lock()
				b := bufs[tn.Name]
				mu.Unlock()
				require.Same(t, &b[0], &tn.Bytes()[0], "delivered in the caller's buffer")
				require.Equal(t, want[tn.Name], tn.Bytes())
				return nil
			})
			require.NoError(t, err)
			for _, b := range bufs {
				clear(b) // the caller reuses its buffers
			}
			c.Flush()
			got, _, _ := loadAll(t, m, nil)
			require.Equal(t, want, got, "the cache kept no reference to the caller's buffers")
		})
	}
}

// Bytes read ahead of delivery stay within MaxInFlight, whatever the order.
func TestModel_LoadBoundsBytesInFlight(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.safetensors")
	writeTensors(t, path, 64, 128<<10, 3)
	ctx := context.Background()
	c := openCache(t, &Options{Logger: nilLogger(), MemoryBytes: 1 << 20})
	m, err := c.Model(ctx, path)
	require.NoError(t, err)
	defer m.Close()
	for _, order := range []Order{FileOrder, ReadyOrder} {
		var inFlight, peak atomic.Int64
		opts := &LoadOptions{Order: order, MaxInFlight: 512 << 10, Parallel: 16, Into: func(ti *TensorInfo) ([]byte, error) {
			n := inFlight.Add(int64(ti.Bytes))
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			return make([]byte, ti.Bytes), nil
		}}
		res, err := m.Load(ctx, opts, func(tn *Tensor) error {
			inFlight.Add(-int64(len(tn.Bytes())))
			return nil
		})
		require.NoError(t, err)
		require.Equal(t, 64, res.Tensors)
		require.LessOrEqual(t, peak.Load(), int64(512<<10), "order %d", order)
		require.Positive(t, peak.Load())
	}
}

// An error from Into or from the caller ends the load with that error, and
// nothing writes into the caller's buffers after Load returns.
func TestModel_LoadStopsAtFirstError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.safetensors")
	writeTensors(t, path, 32, 64<<10, 4)
	ctx := context.Background()
	c := openCache(t, &Options{Dir: t.TempDir(), Logger: nilLogger()})
	m, err := c.Model(ctx, path)
	require.NoError(t, err)
	defer m.Close()

	boom := errors.New("no pinned memory left")
	var returned atomic.Bool
	var calls atomic.Int32
	_, err = m.Load(ctx, &LoadOptions{Into: func(ti *TensorInfo) ([]byte, error) {
		require.False(t, returned.Load(), "Into called after Load returned")
		if calls.Add(1) == 10 {
			return nil, boom
		}
		return make([]byte, ti.Bytes), nil
	}}, func(*Tensor) error { return nil })
	returned.Store(true)
	require.ErrorIs(t, err, boom)

	stop := errors.New("enough")
	n := 0
	_, err = m.Load(ctx, nil, func(*Tensor) error {
		if n++; n == 5 {
			return stop
		}
		return nil
	})
	require.ErrorIs(t, err, stop)
	require.Equal(t, 5, n)

	// The iterator stops when its consumer does, and reports errors last.
	n = 0
	for tn, err := range m.All(ctx, nil) {
		require.NoError(t, err)
		require.NotNil(t, tn)
		if n++; n == 3 {
			break
		}
	}
	require.Equal(t, 3, n)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	var last error
	for _, err := range m.All(cctx, nil) {
		last = err
	}
	require.ErrorIs(t, last, context.Canceled)
	s := c.Stats()
	require.Equal(t, s.Requests, s.L1Hits+s.L2Hits+s.SourceLoads+s.SharedLoads+s.Failed)
}

// A handle reads the version it opened: a file replaced meanwhile is read
// as it was; a file changed in place is an error, never a mix.
func TestModel_PinsItsVersion(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.safetensors")
	old := writeTensors(t, path, 8, 64<<10, 5)
	c := openCache(t, &Options{Dir: t.TempDir(), Logger: nilLogger()})
	m, err := c.Model(ctx, path)
	require.NoError(t, err)
	defer m.Close()

	next := filepath.Join(filepath.Dir(path), "next.safetensors")
	niu := writeTensors(t, next, 8, 64<<10, 6)
	require.NoError(t, os.Rename(next, path))
	got, _, _ := loadAll(t, m, nil)
	require.Equal(t, old, got, "the replaced version, whole")

	m2, err := c.Model(ctx, path)
	require.NoError(t, err)
	defer m2.Close()
	require.NotEqual(t, m.Version(), m2.Version())
	got, _, res := loadAll(t, m2, nil)
	require.Equal(t, niu, got)
	require.Equal(t, 8, res.Source, "a new version is read from its file")

	// In place: same size, other bytes.
	m3, err := c.Model(ctx, path)
	require.NoError(t, err)
	defer m3.Close()
	c.Flush()
	_, err = c.Evict(path)
	require.NoError(t, err)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte("changed!"), 1000)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	_, err = m3.Load(ctx, nil, func(*Tensor) error { return nil })
	require.ErrorIs(t, err, errs.ErrChanged)
}

// A model larger than L1, loaded in a loop, keeps the same part of itself
// in L1 pass after pass and leaves the rest of L1 alone.
func TestModel_LoopDoesNotFlushL1(t *testing.T) {
	ctx := context.Background()
	tmp := t.TempDir()
	big, small := filepath.Join(tmp, "big.safetensors"), filepath.Join(tmp, "small.safetensors")
	writeTensors(t, big, 48, 64<<10, 7) // 3 MiB
	writeTensors(t, small, 4, 64<<10, 8)
	c := openCache(t, &Options{Logger: nilLogger(), MemoryBytes: 1 << 20})
	// The hot set: read a few times.
	for range 3 {
		for i := range 4 {
			_, err := c.Tensor(ctx, small, fmt.Sprintf("t%03d", i))
			require.NoError(t, err)
		}
	}
	m, err := c.Model(ctx, big)
	require.NoError(t, err)
	defer m.Close()
	var hits []int
	for range 4 {
		_, _, res := loadAll(t, m, nil)
		hits = append(hits, res.L1)
	}
	require.Zero(t, hits[0])
	for _, h := range hits[1:] {
		require.GreaterOrEqual(t, h, 2, "a stable part stays resident: %v", hits)
	}
	for i := range 4 {
		tn, err := c.Tensor(ctx, small, fmt.Sprintf("t%03d", i))
		require.NoError(t, err)
		require.Equal(t, L1, tn.ServedBy, "the hot set survived the loop")
	}
}

// Write-behind writes the queue could not take are done after the load, so
// the next load reads L2, not the source.
func TestModel_LoadPromotesWhatTheQueueDropped(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.safetensors")
	want := writeTensors(t, path, 16, 256<<10, 9)
	dir := t.TempDir()
	c, err := Open(&Options{Dir: dir, Logger: nilLogger(), WriteBehindBytes: 300 << 10})
	require.NoError(t, err)
	m, err := c.Model(ctx, path)
	require.NoError(t, err)
	_, _, res := loadAll(t, m, nil)
	require.Equal(t, 16, res.Source)
	require.NoError(t, m.Close())
	c.Flush()
	require.Positive(t, c.Stats().WriteBehindDropped, "the queue was too small")
	require.NoError(t, c.Close())

	c2 := openCache(t, &Options{Dir: dir, Logger: nilLogger()})
	m2, err := c2.Model(ctx, path)
	require.NoError(t, err)
	defer m2.Close()
	got, _, res := loadAll(t, m2, nil)
	require.Equal(t, want, got)
	require.Equal(t, 16, res.L2)
}

func TestModel_Sharded(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, &Options{Dir: t.TempDir(), Logger: nilLogger()})
	m, err := c.Model(ctx, formats+"/sharded")
	require.NoError(t, err)
	defer m.Close()
	require.True(t, strings.HasSuffix(m.Path(), "model.safetensors.index.json"))
	require.True(t, strings.HasPrefix(m.Version(), "shards:"))
	var names []string
	for _, ti := range m.Tensors() {
		names = append(names, ti.Name)
		require.Equal(t, filepath.Base(ti.File) != "", true)
	}
	require.ElementsMatch(t, []string{"a", "b", "c"}, names)
	got, _, _ := loadAll(t, m, nil)
	for _, name := range names {
		tn, err := c.Tensor(ctx, formats+"/sharded", name)
		require.NoError(t, err)
		require.Equal(t, tn.Bytes(), got[name])
	}
	var totals []WarmProgress
	var steps atomic.Int32
	res, err := m.Warm(ctx, &WarmOptions{Progress: func(p WarmProgress) {
		if p.Tensor == "" {
			totals = append(totals, p)
			return
		}
		steps.Add(1)
	}})
	require.NoError(t, err)
	require.Len(t, totals, 1)
	require.Equal(t, 3, totals[0].TotalTensors)
	require.Equal(t, res.LogicalBytes, totals[0].TotalBytes)
	require.Equal(t, int32(3), steps.Load())
}

// A warmed model whose file is gone is served from L2: listed from its
// index, every tensor from the cache; once GC forgets it, it is gone.
func TestModel_ServedFromL2WhenTheFileIsGone(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.safetensors")
	want := writeTensors(t, path, 6, 10_000, 21)
	dir := t.TempDir()
	c, err := Open(&Options{Dir: dir, Logger: nilLogger()})
	require.NoError(t, err)
	m, err := c.Model(ctx, path)
	require.NoError(t, err)
	version := m.Version()
	_, err = m.Warm(ctx, nil)
	require.NoError(t, err)
	require.NoError(t, m.Close())
	require.NoError(t, c.Close())

	// Not warmed whole: a second file with one tensor read, then gone.
	partial := filepath.Join(filepath.Dir(path), "p.safetensors")
	writeTensors(t, partial, 3, 1000, 22)

	require.NoError(t, os.Rename(path, path+".moved"))
	c = openCache(t, &Options{Dir: dir, Logger: nilLogger()})
	m, err = c.Model(ctx, path)
	require.NoError(t, err)
	require.True(t, m.CachedOnly())
	require.Equal(t, version, m.Version())
	require.Len(t, m.Tensors(), 6)
	got, _, res := loadAll(t, m, nil)
	require.Equal(t, want, got)
	require.Equal(t, 6, res.L2)
	require.NoError(t, m.Close())
	tn, err := c.Tensor(ctx, path, "t003")
	require.NoError(t, err)
	require.Equal(t, want["t003"], tn.Bytes())

	_, err = c.Tensor(ctx, partial, "t000")
	require.NoError(t, err)
	c.Flush()
	require.NoError(t, os.Remove(partial))
	_, err = c.Model(ctx, partial)
	require.ErrorIs(t, err, os.ErrNotExist, "a model L2 does not hold whole is not served")

	require.NoError(t, c.GC())
	_, err = c.Model(ctx, path)
	require.ErrorIs(t, err, os.ErrNotExist, "GC forgets the entries of a file that is gone")
}
