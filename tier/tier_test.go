package tier

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/modelcache/modelcache/internal/third_party/badger"
	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/l2"
	"github.com/modelcache/modelcache/loader"
)

const testModel = "../testdata/models/posenet.bf16.safetensors"

func openCache(t *testing.T, o *Options) *Cache {
	t.Helper()
	c, err := Open(o)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

// fileBytes reads a tensor's bytes straight from the file, for comparison.
func fileBytes(t *testing.T, path, name string) []byte {
	t.Helper()
	f, err := loader.Open(path)
	require.NoError(t, err)
	defer f.Close()
	b, err := f.ReadTensor(name)
	require.NoError(t, err)
	return b
}

func TestCache_SourceThenL1ThenL2(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	c, err := Open(&Options{Dir: dir})
	require.NoError(t, err)
	want := fileBytes(t, testModel, "Const_61")

	tn, err := c.Tensor(ctx, testModel, "Const_61")
	require.NoError(t, err)
	require.Equal(t, Source, tn.ServedBy)
	require.Equal(t, "BF16", tn.DType)
	require.Equal(t, []uint64{1, 1, 384, 32}, tn.Shape)
	require.Equal(t, want, tn.Bytes())

	tn, err = c.Tensor(ctx, testModel, "Const_61")
	require.NoError(t, err)
	require.Equal(t, L1, tn.ServedBy)
	require.Equal(t, want, tn.Bytes())

	c.Flush()
	st := c.Stats()
	require.Equal(t, uint64(1), st.L1Hits)
	require.Equal(t, uint64(1), st.SourceLoads)
	require.Equal(t, 1, st.L2.Entries)
	require.NoError(t, c.Close())

	c = openCache(t, &Options{Dir: dir})
	tn, err = c.Tensor(ctx, testModel, "Const_61")
	require.NoError(t, err)
	require.Equal(t, L2, tn.ServedBy)
	require.Equal(t, want, tn.Bytes())
	tn, err = c.Tensor(ctx, testModel, "Const_61")
	require.NoError(t, err)
	require.Equal(t, L1, tn.ServedBy, "an L2 hit is promoted to L1")
}

func TestCache_WarmThenEveryTensorFromL2(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	c, err := Open(&Options{Dir: dir})
	require.NoError(t, err)
	res, err := c.Warm(ctx, testModel)
	require.NoError(t, err)
	require.Equal(t, 62, res.Tensors)
	require.Equal(t, 62, res.Written)
	require.Equal(t, uint64(2516390), res.LogicalBytes)
	res, err = c.Warm(ctx, testModel)
	require.NoError(t, err)
	require.Equal(t, 62, res.Skipped, "a second warm skips what is cached")
	require.NoError(t, c.Close())

	c = openCache(t, &Options{Dir: dir})
	f, err := loader.Open(testModel)
	require.NoError(t, err)
	defer f.Close()
	for _, ti := range f.Tensors() {
		tn, err := c.Tensor(ctx, testModel, ti.Name)
		require.NoError(t, err)
		require.Equal(t, L2, tn.ServedBy, ti.Name)
		want, err := f.ReadTensor(ti.Name)
		require.NoError(t, err)
		require.Equal(t, want, tn.Bytes(), ti.Name)
	}
	require.Zero(t, c.Stats().SourceLoads)
}

// A file rewritten in place is never served from entries of its old version,
// whether they sit in L1 or in L2.
func TestCache_ChangedFileIsNotServedStale(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	model := filepath.Join(t.TempDir(), "m.safetensors")
	write := func(v byte) {
		head := `{"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}`
		b := binary.LittleEndian.AppendUint64(nil, uint64(len(head)))
		b = append(append(b, head...), v, v, v, v)
		require.NoError(t, os.WriteFile(model, b, 0o644))
	}
	write(1)
	c := openCache(t, &Options{Dir: dir})
	tn, err := c.Tensor(ctx, model, "w")
	require.NoError(t, err)
	require.Equal(t, []byte{1, 1, 1, 1}, tn.Bytes())
	c.Flush()

	// Same size, same path; a later mtime as any real rewrite has.
	write(2)
	later := time.Now().Add(2 * time.Second)
	require.NoError(t, os.Chtimes(model, later, later))
	tn, err = c.Tensor(ctx, model, "w")
	require.NoError(t, err)
	require.Equal(t, Source, tn.ServedBy)
	require.Equal(t, []byte{2, 2, 2, 2}, tn.Bytes())
}

func TestCache_CorruptL2IsReloadedFromSource(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	c, err := Open(&Options{Dir: dir, ChunkSize: 4096})
	require.NoError(t, err)
	_, err = c.Warm(ctx, testModel)
	require.NoError(t, err)
	require.NoError(t, c.Close())

	// Damage every chunk value in the store.
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	require.NoError(t, err)
	require.NoError(t, db.Update(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{'c'}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			require.NoError(t, err)
			v[0] ^= 0xff
			require.NoError(t, txn.Set(it.Item().KeyCopy(nil), v))
		}
		return nil
	}))
	require.NoError(t, db.Close())

	c = openCache(t, &Options{Dir: dir, ChunkSize: 4096})
	tn, err := c.Tensor(ctx, testModel, "Const_61")
	require.NoError(t, err)
	require.Equal(t, Source, tn.ServedBy)
	require.Equal(t, fileBytes(t, testModel, "Const_61"), tn.Bytes())
	st := c.Stats()
	require.Equal(t, uint64(1), st.L2.Corrupt)
	require.Equal(t, uint64(1), st.L2Errors)
	c.Flush()
	tn, err = c.Tensor(ctx, testModel, "Const_60")
	require.NoError(t, err)
	require.Equal(t, fileBytes(t, testModel, "Const_60"), tn.Bytes())
}

// Many concurrent readers of one missing tensor cause one source load.
func TestCache_SingleLoadUnderConcurrency(t *testing.T) {
	c := openCache(t, &Options{Dir: t.TempDir()})
	want := fileBytes(t, testModel, "Const_59")
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			tn, err := c.Tensor(context.Background(), testModel, "Const_59")
			require.NoError(t, err)
			require.Equal(t, want, tn.Bytes())
		})
	}
	wg.Wait()
	require.Equal(t, uint64(1), c.Stats().SourceLoads)
}

func TestCache_Errors(t *testing.T) {
	c := openCache(t, &Options{})
	ctx := context.Background()
	_, err := c.Tensor(ctx, testModel, "no such tensor")
	require.ErrorIs(t, err, errs.ErrNotFound)
	require.Contains(t, err.Error(), "no such tensor")
	_, err = c.Tensor(ctx, "/does/not/exist.safetensors", "x")
	require.ErrorIs(t, err, os.ErrNotExist)
	bad := filepath.Join(t.TempDir(), "bad.safetensors")
	require.NoError(t, os.WriteFile(bad, []byte("not a model"), 0o644))
	_, err = c.Tensor(ctx, bad, "x")
	require.ErrorIs(t, err, errs.ErrInvalidModel)
	_, err = c.Warm(ctx, testModel)
	require.Error(t, err, "Warm needs L2")

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = c.Tensor(cctx, testModel, "Const_1")
	// Either the load won the race or the cancelled context did.
	if err != nil {
		require.ErrorIs(t, err, context.Canceled)
	}
}

func TestCache_MemoryOnlyRespectsBudget(t *testing.T) {
	c := openCache(t, &Options{MemoryBytes: 64 << 10})
	f, err := loader.Open(testModel)
	require.NoError(t, err)
	defer f.Close()
	for _, ti := range f.Tensors() {
		_, err := c.Tensor(context.Background(), testModel, ti.Name)
		require.NoError(t, err)
	}
	st := c.Stats().L1
	require.LessOrEqual(t, st.Bytes, st.MaxBytes)
	require.NotZero(t, st.Evictions)
}

// The write-behind queue drops, never blocks, when full.
func TestWriteBehind_DropsWhenFull(t *testing.T) {
	block := make(chan struct{})
	p := putterFunc(func(string, string, []uint64, []byte) error { <-block; return nil })
	w := newWriteBehind("l2", p, 100, newRateLimitedLog(nilLogger(), warnInterval))
	w.enqueue("a", "", nil, make([]byte, 60))
	w.enqueue("b", "", nil, make([]byte, 60)) // 120 > 100: dropped
	require.Equal(t, uint64(1), w.dropped.Load())
	close(block)
	w.flush()
	w.close()
}

type putterFunc func(key, dtype string, shape []uint64, data []byte) error

func (f putterFunc) Put(key, dtype string, shape []uint64, data []byte) error {
	return f(key, dtype, shape, data)
}

func writeModel(t *testing.T, path string, v byte) {
	t.Helper()
	head := `{"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}`
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(head)))
	b = append(append(b, head...), v, v, v, v)
	require.NoError(t, os.WriteFile(path, b, 0o644))
}

// Entries of an older version of a file are removed from L2 once the new
// version is read, and GC removes those of files that are gone.
func TestCache_ReclaimsEntriesOfChangedAndDeletedFiles(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	model := filepath.Join(t.TempDir(), "m.safetensors")
	writeModel(t, model, 1)
	c := openCache(t, &Options{Dir: dir})
	_, err := c.Warm(ctx, model)
	require.NoError(t, err)
	_, err = c.Warm(ctx, testModel)
	require.NoError(t, err)
	require.Equal(t, 63, c.Stats().L2.Entries)

	writeModel(t, model, 2)
	later := time.Now().Add(2 * time.Second)
	require.NoError(t, os.Chtimes(model, later, later))
	_, err = c.Warm(ctx, model)
	require.NoError(t, err)
	st := c.Stats()
	require.Equal(t, 63, st.L2.Entries, "the old version's entry was replaced, not kept beside")
	require.Equal(t, uint64(1), st.Removed)

	require.NoError(t, os.Remove(model))
	require.NoError(t, c.GC())
	require.Equal(t, 62, c.Stats().L2.Entries, "GC removed the deleted file's entry")

	n, err := c.Evict(testModel)
	require.NoError(t, err)
	require.Equal(t, 62, n)
	require.Zero(t, c.Stats().L2.Entries)
}

// With no room on disk for L2, reads keep working from the source and the
// failed writes are counted; Warm says why it failed.
func TestCache_DiskFullDegradesToSource(t *testing.T) {
	c := openCache(t, &Options{Dir: t.TempDir(), ReserveBytes: 1 << 62})
	ctx := context.Background()
	tn, err := c.Tensor(ctx, testModel, "Const_61")
	require.NoError(t, err)
	require.Equal(t, fileBytes(t, testModel, "Const_61"), tn.Bytes())
	c.Flush()
	st := c.Stats()
	require.Equal(t, uint64(1), st.WriteBehindErrors)
	require.Zero(t, st.L2.Entries)
	_, err = c.Warm(ctx, testModel)
	require.ErrorIs(t, err, errs.ErrNoSpace)
	abs, _ := filepath.Abs(testModel)
	require.ErrorContains(t, err, abs+": tensor \"", "the error names the model file and the tensor")
	tn, err = c.Tensor(ctx, testModel, "Const_61")
	require.NoError(t, err)
	require.Equal(t, L1, tn.ServedBy)
}

// BenchmarkCache_TensorFromL2 reads every tensor of the test model from L2
// (L1 admits nothing): the per-tensor cost of the L2 path.
func BenchmarkCache_TensorFromL2(b *testing.B) {
	dir := b.TempDir()
	c, err := Open(&Options{Dir: dir, MemoryBytes: 1})
	require.NoError(b, err)
	defer c.Close()
	res, err := c.Warm(context.Background(), testModel)
	require.NoError(b, err)
	f, err := loader.Open(testModel)
	require.NoError(b, err)
	names := make([]string, 0, len(f.Tensors()))
	for _, t := range f.Tensors() {
		names = append(names, t.Name)
	}
	f.Close()
	b.SetBytes(int64(res.LogicalBytes))
	for b.Loop() {
		for _, n := range names {
			if _, err := c.Tensor(context.Background(), testModel, n); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// Evict drops the file's tensors from L1 too, with or without L2.
func TestCache_EvictClearsL1(t *testing.T) {
	for _, dir := range []string{"", t.TempDir()} {
		c := openCache(t, &Options{Dir: dir})
		ctx := context.Background()
		_, err := c.Tensor(ctx, testModel, "Const_61")
		require.NoError(t, err)
		tn, err := c.Tensor(ctx, testModel, "Const_61")
		require.NoError(t, err)
		require.Equal(t, L1, tn.ServedBy)
		c.Flush()
		_, err = c.Evict(testModel)
		require.NoError(t, err)
		tn, err = c.Tensor(ctx, testModel, "Const_61")
		require.NoError(t, err)
		require.Equal(t, Source, tn.ServedBy, "dir %q", dir)
	}
}

// An in-place rewrite that sets the modification time back (rsync
// --inplace -t, touch -r) keeps size, mtime and inode; its status-change
// time still moves, so the old bytes are served from no tier, with path or
// content keys, and GC drops the old version's entries.
func TestCache_RewriteThatRestoresMtimeIsNotServedStale(t *testing.T) {
	for _, digest := range []bool{false, true} {
		t.Run(fmt.Sprintf("digest=%v", digest), func(t *testing.T) {
			ctx := context.Background()
			model := filepath.Join(t.TempDir(), "m.safetensors")
			writeModel(t, model, 1)
			fi, err := os.Stat(model)
			require.NoError(t, err)
			c := openCache(t, &Options{Dir: t.TempDir(), ContentDigest: digest})
			tn, err := c.Tensor(ctx, model, "w")
			require.NoError(t, err)
			require.Equal(t, []byte{1, 1, 1, 1}, tn.Bytes())
			c.Flush()

			// Rewrite in place (same inode), then restore the mtime.
			time.Sleep(10 * time.Millisecond) // a ctime tick apart, on coarse clocks too
			f, err := os.OpenFile(model, os.O_WRONLY, 0)
			require.NoError(t, err)
			_, err = f.WriteAt([]byte{2, 2, 2, 2}, fi.Size()-4)
			require.NoError(t, err)
			require.NoError(t, f.Close())
			require.NoError(t, os.Chtimes(model, fi.ModTime(), fi.ModTime()))
			after, err := os.Stat(model)
			require.NoError(t, err)
			require.Equal(t, fi.ModTime(), after.ModTime())
			require.Equal(t, fi.Size(), after.Size())

			tn, err = c.Tensor(ctx, model, "w")
			require.NoError(t, err)
			require.Equal(t, []byte{2, 2, 2, 2}, tn.Bytes())
			require.Equal(t, Source, tn.ServedBy)
			c.Flush()
			require.NoError(t, c.GC())
			n, _, _, err := c.FileEntries(model)
			require.NoError(t, err)
			require.Equal(t, 1, n)
			if !digest { // content-keyed entries may serve other copies; the budget retires them
				require.Equal(t, 1, c.Stats().L2.Entries, "the old version's entry is gone")
			}
		})
	}
}

// With L2Optional, a directory another store holds is a warning and reads
// go to the file; without it, or with a wrong encryption key, Open fails.
func TestCache_L2OptionalRunsWithoutAnUnusableDirectory(t *testing.T) {
	dir := t.TempDir()
	key := make([]byte, 16)
	held, err := l2.Open(&l2.Options{Dir: dir, EncryptionKey: key})
	require.NoError(t, err)
	_, err = Open(&Options{Dir: dir})
	require.ErrorIs(t, err, errs.ErrLocked)

	c := openCache(t, &Options{Dir: dir, L2Optional: true, Logger: nilLogger()})
	require.Contains(t, c.Stats().L2Unavailable, "in use by another process")
	tn, err := c.Tensor(context.Background(), testModel, "Const_1")
	require.NoError(t, err)
	require.Equal(t, Source, tn.ServedBy)
	require.Equal(t, fileBytes(t, testModel, "Const_1"), tn.Bytes())
	_, err = c.Warm(context.Background(), testModel)
	require.Error(t, err, "Warm needs L2")
	require.NoError(t, held.Close())

	_, err = Open(&Options{Dir: dir, L2Optional: true, EncryptionKey: bytes.Repeat([]byte{1}, 16)})
	require.ErrorIs(t, err, errs.ErrWrongKey)
	_, err = Open(&Options{Dir: dir, L2Optional: true, DiskBytes: 1})
	require.Error(t, err, "options no directory could satisfy")
}
