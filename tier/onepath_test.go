package tier

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/internal/testredis"
)

// Tests that every way of reading walks the same tiers, shares the same
// loads and counts the same way (issue 21's first list: each failed before
// the walk).

// Two loads of one model at once in one process read the origin once, as
// two Tensor calls do: a Load joins the loads in progress (it used not to:
// 2.00× the model's bytes).
func TestOnePath_TwoLoadsAtOnceReadTheOriginOnce(t *testing.T) {
	for _, into := range []bool{false, true} {
		var origin atomic.Int64
		// A slow origin, so that the two loads overlap.
		c := openCache(t, &Options{Origin: countingOrigin{bytes: &origin, delay: 2e6}, Logger: nilLogger()})
		ctx := context.Background()
		var wg sync.WaitGroup
		var total uint64
		results := make([]*LoadResult, 2)
		for k := range 2 {
			m, err := c.Model(ctx, testModel)
			require.NoError(t, err)
			defer m.Close()
			total = m.Bytes()
			o := &LoadOptions{}
			if into {
				o.Into = func(ti *TensorInfo) ([]byte, error) { return make([]byte, ti.Bytes), nil }
			}
			wg.Go(func() {
				var err error
				results[k], err = m.Load(ctx, o, func(tn *Tensor) error {
					want := fileBytes(t, testModel, tn.Name)
					if string(want) != string(tn.Bytes()) {
						t.Errorf("tensor %s: wrong bytes", tn.Name)
					}
					return nil
				})
				if err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		require.Equal(t, int64(total), origin.Load(), "into=%v: the origin is read once", into)
		r0, r1 := results[0], results[1]
		require.Equal(t, r0.Tensors, r0.L1+r0.Source+r0.Shared)
		require.Equal(t, r0.Tensors+r1.Tensors, r0.Source+r1.Source+r0.Shared+r1.Shared+r0.L1+r1.L1)
		require.Equal(t, r0.Tensors, r0.Source+r1.Source, "each tensor read from the file by one of them")
	}
}

// With a tensor in L3, OpenTensor is served by L3, as Tensor is (it used to
// read the source).
func TestOnePath_OpenTensorReadsL3(t *testing.T) {
	srv := testredis.Start(t)
	ctx := context.Background()
	a := machine(t, srv.Addr, nil)
	_, err := a.Tensor(ctx, testModel, "Const_59")
	require.NoError(t, err)
	a.Flush()
	var origin atomic.Int64
	b := machine(t, srv.Addr, countingOrigin{bytes: &origin})
	r, err := b.OpenTensor(ctx, testModel, "Const_59")
	require.NoError(t, err)
	defer r.Close()
	require.Equal(t, L3, r.ServedBy)
	got := make([]byte, r.Size())
	_, err = r.ReadAt(got, 0)
	require.NoError(t, err)
	require.Equal(t, fileBytes(t, testModel, "Const_59"), got)
	require.Zero(t, origin.Load())
	s := b.Stats()
	require.Equal(t, uint64(1), s.L3Hits)
}

// A value another machine put is found by OpenValue (so by GET
// /v1/values/... and warm value get through a daemon), as by Get.
func TestOnePath_OpenValueReadsL3(t *testing.T) {
	srv := testredis.Start(t)
	ctx := context.Background()
	a := machine(t, srv.Addr, nil)
	b := machine(t, srv.Addr, nil)
	require.NoError(t, a.Put(ctx, "kv", "block-7", []byte("seven"), nil))
	a.Flush()
	r, err := b.OpenValue(ctx, "kv", "block-7")
	require.NoError(t, err)
	defer r.Close()
	require.Equal(t, L3, r.ServedBy)
	got := make([]byte, r.Size())
	_, err = r.ReadAt(got, 0)
	require.NoError(t, err)
	require.Equal(t, "seven", string(got))
	// Now in b's own tiers.
	v, err := b.Get(ctx, "kv", "block-7", nil)
	require.NoError(t, err)
	require.Equal(t, L1, v.ServedBy)
}

// Every request is counted once in one of the tiers or Failed, L3 among
// them, in Stats and in Lifetime.
func TestOnePath_CountsAddUpWithL3(t *testing.T) {
	srv := testredis.Start(t)
	ctx := context.Background()
	a := machine(t, srv.Addr, nil)
	_, err := a.Tensor(ctx, testModel, "Const_59")
	require.NoError(t, err)
	a.Flush()
	b := machine(t, srv.Addr, nil)
	tn, err := b.Tensor(ctx, testModel, "Const_59")
	require.NoError(t, err)
	require.Equal(t, L3, tn.ServedBy)
	_, err = b.Tensor(ctx, testModel, "Const_59")
	require.NoError(t, err)
	_, err = b.Tensor(ctx, testModel, "no such tensor")
	require.Error(t, err)
	s := b.Stats()
	require.Equal(t, uint64(3), s.Requests)
	require.Equal(t, uint64(1), s.L3Hits)
	require.Equal(t, s.Requests, s.L1Hits+s.L2Hits+s.L3Hits+s.SourceLoads+s.SharedLoads+s.Failed)
	l := s.Lifetime
	require.Equal(t, uint64(1), l.L3Hits)
	require.Equal(t, l.Requests, l.L1Hits+l.L2Hits+l.L3Hits+l.SourceLoads+l.SharedLoads+l.Failed)
}
