package tier

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/loader"
)

const formats = "../loader/testdata/formats"

// copyTree copies the files of dir (not recursively) to a temporary
// directory, so that tests may change them.
func copyTree(t *testing.T, dir string) string {
	t.Helper()
	out := t.TempDir()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(out, e.Name()), b, 0o644))
	}
	return out
}

// Every format goes source -> L1, and after a restart comes from L2 with the
// same bytes, dtype and shape.
func TestCache_EveryFormatThroughTheTiers(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cases := []struct{ path, tensor string }{
		{formats + "/v3.gguf", "blk.0.ffn_down.weight"},
		{formats + "/v2.gguf", "x"},
		{formats + "/f8_fortran.npy", "f8_fortran"},
		{formats + "/deflated.npz", "i4_be"},
		{formats + "/stored.npz", "f8_fortran"},
		{formats + "/gen.py", loader.PlainTensor},
		{formats + "/sharded", "c"},
		{formats + "/sharded/model.safetensors.index.json", "a"},
	}
	c := openCache(t, &Options{Dir: dir})
	want := map[string][]byte{}
	for _, tc := range cases {
		src, err := loader.OpenSource(tc.path)
		require.NoError(t, err, tc.path)
		b, err := src.ReadTensor(tc.tensor)
		require.NoError(t, err)
		ti, _ := src.Tensor(tc.tensor)
		src.Close()
		want[tc.path] = b
		tn, err := c.Tensor(ctx, tc.path, tc.tensor)
		require.NoError(t, err, tc.path)
		require.Equal(t, Source, tn.ServedBy, tc.path)
		require.Equal(t, b, tn.Bytes(), tc.path)
		require.Equal(t, string(ti.DType), tn.DType)
		require.Equal(t, ti.Shape, tn.Shape)
		tn, err = c.Tensor(ctx, tc.path, tc.tensor)
		require.NoError(t, err)
		require.Equal(t, L1, tn.ServedBy, tc.path)
	}
	require.NoError(t, c.Close())
	c = openCache(t, &Options{Dir: dir})
	for _, tc := range cases {
		tn, err := c.Tensor(ctx, tc.path, tc.tensor)
		require.NoError(t, err, tc.path)
		require.Equal(t, L2, tn.ServedBy, tc.path)
		require.Equal(t, want[tc.path], tn.Bytes(), tc.path)
	}
	_, err := c.Tensor(ctx, formats+"/sharded", "nope")
	require.ErrorIs(t, err, errs.ErrNotFound)
}

// Warm takes a sharded checkpoint whole; a changed shard invalidates its own
// tensors and no others.
func TestCache_ShardedWarmAndChange(t *testing.T) {
	ctx := context.Background()
	model := copyTree(t, formats+"/sharded")
	c := openCache(t, &Options{Dir: t.TempDir()})
	res, err := c.Warm(ctx, model)
	require.NoError(t, err)
	require.Equal(t, 3, res.Tensors)
	require.Equal(t, 3, res.Written)
	n, logical, _, err := c.FileEntries(model)
	require.NoError(t, err)
	require.Equal(t, 3, n)
	require.EqualValues(t, 48, logical)

	// Rewrite shard 2 with other values for "c".
	p2 := filepath.Join(model, "model-00002-of-00002.safetensors")
	b, err := os.ReadFile(p2)
	require.NoError(t, err)
	b[len(b)-1] ^= 0x40
	require.NoError(t, os.WriteFile(p2, b, 0o644))
	tn, err := c.Tensor(ctx, model, "c")
	require.NoError(t, err)
	require.Equal(t, Source, tn.ServedBy)
	require.Equal(t, b[len(b)-16:], tn.Bytes())
	tn, err = c.Tensor(ctx, model, "a")
	require.NoError(t, err)
	require.Equal(t, L2, tn.ServedBy, "an unchanged shard stays cached")

	// An index that no longer matches its shards is refused by Warm.
	require.NoError(t, os.WriteFile(filepath.Join(model, loader.ShardIndexName), []byte(`{"weight_map": {"a": "model-00001-of-00002.safetensors"}}`), 0o644))
	_, err = c.Warm(ctx, model)
	require.ErrorIs(t, err, errs.ErrInvalidModel)

	c.Flush()
	removed, err := c.Evict(filepath.Join(model, "model-00002-of-00002.safetensors"))
	require.NoError(t, err)
	require.Equal(t, 1, removed)
}

// Reading many small files keeps at most maxIdleFiles of them mapped, and a
// file closed for that is reopened when read again.
func TestCache_BoundsOpenFiles(t *testing.T) {
	ctx := context.Background()
	raw, err := os.ReadFile(formats + "/u1.npy")
	require.NoError(t, err)
	dir := t.TempDir()
	c := openCache(t, &Options{MemoryBytes: 256}) // admits no entry (each is charged l1.EntryOverhead): every read goes to the file
	n := maxIdleFiles + 50
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("x%03d.npy", i))
		require.NoError(t, os.WriteFile(p, raw, 0o644))
		_, err := c.Tensor(ctx, p, fmt.Sprintf("x%03d", i))
		require.NoError(t, err)
	}
	require.Equal(t, maxIdleFiles, c.files.open())
	tn, err := c.Tensor(ctx, filepath.Join(dir, "x000.npy"), "x000")
	require.NoError(t, err)
	require.Equal(t, Source, tn.ServedBy)
	require.Equal(t, []byte{0, 1, 127, 128, 255}, tn.Bytes())
}
