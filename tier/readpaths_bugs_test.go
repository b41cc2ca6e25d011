package tier

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/internal/testmodels"
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

// writeVersion writes (renames over path) a safetensors file of one U8
// tensor "a" of value b, with modification time at, and returns b.
func writeVersion(t *testing.T, path string, b []byte, at int64) []byte {
	t.Helper()
	head := fmt.Sprintf(`{"a":{"dtype":"U8","shape":[%d],"data_offsets":[0,%d]}}`, len(b), len(b))
	tmp := path + ".new"
	require.NoError(t, os.WriteFile(tmp, testmodels.Build(head, b), 0o644))
	mt := time.Unix(at, 0)
	require.NoError(t, os.Chtimes(tmp, mt, mt))
	require.NoError(t, os.Rename(tmp, path))
	return b
}

// Found by TestReadPaths_Model: a Model holds its version of a file, so
// that a file renamed over meanwhile is still read as it was. Its
// OpenTensor, served by the source, must read that version, even when
// the cache has opened the newer one since (it read the newer file).
func TestReadPaths_OldModelOpenTensorReadsItsVersion(t *testing.T) {
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "m.safetensors")
	v1 := writeVersion(t, p, bytes.Repeat([]byte{1}, 4096), 1_000_000_001)
	c := openCache(t, &Options{Dir: t.TempDir(), Logger: nilLogger()})
	m, err := c.Model(ctx, p)
	require.NoError(t, err)
	defer m.Close()
	v2 := writeVersion(t, p, bytes.Repeat([]byte{2}, 4096), 1_000_000_002)
	tn, err := c.Tensor(ctx, p, "a")
	require.NoError(t, err)
	require.True(t, bytes.Equal(v2, tn.Bytes()))

	r, err := m.OpenTensor(ctx, "a")
	require.NoError(t, err)
	defer r.Close()
	require.Equal(t, Source, r.ServedBy)
	got := make([]byte, r.Size())
	_, err = r.ReadAt(got, 0)
	require.NoError(t, err)
	require.True(t, bytes.Equal(v1, got), "the handle's version, not the file now at its path: got %x…", got[:4])
}

// Found with it: the L2 writes a Load leaves for after it (LoadOptions.Into)
// read the handle's version again, not the file now at its path: else
// L2 holds the newer bytes under the older version's key.
func TestReadPaths_LoadLeavesItsOwnVersionInL2(t *testing.T) {
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "m.safetensors")
	v1 := writeVersion(t, p, bytes.Repeat([]byte{1}, 4096), 1_000_000_001)
	c := openCache(t, &Options{Dir: t.TempDir(), Logger: nilLogger()})
	m, err := c.Model(ctx, p)
	require.NoError(t, err)
	defer m.Close()
	writeVersion(t, p, bytes.Repeat([]byte{2}, 4096), 1_000_000_002)
	_, err = c.Tensor(ctx, p, "a")
	require.NoError(t, err)

	_, err = m.Load(ctx, &LoadOptions{Into: func(ti *TensorInfo) ([]byte, error) { return make([]byte, ti.Bytes), nil }},
		func(tn *Tensor) error {
			require.True(t, bytes.Equal(v1, tn.Bytes()))
			return nil
		})
	require.NoError(t, err)
	c.Flush()
	ti, _, err := m.lookup("a")
	require.NoError(t, err)
	c.l1.Delete(ti.key) // read it from L2
	tn, err := m.Tensor(ctx, "a")
	require.NoError(t, err)
	require.Equal(t, L2, tn.ServedBy)
	require.True(t, bytes.Equal(v1, tn.Bytes()), "L2 holds the handle's version under its key: got %x…", tn.Bytes()[:4])
}
