package tier

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

func TestCollector(t *testing.T) {
	c := openCache(t, &Options{Dir: t.TempDir(), Logger: nilLogger()})
	ctx := context.Background()
	for range 3 {
		_, err := c.Tensor(ctx, testModel, "Const_59")
		require.NoError(t, err)
	}
	for range 4 {
		_, err := c.Get(ctx, "outputs", "k", func(context.Context) ([]byte, error) { return []byte("v"), nil })
		require.NoError(t, err)
	}
	col := NewCollector(c)
	problems, err := testutil.CollectAndLint(col)
	require.NoError(t, err)
	require.Empty(t, problems)

	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(col))
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP modelcache_requests_total Requests served, by the tier that served them.
# TYPE modelcache_requests_total counter
modelcache_requests_total{kind="tensor",tier="l1"} 2
modelcache_requests_total{kind="tensor",tier="l2"} 0
modelcache_requests_total{kind="tensor",tier="l3"} 0
modelcache_requests_total{kind="tensor",tier="shared"} 0
modelcache_requests_total{kind="tensor",tier="source"} 1
modelcache_requests_total{kind="value",tier="fill"} 1
modelcache_requests_total{kind="value",tier="l1"} 3
modelcache_requests_total{kind="value",tier="l2"} 0
modelcache_requests_total{kind="value",tier="l3"} 0
modelcache_requests_total{kind="value",tier="shared"} 0
# HELP modelcache_namespace_requests_total Value requests by namespace and by the tier that served them.
# TYPE modelcache_namespace_requests_total counter
modelcache_namespace_requests_total{namespace="outputs",tier="fill"} 1
modelcache_namespace_requests_total{namespace="outputs",tier="l1"} 3
modelcache_namespace_requests_total{namespace="outputs",tier="l2"} 0
modelcache_namespace_requests_total{namespace="outputs",tier="l3"} 0
modelcache_namespace_requests_total{namespace="outputs",tier="shared"} 0
# HELP modelcache_hit_ratio Requests served by a cache tier over requests served.
# TYPE modelcache_hit_ratio gauge
modelcache_hit_ratio{kind="tensor"} 0.6666666666666666
modelcache_hit_ratio{kind="value"} 0.75
`), "modelcache_requests_total", "modelcache_namespace_requests_total", "modelcache_hit_ratio"))
	// The source read and the fill were timed: one observation each.
	n, err := testutil.GatherAndCount(reg, "modelcache_miss_duration_seconds", "modelcache_request_duration_seconds", "modelcache_bytes")
	require.NoError(t, err)
	require.Equal(t, 2+10+3, n)
}
