package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/internal/pagecache"
)

// warm bench measures every mode, with the page cache really evicted for the
// cold ones, and writes its chart and Markdown section.
func TestBench(t *testing.T) {
	if !pagecache.Supported {
		r := warm(t, "bench", "--runs", "1", testModel)
		require.Equal(t, 1, r.code)
		require.Contains(t, string(r.stderr), "needs Linux")
		t.Skip("warm bench needs page-cache eviction (Linux); checked that it says so")
	}
	out := t.TempDir()
	md := filepath.Join(out, "B.md")
	require.NoError(t, os.WriteFile(md, []byte("# Title\n\n<!-- warm-bench:x:start -->\nOLD-CONTENT\n<!-- warm-bench:x:end -->\n\ntail\n"), 0o644))
	chart := filepath.Join(out, "c.svg")
	r := warm(t, "bench", "--json", "--runs", "1", "--markdown", md, "--section", "x", "--chart", chart, testModel)
	require.Equal(t, 0, r.code, "%s", r.stderr)
	var rep benchReport
	require.NoError(t, json.Unmarshal(r.stdout, &rep))
	require.Equal(t, uint64(2516390), rep.Bytes)
	require.Equal(t, 62, rep.Tensors)
	require.InDelta(t, 0.68, rep.StoredRatio, 0.02)
	for _, m := range benchModes {
		require.Positive(t, rep.rate(m), m)
	}
	for _, m := range perTensorModes {
		require.Positive(t, rep.Latency[m].P99, m)
		require.LessOrEqual(t, rep.Latency[m].P50, rep.Latency[m].P99, m)
	}
	require.Positive(t, rep.WarmGBps)
	if rep.ColdResidency > 0.05 {
		t.Logf("page cache kept %.0f%% after eviction on this file system", rep.ColdResidency*100)
	}
	// Ratios within one run, not absolute times: RAM serves faster than
	// any disk read.
	require.Greater(t, rep.L1GBps, rep.ColdRawGBps)

	b, err := os.ReadFile(md)
	require.NoError(t, err)
	text := string(b)
	require.NotContains(t, text, "OLD-CONTENT")
	require.True(t, strings.HasPrefix(text, "# Title"))
	require.True(t, strings.HasSuffix(text, "tail\n"))
	require.Contains(t, text, "| posenet.bf16.safetensors | 2516390 | 62 |")
	svg, err := os.ReadFile(chart)
	require.NoError(t, err)
	require.Contains(t, string(svg), "<svg")
	require.Contains(t, string(svg), "l2_cold")

	r = warm(t, "bench", "--runs", "0", testModel)
	require.Equal(t, 2, r.code)
	r = warm(t, "--source-rate", "fast", "bench", testModel)
	require.Equal(t, 2, r.code)
}
