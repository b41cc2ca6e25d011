package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/internal/testredis"
)

// Two machines (two cache directories) share one Redis: what one read,
// the other gets from L3; warm stats says so.
func TestFleet_GetServedByL3(t *testing.T) {
	srv := testredis.Start(t)
	model := "../../testdata/models/posenet.bf16.safetensors"
	keyFile := filepath.Join(t.TempDir(), "fleet.key")
	require.NoError(t, os.WriteFile(keyFile, bytes.Repeat([]byte("ab"), 16), 0o600))
	a := []string{"--dir", t.TempDir(), "--redis", srv.Addr, "--fleet-key-file", keyFile}
	b := []string{"--dir", t.TempDir(), "--redis", srv.Addr, "--fleet-key-file", keyFile}

	r := warm(t, append(a, "get", "-v", model, "Const_61")...)
	require.Equal(t, 0, r.code, string(r.stderr))
	require.Equal(t, "served-by: source\n", string(r.stderr))
	first := r.stdout
	r = warm(t, append(b, "get", "-v", "-n", "2", model, "Const_61")...)
	require.Equal(t, 0, r.code, string(r.stderr))
	require.Equal(t, "served-by: l3\nserved-by: l1\n", string(r.stderr))
	require.Equal(t, first, r.stdout)

	r = warm(t, append(b, "stats", "--json")...)
	require.Equal(t, 0, r.code, string(r.stderr))
	var s statsJSON
	require.NoError(t, json.Unmarshal(r.stdout, &s))
	require.NotNil(t, s.L3)
	require.True(t, s.L3.Up)
	require.Equal(t, uint64(1), s.Measures.Tensors.Tiers[2].Hits, "one L3 hit")

	// Redis gone: reads go on from the file, with a clear state in stats.
	srv.Kill()
	c := []string{"--dir", t.TempDir(), "--redis", srv.Addr}
	r = warm(t, append(c, "get", "-v", model, "Const_59")...)
	require.Equal(t, 0, r.code, string(r.stderr))
	require.Contains(t, string(r.stderr), "served-by: source")
	require.Contains(t, string(r.stderr), "L3 read failed", "one warning says why")
	r = warm(t, append(c, "stats", "--json")...)
	require.Equal(t, 0, r.code, string(r.stderr))
	s = statsJSON{}
	require.NoError(t, json.Unmarshal(r.stdout, &s))
	require.False(t, s.L3.Up)
	require.Contains(t, s.L3.Error, "connection refused")
}
