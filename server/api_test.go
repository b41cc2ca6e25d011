package server

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/api"
	"github.com/modelcache/modelcache/l1"
	"github.com/modelcache/modelcache/l2"
	"github.com/modelcache/modelcache/tier"
)

// The api types that mirror a struct of tier, l1 or l2 field for field
// convert to it: one that drifts fails to compile here.
var (
	_ = api.PutOptions(tier.PutOptions{})
	_ = api.WarmProgress(tier.WarmProgress{})
	_ = api.WarmResult(tier.WarmResult{})
	_ = api.L1Stats(l1.Stats{})
	_ = api.L2Stats(l2.Stats{})
	_ = api.L3Stats(tier.L3Stats{})
	_ = api.Counters(tier.Counters{})
	_ = api.Latency(tier.Latency{})
)

// fill sets every exported field reachable from v to a value that is not
// zero (slices and maps get two elements and one), so that JSON carries
// each of them.
func fill(v reflect.Value, n *int) {
	*n++
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), n)
			}
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), n)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range 2 {
			fill(v.Index(i), n)
		}
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k, n)
		fill(e, n)
		v.SetMapIndex(k, e)
	case reflect.String:
		v.SetString("s" + string(rune('a'+*n%26)))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(*n))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(*n))
	case reflect.Float32, reflect.Float64:
		v.SetFloat(float64(*n) + 0.5)
	default:
		panic("fill: no value for " + v.Type().String())
	}
}

// roundTrip is the JSON of from, read into a new *T and written again.
func roundTrip[T any](t *testing.T, from any) string {
	t.Helper()
	b, err := json.Marshal(from)
	require.NoError(t, err)
	var to T
	require.NoError(t, json.Unmarshal(b, &to))
	out, err := json.Marshal(&to)
	require.NoError(t, err)
	return string(out)
}

// GET /v1/stats answers the JSON of tier.Stats; client reads it as
// api.Stats. Every field of either reaches the other: a field tier gains
// or api lacks fails here.
func TestStats_APIReadsEveryField(t *testing.T) {
	var n int
	var ts tier.Stats
	fill(reflect.ValueOf(&ts).Elem(), &n)
	want, err := json.Marshal(ts)
	require.NoError(t, err)
	require.JSONEq(t, string(want), roundTrip[api.Stats](t, ts), "a field of tier.Stats that api.Stats does not read")

	var as api.Stats
	fill(reflect.ValueOf(&as).Elem(), &n)
	want, err = json.Marshal(as)
	require.NoError(t, err)
	require.JSONEq(t, string(want), roundTrip[tier.Stats](t, as), "a field of api.Stats that tier.Stats does not have")

	require.Equal(t, tier.BucketBounds, api.BucketBounds)
	l := tier.Latency{Count: 10, Sum: 5000, Buckets: make([]uint64, len(tier.BucketBounds))}
	l.Buckets[3], l.Buckets[7] = 4, 6
	for _, q := range []float64{0.1, 0.5, 0.9, 1} {
		require.Equal(t, l.Quantile(q), api.Latency(l).Quantile(q), "q %v", q)
	}
	require.Equal(t, l.Mean(), api.Latency(l).Mean())
}
