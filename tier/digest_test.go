package tier

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/loader"
)

func countDigests(t *testing.T) *atomic.Int32 {
	var n atomic.Int32
	orig := digestBlob
	digestBlob = func(b loader.Blob) (loader.Digest, error) {
		n.Add(1)
		return orig(b)
	}
	t.Cleanup(func() { digestBlob = orig })
	return &n
}

// With ContentDigest, two copies of a model share one set of entries; a
// changed copy gets its own; each version is hashed once, across restarts.
func TestCache_ContentDigestSharesCopies(t *testing.T) {
	ctx := context.Background()
	hashed := countDigests(t)
	models := t.TempDir()
	a, b := filepath.Join(models, "a.safetensors"), filepath.Join(models, "b.safetensors")
	raw, err := os.ReadFile(testModel)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(a, raw, 0o644))
	require.NoError(t, os.WriteFile(b, raw, 0o644))
	dir := t.TempDir()
	opts := &Options{Dir: dir, ContentDigest: true}

	c := openCache(t, opts)
	res, err := c.Warm(ctx, a)
	require.NoError(t, err)
	require.Equal(t, 62, res.Written)
	res, err = c.Warm(ctx, b)
	require.NoError(t, err)
	require.Equal(t, 62, res.Skipped, "the copy's tensors are already cached")
	tn, err := c.Tensor(ctx, b, "Const_61")
	require.NoError(t, err)
	require.Equal(t, L2, tn.ServedBy)
	require.Equal(t, fileBytes(t, a, "Const_61"), tn.Bytes())
	require.EqualValues(t, 2, hashed.Load(), "one hash per file")
	require.EqualValues(t, 62, c.Stats().L2.Entries)
	require.NoError(t, c.Close())

	// After a restart nothing is hashed again.
	c = openCache(t, opts)
	tn, err = c.Tensor(ctx, a, "Const_61")
	require.NoError(t, err)
	require.Equal(t, L2, tn.ServedBy)
	require.EqualValues(t, 2, hashed.Load(), "digest kept in L2")

	// A changed copy is its own content.
	f, err := loader.Open(b)
	require.NoError(t, err)
	ti, _ := f.Tensor("Const_61")
	f.Close()
	raw[ti.Offset] ^= 0xff
	require.NoError(t, os.WriteFile(b, raw, 0o644))
	tn, err = c.Tensor(ctx, b, "Const_61")
	require.NoError(t, err)
	require.Equal(t, Source, tn.ServedBy)
	require.Equal(t, raw[ti.Offset:ti.Offset+ti.Length], tn.Bytes())
	tn, err = c.Tensor(ctx, a, "Const_61")
	require.NoError(t, err)
	require.NotEqual(t, Source, tn.ServedBy)

	// GC forgets the digests of versions that are gone; entries stay.
	require.NoError(t, os.Remove(a))
	c.Flush()
	require.NoError(t, c.GC())
	recs, err := c.rec.Get(digestAuxPrefix)
	require.NoError(t, err)
	require.Len(t, recs, 1, "only b's current version")
	require.EqualValues(t, 63, c.Stats().L2.Entries)

	// Evict removes b's content.
	n, err := c.Evict(b)
	require.NoError(t, err)
	require.Equal(t, 1, n)
}

// A directory keeps the key mode it was created with, whatever later opens
// ask for, so that its entries never all miss.
func TestCache_KeyModeIsRecorded(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c, err := Open(&Options{Dir: dir, ContentDigest: true})
	require.NoError(t, err)
	_, err = c.Warm(ctx, testModel)
	require.NoError(t, err)
	require.NoError(t, c.Close())
	c = openCache(t, &Options{Dir: dir})
	require.True(t, c.digest)
	tn, err := c.Tensor(ctx, testModel, "Const_61")
	require.NoError(t, err)
	require.Equal(t, L2, tn.ServedBy)

	dir = t.TempDir()
	c, err = Open(&Options{Dir: dir})
	require.NoError(t, err)
	require.NoError(t, c.Close())
	c = openCache(t, &Options{Dir: dir, ContentDigest: true})
	require.False(t, c.digest)
}
