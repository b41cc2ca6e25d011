package tier

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
)

// A dtype is one of the element types, and a value a whole number of its
// elements, with or without a shape, for Put and PutReader alike.
func TestPut_DTypeAndLengthChecked(t *testing.T) {
	c, err := Open(&Options{Dir: t.TempDir()})
	require.NoError(t, err)
	defer c.Close()
	ctx := context.Background()
	for _, o := range []*PutOptions{{DType: "FLOAT32"}, {DType: "f32"}, {DType: "F32"}, {DType: "BF16"}, {DType: "Q4_K"}} {
		b := []byte("abc")
		require.ErrorIs(t, c.Put(ctx, "ns", "k", b, o), errs.ErrInvalidArgument, o.DType)
		require.ErrorIs(t, c.PutReader(ctx, "ns", "k", bytes.NewReader(b), 3, o), errs.ErrInvalidArgument, o.DType)
	}
	require.NoError(t, c.Put(ctx, "ns", "k", []byte("abcd"), &PutOptions{DType: "F32"}))
	require.NoError(t, c.Put(ctx, "ns", "k", []byte("abc"), &PutOptions{DType: "U8", Shape: []uint64{3}}))
	require.NoError(t, c.Put(ctx, "ns", "k", []byte("abc"), nil), "opaque bytes")
}
