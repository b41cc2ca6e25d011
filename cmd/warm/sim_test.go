package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSim(t *testing.T) {
	dir := t.TempDir()
	loop := filepath.Join(dir, "loop.trace")
	var b strings.Builder
	for range 50 {
		for k := range 100 {
			b.WriteString(strings.Repeat("k", 1+k%3) + string(rune('a'+k%26)) + "\n")
		}
	}
	require.NoError(t, os.WriteFile(loop, []byte(b.String()), 0o644))
	r := warm(t, "sim", "--json", "--policy", "s3fifo,lru", "--size", "10,1000", loop)
	require.Equal(t, 0, r.code, "%s", r.stderr)
	dec := json.NewDecoder(bytes.NewReader(r.stdout))
	var got []map[string]any
	for dec.More() {
		var m map[string]any
		require.NoError(t, dec.Decode(&m))
		got = append(got, m)
	}
	require.Len(t, got, 4)
	for _, m := range got {
		for _, k := range []string{"trace", "policy", "size", "hits", "requests", "hit_ratio"} {
			require.Contains(t, m, k)
		}
		require.Equal(t, 5000.0, m["requests"])
	}

	serving := filepath.Join(dir, "serving.trace")
	r = warm(t, "sim", "--gen", "serving", "--gen-requests", "50000", "--out", serving)
	require.Equal(t, 0, r.code, "%s", r.stderr)
	r = warm(t, "sim", "--policy", "s3fifo,lru", serving)
	require.Equal(t, 0, r.code, "%s", r.stderr)
	require.Contains(t, string(r.stdout), "hit ratio by cache size (bytes)")

	for _, args := range [][]string{{"sim"}, {"sim", "--policy", "arc", loop}, {"sim", "--size", "x", loop}, {"sim", "--gen", "other", "--out", serving}} {
		require.Equal(t, 2, warm(t, args...).code, "%v", args)
	}
}
