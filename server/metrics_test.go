package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/server"
	"github.com/modelcache/modelcache/tier"
)

func serve(t *testing.T, h http.Handler, method, target string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(method, target, nil))
	return w
}

// One GET of a namespace that is not UTF-8 made /metrics answer 500 for
// the life of the daemon. It is a 400 now, and scrapes go on.
func TestServer_InvalidNamespaceIs400AndMetricsScrape(t *testing.T) {
	c, err := tier.Open(&tier.Options{Dir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	h := server.New(c, nil)
	t.Cleanup(h.Close)

	for _, target := range []string{"/v1/values/%FF/k", "/v1/values/a%0Ab/k", "/v1/values/%C3/k"} {
		for _, method := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
			w := serve(t, h, method, target)
			require.Equal(t, http.StatusBadRequest, w.Code, "%s %s: %s", method, target, w.Body)
			var e server.Error
			require.NoError(t, json.Unmarshal(w.Body.Bytes(), &e))
			require.Equal(t, "ErrInvalidArgument", e.Sentinel, "%s %s", method, target)
			require.Contains(t, e.Error, "namespace")
		}
	}
	w := serve(t, h, http.MethodDelete, "/v1/values/%FF")
	require.Equal(t, http.StatusBadRequest, w.Code, "drop: %s", w.Body)
	w = serve(t, h, http.MethodGet, "/metrics")
	require.Equal(t, http.StatusOK, w.Code, "%.300s", w.Body)
	require.True(t, strings.Contains(w.Body.String(), "modelcache_request_failures_total"))
}

// 20,000 GETs of absent values in 20,000 namespaces: /metrics and
// /v1/stats stay the size they were with one (upstream: 42 MB and 213 MB
// after 100,000).
func TestServer_LookupsInManyNamespacesStayBounded(t *testing.T) {
	c, err := tier.Open(&tier.Options{Dir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	h := server.New(c, nil)
	t.Cleanup(h.Close)

	require.Equal(t, http.StatusNotFound, serve(t, h, http.MethodGet, "/v1/values/ns-first/k").Code)
	metrics0 := serve(t, h, http.MethodGet, "/metrics").Body.Len()
	stats0 := serve(t, h, http.MethodGet, "/v1/stats").Body.Len()
	const n = 20000
	for i := range n {
		w := serve(t, h, http.MethodGet, fmt.Sprintf("/v1/values/ns-%d/k", i))
		require.Equal(t, http.StatusNotFound, w.Code)
	}
	w := serve(t, h, http.MethodGet, "/metrics")
	require.Equal(t, http.StatusOK, w.Code)
	require.LessOrEqual(t, w.Body.Len(), metrics0+1024, "/metrics grew with the namespaces")
	w = serve(t, h, http.MethodGet, "/v1/stats")
	require.Equal(t, http.StatusOK, w.Code)
	require.LessOrEqual(t, w.Body.Len(), stats0+1024, "/v1/stats grew with the namespaces")
	var s tier.Stats
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &s))
	require.Empty(t, s.Namespaces)
	require.Equal(t, uint64(n+1), s.OtherNamespaces.Absent)
}
