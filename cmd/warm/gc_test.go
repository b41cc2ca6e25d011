package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func statsOf(t *testing.T, dir string) map[string]float64 {
	t.Helper()
	r := warm(t, "stats", "--dir", dir, "--json")
	require.Equal(t, 0, r.code, "%s", r.stderr)
	var s map[string]any
	require.NoError(t, json.Unmarshal(r.stdout, &s))
	out := map[string]float64{}
	for k, v := range s {
		if f, ok := v.(float64); ok {
			out[k] = f
		}
	}
	return out
}

func TestGC_DropsDeletedFilesAndShrinksToBudget(t *testing.T) {
	dir := t.TempDir()
	copyPath := filepath.Join(t.TempDir(), "copy.safetensors")
	copyModel(t, copyPath)
	require.Equal(t, 0, warm(t, "--dir", dir, testModel, copyPath).code)
	require.Equal(t, 124.0, statsOf(t, dir)["entries"])

	require.NoError(t, os.Remove(copyPath))
	r := warm(t, "gc", "--dir", dir)
	require.Equal(t, 0, r.code, "%s", r.stderr)
	require.Contains(t, string(r.stdout), "entries 124 -> 62")

	r = warm(t, "gc", "--dir", dir, "--disk", "1MiB")
	require.Equal(t, 0, r.code, "%s", r.stderr)
	s := statsOf(t, dir)
	require.LessOrEqual(t, s["stored_bytes"], 0.85*(1<<20))
	require.Positive(t, s["disk_bytes"])
}

func TestEvict(t *testing.T) {
	dir := t.TempDir()
	require.Equal(t, 0, warm(t, "--dir", dir, testModel).code)
	r := warm(t, "evict", "--dir", dir, testModel)
	require.Equal(t, 0, r.code, "%s", r.stderr)
	require.Contains(t, string(r.stdout), "62 entries removed")
	require.Zero(t, statsOf(t, dir)["entries"])
}

func TestEncryptionKeyFile(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(t.TempDir(), "key")
	require.NoError(t, os.WriteFile(key, []byte("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n"), 0o600))
	r := warm(t, "--dir", dir, "--encryption-key-file", key, testModel)
	require.Equal(t, 0, r.code, "%s", r.stderr)
	r = warm(t, "get", "--dir", dir, "--encryption-key-file", key, "-v", testModel, "Const_1")
	require.Equal(t, 0, r.code, "%s", r.stderr)
	require.Equal(t, "served-by: l2\n", string(r.stderr))
	r = warm(t, "stats", "--dir", dir)
	require.Equal(t, 1, r.code, "opening without the key fails")
	require.Contains(t, string(r.stderr), dir)

	bad := filepath.Join(t.TempDir(), "bad")
	require.NoError(t, os.WriteFile(bad, []byte("short"), 0o600))
	r = warm(t, "stats", "--dir", t.TempDir(), "--encryption-key-file", bad)
	require.Equal(t, 1, r.code)
	require.Contains(t, string(r.stderr), "want 16, 24 or 32 bytes")
}
