package tier

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/loader"
)

// originCase is an Origin the read tests run over, with the way to write a
// file to it.
type originCase struct {
	origin Origin
	mem    *memOrigin // nil for the local file system
	put    func(t *testing.T, path string, b []byte)
}

// eachOrigin runs test over the local file system and over files in
// memory served with a latency per read.
func eachOrigin(t *testing.T, test func(t *testing.T, oc originCase)) {
	t.Run("local", func(t *testing.T) {
		test(t, originCase{origin: LocalFiles{}, put: func(t *testing.T, path string, b []byte) {
			require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
			require.NoError(t, os.WriteFile(path, b, 0o644))
		}})
	})
	t.Run("memory", func(t *testing.T) {
		mem := newMemOrigin(100 * time.Microsecond)
		test(t, originCase{origin: mem, mem: mem, put: func(t *testing.T, path string, b []byte) { mem.put(path, b) }})
	})
}

// copy puts the file at src, or the regular files of the directory src,
// into the origin at dst.
func (oc originCase) copy(t *testing.T, src, dst string) {
	t.Helper()
	fi, err := os.Stat(src)
	require.NoError(t, err)
	if !fi.IsDir() {
		b, err := os.ReadFile(src)
		require.NoError(t, err)
		oc.put(t, dst, b)
		return
	}
	ents, err := os.ReadDir(src)
	require.NoError(t, err)
	for _, e := range ents {
		if e.Type().IsRegular() {
			oc.copy(t, filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()))
		}
	}
}

// tensorsFile is a safetensors file of writeTensors' tensors, as bytes.
func tensorsFile(t *testing.T, n, size int, seed uint64) ([]byte, map[string][]byte) {
	p := filepath.Join(t.TempDir(), "scratch.safetensors")
	want := writeTensors(t, p, n, size, seed)
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return b, want
}

// Every format goes from the origin to L1 and, after a restart, comes from
// L2; a directory that is no checkpoint names the models it holds.
func TestOrigin_EveryFormat(t *testing.T) {
	eachOrigin(t, func(t *testing.T, oc originCase) {
		ctx := context.Background()
		models := t.TempDir()
		oc.copy(t, formats, models)
		oc.copy(t, formats+"/sharded", models+"/sharded")
		cases := []struct{ file, tensor string }{
			{"v3.gguf", "blk.0.ffn_down.weight"},
			{"v2.gguf", "x"},
			{"f8_fortran.npy", "f8_fortran"},
			{"i4_be.npy", "i4_be"},
			{"deflated.npz", "i4_be"},
			{"stored.npz", "f8_fortran"},
			{"gen.py", loader.PlainTensor},
			{"sharded", "c"},
			{"sharded/model.safetensors.index.json", "a"},
		}
		dir := t.TempDir()
		opts := &Options{Dir: dir, Origin: oc.origin, Logger: nilLogger()}
		c, err := Open(opts)
		require.NoError(t, err)
		for _, tc := range cases {
			src, err := loader.OpenSource(filepath.Join(formats, tc.file))
			require.NoError(t, err)
			want, err := src.ReadTensor(tc.tensor)
			require.NoError(t, err)
			ti, _ := src.Tensor(tc.tensor)
			require.NoError(t, src.Close())
			for _, by := range []Tier{Source, L1} {
				tn, err := c.Tensor(ctx, filepath.Join(models, tc.file), tc.tensor)
				require.NoError(t, err, tc.file)
				require.Equal(t, by, tn.ServedBy, tc.file)
				require.Equal(t, want, tn.Bytes(), tc.file)
				require.Equal(t, string(ti.DType), tn.DType, tc.file)
			}
		}
		_, err = c.Tensor(ctx, models+"/sharded", "nope")
		require.ErrorIs(t, err, errs.ErrNotFound)
		_, err = c.Tensor(ctx, models, "x")
		require.ErrorIs(t, err, errs.ErrInvalidModel)
		require.ErrorContains(t, err, "a directory of 16 models")
		require.ErrorContains(t, err, "bool.npy, c16_be.npy")
		require.NoError(t, c.Close())

		c = openCache(t, opts)
		for _, tc := range cases {
			tn, err := c.Tensor(ctx, filepath.Join(models, tc.file), tc.tensor)
			require.NoError(t, err, tc.file)
			require.Equal(t, L2, tn.ServedBy, tc.file)
		}
	})
}

// Model.Load reads every tensor from the origin, with and without Into,
// then from L1 and L2; a new version is read again.
func TestOrigin_ModelLoad(t *testing.T) {
	eachOrigin(t, func(t *testing.T, oc originCase) {
		ctx := context.Background()
		path := filepath.Join(t.TempDir(), "m.safetensors")
		raw, want := tensorsFile(t, 24, 64<<10, 1)
		oc.put(t, path, raw)
		dir := t.TempDir()
		opts := &Options{Dir: dir, Origin: oc.origin, Logger: nilLogger()}
		c, err := Open(opts)
		require.NoError(t, err)
		m, err := c.Model(ctx, path)
		require.NoError(t, err)
		got, _, res := loadAll(t, m, &LoadOptions{Into: func(ti *TensorInfo) ([]byte, error) { return make([]byte, ti.Bytes), nil }})
		require.Equal(t, want, got)
		require.Equal(t, 24, res.Source)
		got, _, res = loadAll(t, m, nil)
		require.Equal(t, want, got)
		require.Equal(t, 24, res.L1)
		require.NoError(t, m.Close())
		require.NoError(t, c.Close())

		c = openCache(t, opts)
		m, err = c.Model(ctx, path)
		require.NoError(t, err)
		got, _, res = loadAll(t, m, &LoadOptions{Parallel: 3})
		require.Equal(t, want, got)
		require.Equal(t, 24, res.L2)
		require.NoError(t, m.Close())

		raw, want = tensorsFile(t, 24, 64<<10, 2)
		oc.put(t, path, raw)
		m, err = c.Model(ctx, path)
		require.NoError(t, err)
		defer m.Close()
		got, _, res = loadAll(t, m, nil)
		require.Equal(t, want, got)
		require.Equal(t, 24, res.Source, "a new version is read from the origin")
	})
}

// OpenTensor reads piecewise and streams from the origin, for tensors
// stored as is and encoded, then from L2 that WriteTo filled.
func TestOrigin_OpenTensor(t *testing.T) {
	eachOrigin(t, func(t *testing.T, oc originCase) {
		ctx := context.Background()
		models := t.TempDir()
		raw, tensors := tensorsFile(t, 3, 300_000, 11)
		oc.put(t, filepath.Join(models, "m.safetensors"), raw)
		oc.copy(t, formats, models)
		c := openCache(t, &Options{Dir: t.TempDir(), ChunkSize: 4096, Origin: oc.origin, Logger: nilLogger()})
		for _, tc := range []struct {
			file, name string
			want       []byte
		}{
			{"m.safetensors", "t001", tensors["t001"]},
			{"deflated.npz", "i4_be", fileBytes(t, formats+"/deflated.npz", "i4_be")},
			{"u2_be_fortran.npy", "u2_be_fortran", fileBytes(t, formats+"/u2_be_fortran.npy", "u2_be_fortran")},
			{"i4_be.npy", "i4_be", fileBytes(t, formats+"/i4_be.npy", "i4_be")},
		} {
			for _, by := range []Tier{Source, L2} {
				r, err := c.OpenTensor(ctx, filepath.Join(models, tc.file), tc.name)
				require.NoError(t, err, tc.file)
				require.Equal(t, by, r.ServedBy, tc.file)
				checkReader(t, r, tc.want) // from the source, WriteTo stores it in L2
				require.NoError(t, r.Close())
			}
		}
	})
}

// A sharded checkpoint is read through the origin, its index included: a
// changed shard invalidates its own tensors, a changed index is re-read.
func TestOrigin_Sharded(t *testing.T) {
	eachOrigin(t, func(t *testing.T, oc originCase) {
		ctx := context.Background()
		model := filepath.Join(t.TempDir(), "sharded")
		oc.copy(t, formats+"/sharded", model)
		c := openCache(t, &Options{Dir: t.TempDir(), Origin: oc.origin, Logger: nilLogger()})
		res, err := c.Warm(ctx, model)
		require.NoError(t, err)
		require.Equal(t, 3, res.Written)
		m, err := c.Model(ctx, model)
		require.NoError(t, err)
		got, _, _ := loadAll(t, m, nil)
		require.Len(t, got, 3)
		require.NoError(t, m.Close())

		p2 := filepath.Join(model, "model-00002-of-00002.safetensors")
		b, err := os.ReadFile(filepath.Join(formats, "sharded", filepath.Base(p2)))
		require.NoError(t, err)
		b[len(b)-1] ^= 0x40
		oc.put(t, p2, b)
		tn, err := c.Tensor(ctx, model, "c")
		require.NoError(t, err)
		require.Equal(t, Source, tn.ServedBy)
		require.Equal(t, b[len(b)-16:], tn.Bytes())
		tn, err = c.Tensor(ctx, model, "a")
		require.NoError(t, err)
		require.NotEqual(t, Source, tn.ServedBy, "an unchanged shard stays cached")

		oc.put(t, filepath.Join(model, loader.ShardIndexName), []byte(`{"weight_map": {"a": "model-00001-of-00002.safetensors"}}`))
		_, err = c.Warm(ctx, model)
		require.ErrorIs(t, err, errs.ErrInvalidModel)
		oc.put(t, filepath.Join(model, loader.ShardIndexName), []byte(`{"weight_map": {"a": "../x"}}`))
		_, err = c.Tensor(ctx, model, "a")
		require.ErrorIs(t, err, errs.ErrInvalidModel)
		require.ErrorContains(t, err, loader.ShardIndexName)
	})
}

// With ContentDigest, the digest is read through the origin: two copies
// share entries, a changed copy is its own content, each hashed once.
func TestOrigin_ContentDigest(t *testing.T) {
	eachOrigin(t, func(t *testing.T, oc originCase) {
		ctx := context.Background()
		hashed := countDigests(t)
		models := t.TempDir()
		a, b := filepath.Join(models, "a.safetensors"), filepath.Join(models, "b.safetensors")
		raw, err := os.ReadFile(testModel)
		require.NoError(t, err)
		oc.put(t, a, raw)
		oc.put(t, b, raw)
		c := openCache(t, &Options{Dir: t.TempDir(), ContentDigest: true, Origin: oc.origin, Logger: nilLogger()})
		res, err := c.Warm(ctx, a)
		require.NoError(t, err)
		require.Equal(t, 62, res.Written)
		res, err = c.Warm(ctx, b)
		require.NoError(t, err)
		require.Equal(t, 62, res.Skipped, "the copy's tensors are already cached")
		require.EqualValues(t, 2, hashed.Load(), "one hash per file")

		f, err := loader.Open(testModel)
		require.NoError(t, err)
		ti, _ := f.Tensor("Const_61")
		require.NoError(t, f.Close())
		raw[ti.Offset] ^= 0xff
		oc.put(t, b, raw)
		tn, err := c.Tensor(ctx, b, "Const_61")
		require.NoError(t, err)
		require.Equal(t, Source, tn.ServedBy)
		require.Equal(t, raw[ti.Offset:ti.Offset+ti.Length], tn.Bytes())
		tn, err = c.Tensor(ctx, a, "Const_61")
		require.NoError(t, err)
		require.NotEqual(t, Source, tn.ServedBy)
		require.EqualValues(t, 3, hashed.Load())
	})
}

// Through Throttle, a one-byte ReadAt of a tensor read from the origin
// reads about one byte of it, not the whole tensor.
func TestThrottle_ReadAtReadsWhatItNeeds(t *testing.T) {
	ctx := context.Background()
	mem := newMemOrigin(0)
	path := filepath.Join(t.TempDir(), "m.safetensors")
	raw, want := tensorsFile(t, 2, 288<<10, 3)
	mem.put(path, raw)
	c := openCache(t, &Options{Origin: Throttle(mem, 1<<30), Logger: nilLogger()})
	r, err := c.OpenTensor(ctx, path, "t001")
	require.NoError(t, err)
	defer r.Close()
	require.Equal(t, Source, r.ServedBy)
	before := mem.read.Load()
	p := make([]byte, 1)
	n, err := r.ReadAt(p, 12345)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, want["t001"][12345], p[0])
	require.EqualValues(t, 1, mem.read.Load()-before, "bytes read from the origin for a one-byte ReadAt")
}
