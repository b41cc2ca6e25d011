package tier

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/internal/testredis"
	"github.com/modelcache/modelcache/l3"
)

// Found by TestReadPaths_Model: Warm on a machine whose L3 holds a
// tensor writes it to L2 from L3, and must say so (Written), not count it
// among the tensors L2 already held (Skipped).
func TestReadPaths_WarmFromL3CountsWritten(t *testing.T) {
	srv := testredis.Start(t)
	ctx := context.Background()
	a := machine(t, srv.Addr, nil)
	_, err := a.Tensor(ctx, testModel, "Const_59")
	require.NoError(t, err)
	a.Flush()
	b := machine(t, srv.Addr, nil)
	res, err := b.Warm(ctx, testModel)
	require.NoError(t, err)
	n, _, _, err := b.FileEntries(testModel)
	require.NoError(t, err)
	require.Equal(t, res.Tensors, n, "L2 holds every tensor after Warm")
	require.Equal(t, res.Tensors, res.Written, "L2 held none of them before: %+v", res)
	require.Zero(t, res.Skipped)
}

// flightsNow is how many reads below L1 are in progress, and how many
// callers follow them.
func flightsNow(c *Cache) (n, followers int) {
	c.reads.mu.Lock()
	defer c.reads.mu.Unlock()
	for _, fl := range c.reads.m {
		n++
		followers += fl.followers
	}
	return n, followers
}

// Found by TestReadPaths_Model: a Get with a fill that joins a lookup of
// the same key without one (Get with fill nil, OpenValue's L3 look) must
// still fill on the miss, not return the lookup's ErrNotFound.
func TestReadPaths_FillJoiningALookupStillFills(t *testing.T) {
	srv := testredis.Start(t)
	ctx := context.Background()
	c := openCache(t, &Options{Dir: t.TempDir(), Logger: nilLogger(),
		L3: &l3.Options{Addrs: []string{srv.Addr}, Timeout: time.Minute}})
	require.NoError(t, c.CheckL3(ctx))
	// The namespace in use: its epoch is not read from L3 again.
	require.NoError(t, c.Put(ctx, "ns", "other", []byte("x"), nil))
	// Redis stopped: the lookup's L3 read waits, its flight open, until
	// the fill's Get has joined it.
	srv.Stop()
	lookup := make(chan error, 1)
	go func() {
		_, err := c.Get(ctx, "ns", "k", nil)
		lookup <- err
	}()
	for {
		if n, _ := flightsNow(c); n > 0 {
			break
		}
		runtime.Gosched()
	}
	type result struct {
		v   *Value
		err error
	}
	filled := make(chan result, 1)
	go func() {
		v, err := c.Get(ctx, "ns", "k", func(context.Context) ([]byte, error) { return []byte("computed"), nil })
		filled <- result{v, err}
	}()
	for {
		if _, f := flightsNow(c); f > 0 {
			break
		}
		runtime.Gosched()
	}
	srv.Cont()
	require.ErrorIs(t, <-lookup, errs.ErrNotFound)
	r := <-filled
	require.NoError(t, r.err, "a Get with a fill is never ErrNotFound")
	require.Equal(t, "computed", string(r.v.Bytes()))
	require.Equal(t, Fill, r.v.ServedBy)
}
