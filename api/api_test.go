package api

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
)

func TestRoutes_EscapeEachSegment(t *testing.T) {
	require.Equal(t, "/v1/models/models/a%20b/model.safetensors", ModelPath("/models/a b/model.safetensors"))
	require.Equal(t, "/v1/models/hf:org/name", ModelPath("hf:org/name"))
	require.Equal(t, "/v1/values/out%20puts/key%2Fwith%20slashes", ValuePath("out puts", "key/with slashes"))
	require.Equal(t, "/v1/values/ns", NamespacePath("ns"))
	// An empty key is a value's route still, never the namespace's (a
	// DELETE of it must not drop the namespace).
	require.Equal(t, "/v1/values/ns/", ValuePath("ns", ""))
}

func TestPutHeader_RoundTrips(t *testing.T) {
	o := PutOptions{TTL: 90 * time.Minute, DType: "F32", Shape: []uint64{1, 384, 32}}
	h := PutHeader(&o)
	require.Equal(t, "1,384,32", h.Get(HeaderShape))
	got, err := ParsePutHeader(h)
	require.NoError(t, err)
	require.Equal(t, o, got)

	got, err = ParsePutHeader(PutHeader(nil))
	require.NoError(t, err)
	require.Zero(t, got)
}

func TestParsePutHeader_MalformedIsInvalidArgument(t *testing.T) {
	for _, kv := range [][2]string{
		{HeaderShape, "1,x"},
		{HeaderShape, "-1"},
		{HeaderTTL, "soon"},
		{HeaderTTL, "-1h"},
	} {
		h := http.Header{}
		h.Set(kv[0], kv[1])
		_, err := ParsePutHeader(h)
		require.ErrorIs(t, err, errs.ErrInvalidArgument, "%v", kv)
	}
	shape, err := ParseShape(" 2, 3")
	require.NoError(t, err)
	require.Equal(t, []uint64{2, 3}, shape)
}
