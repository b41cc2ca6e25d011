package tier

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/internal/testmodels"
)

// checkReader reads r through ReadAt at random offsets and lengths, and
// whole through WriteTo, and checks both against want.
func checkReader(t *testing.T, r *TensorReader, want []byte) {
	t.Helper()
	require.Equal(t, int64(len(want)), r.Size())
	rng := rand.New(rand.NewPCG(1, 1))
	for range 50 {
		off := rng.IntN(len(want))
		n := rng.IntN(len(want) - off + 1)
		p := make([]byte, n)
		k, err := r.ReadAt(p, int64(off))
		require.NoError(t, err)
		require.Equal(t, n, k)
		require.Equal(t, want[off:off+n], p)
	}
	p := make([]byte, 10)
	k, err := r.ReadAt(p, int64(len(want)-3))
	require.ErrorIs(t, err, io.EOF)
	require.Equal(t, 3, k)
	var buf bytes.Buffer
	n, err := r.WriteTo(&buf)
	require.NoError(t, err)
	require.Equal(t, int64(len(want)), n)
	require.Equal(t, want, buf.Bytes())
}

func TestOpenTensor_EveryTier(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.safetensors")
	want := writeTensors(t, path, 3, 300_000, 11)["t001"]
	dir := t.TempDir()
	c := openCache(t, &Options{Dir: dir, ChunkSize: 4096, Logger: nilLogger()})

	r, err := c.OpenTensor(ctx, path, "t001")
	require.NoError(t, err)
	require.Equal(t, Source, r.ServedBy)
	checkReader(t, r, want) // WriteTo writes it to L2 on the way
	require.NoError(t, r.Close())
	require.NoError(t, r.Close())

	r, err = c.OpenTensor(ctx, path, "t001")
	require.NoError(t, err)
	require.Equal(t, L2, r.ServedBy, "WriteTo from the file stored it")
	checkReader(t, r, want)
	require.NoError(t, r.Close())

	_, err = c.Tensor(ctx, path, "t001") // now in L1
	require.NoError(t, err)
	r, err = c.OpenTensor(ctx, path, "t001")
	require.NoError(t, err)
	require.Equal(t, L1, r.ServedBy)
	checkReader(t, r, want)
	require.NoError(t, r.Close())

	_, err = c.OpenTensor(ctx, path, "nope")
	require.ErrorIs(t, err, errs.ErrNotFound)
	s := c.Stats()
	require.Equal(t, s.Requests, s.L1Hits+s.L2Hits+s.SourceLoads+s.SharedLoads+s.Failed)
}

// A writer that fails stops WriteTo with its error, and nothing partial is
// stored; an L2 that cannot take the tensor does not stop the bytes.
func TestOpenTensor_WriteToFailures(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.safetensors")
	want := writeTensors(t, path, 1, 200_000, 12)["t000"]
	c := openCache(t, &Options{Dir: t.TempDir(), ChunkSize: 4096, Logger: nilLogger()})
	r, err := c.OpenTensor(ctx, path, "t000")
	require.NoError(t, err)
	_, err = r.WriteTo(&failAfter{n: 50_000})
	require.ErrorIs(t, err, errBrokenPipe)
	require.NoError(t, r.Close())
	r, err = c.OpenTensor(ctx, path, "t000")
	require.NoError(t, err)
	require.Equal(t, Source, r.ServedBy, "a failed stream stored nothing")
	require.NoError(t, r.Close())

	// A reserve larger than the disk: every L2 write fails.
	c2 := openCache(t, &Options{Dir: t.TempDir(), ChunkSize: 4096, ReserveBytes: 1 << 62, Logger: nilLogger()})
	r, err = c2.OpenTensor(ctx, path, "t000")
	require.NoError(t, err)
	var buf bytes.Buffer
	_, err = r.WriteTo(&buf)
	require.NoError(t, err)
	require.Equal(t, want, buf.Bytes())
	require.NoError(t, r.Close())
}

var errBrokenPipe = os.ErrClosed

type failAfter struct{ n int }

func (f *failAfter) Write(p []byte) (int, error) {
	if f.n -= len(p); f.n < 0 {
		return 0, errBrokenPipe
	}
	return len(p), nil
}

// Warm streams a tensor above streamAbove into L2 chunk by chunk, with the
// same bytes as a whole read.
func TestWarm_StreamsLargeTensors(t *testing.T) {
	old := streamAbove
	streamAbove = 10_000
	defer func() { streamAbove = old }()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.safetensors")
	want := writeTensors(t, path, 4, 100_000, 13)
	dir := t.TempDir()
	c, err := Open(&Options{Dir: dir, ChunkSize: 4096, Logger: nilLogger()})
	require.NoError(t, err)
	res, err := c.Warm(ctx, path)
	require.NoError(t, err)
	require.Equal(t, 4, res.Written)
	require.NoError(t, c.Close())
	c = openCache(t, &Options{Dir: dir, Logger: nilLogger()})
	for name, b := range want {
		tn, err := c.Tensor(ctx, path, name)
		require.NoError(t, err)
		require.Equal(t, L2, tn.ServedBy)
		require.Equal(t, b, tn.Bytes())
	}
}

// Tensors stored encoded (a deflated .npz member, big-endian and Fortran
// .npy) read piecewise from the file, and from L2 after WriteTo stored them,
// with the bytes a whole read gives; an empty tensor reads as empty.
func TestOpenTensor_EncodedAndEmpty(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, &Options{Dir: t.TempDir(), ChunkSize: 4096, Logger: nilLogger()})
	for _, tc := range []struct{ path, name string }{
		{formats + "/deflated.npz", "i4_be"},
		{formats + "/u2_be_fortran.npy", "u2_be_fortran"},
		{formats + "/i4_be.npy", "i4_be"},
		{formats + "/empty.npy", "empty"},
	} {
		want := fileBytes(t, tc.path, tc.name)
		for _, tier := range []Tier{Source, L2} {
			r, err := c.OpenTensor(ctx, tc.path, tc.name)
			require.NoError(t, err, tc.path)
			if len(want) > 0 { // an empty tensor has nothing to store
				require.Equal(t, tier, r.ServedBy, tc.path)
			}
			if len(want) == 0 {
				n, err := r.WriteTo(io.Discard)
				require.NoError(t, err)
				require.Zero(t, n)
				k, err := r.ReadAt(make([]byte, 4), 0)
				require.ErrorIs(t, err, io.EOF)
				require.Zero(t, k)
			} else {
				checkReader(t, r, want)
			}
			require.NoError(t, r.Close())
		}
	}
}

// A model with no tensors loads as nothing, without error.
func TestModel_LoadEmpty(t *testing.T) {
	path := filepath.Join(t.TempDir(), "empty.safetensors")
	require.NoError(t, os.WriteFile(path, testmodels.Build(`{"__metadata__":{"a":"b"}}`, nil), 0o644))
	c := openCache(t, &Options{Dir: t.TempDir(), Logger: nilLogger()})
	m, err := c.Model(context.Background(), path)
	require.NoError(t, err)
	defer m.Close()
	require.Empty(t, m.Tensors())
	res, err := m.Load(context.Background(), nil, func(*Tensor) error { t.Fatal("no tensor"); return nil })
	require.NoError(t, err)
	require.Zero(t, res.Tensors)
	_, err = m.Warm(context.Background(), nil)
	require.NoError(t, err)
}
