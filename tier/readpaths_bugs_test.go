package tier

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/internal/testredis"
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
