package main

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

const formatsDir = "../../loader/testdata/formats"

// warm walks a directory of every format, then warm get serves each kind of
// tensor name from L2 with the bytes the fixtures' independent writer
// computed (loader/testdata/formats/gen.py); a plain file named on the
// command line is one entry, "-".
func TestWarm_EveryFormat(t *testing.T) {
	models := t.TempDir()
	require.NoError(t, os.CopyFS(models, os.DirFS(formatsDir)))
	dir := t.TempDir()
	r := warm(t, "--dir", dir, "--json", models)
	require.Equal(t, 0, r.code, "%s", r.stderr)
	var sum warmSummary
	require.NoError(t, json.Unmarshal(r.stdout, &sum))
	require.Len(t, sum.Files, 2+11+2+1, "gguf, npy, npz, one sharded checkpoint")
	require.Zero(t, sum.Failed)
	require.Equal(t, 8+2+11+2*5+3, sum.Entries)

	var want map[string]map[string]struct{ Hex string }
	b, err := os.ReadFile(filepath.Join(formatsDir, "expected.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &want))
	for _, c := range []struct{ file, tensor string }{
		{"v3.gguf", "blk.0.attn_k.weight"}, {"v3.gguf", "token_embd.weight"}, {"deflated.npz", "f8_fortran"},
		{"u2_be_fortran.npy", "u2_be_fortran"}, {"sharded", "b"},
	} {
		r := warm(t, "get", "--dir", dir, "-v", filepath.Join(models, c.file), c.tensor)
		require.Equal(t, 0, r.code, "%s %s: %s", c.file, c.tensor, r.stderr)
		require.Equal(t, "served-by: l2\n", string(r.stderr), c.file)
		require.Equal(t, want[c.file][c.tensor].Hex, hex.EncodeToString(r.stdout), c.file)
	}

	plain := filepath.Join(models, "tokenizer.json")
	require.NoError(t, os.WriteFile(plain, []byte(`{"model": {"type": "BPE"}}`), 0o644))
	r = warm(t, "--dir", dir, plain)
	require.Equal(t, 0, r.code, "%s", r.stderr)
	r = warm(t, "get", "--dir", dir, "-v", plain, "-")
	require.Equal(t, 0, r.code, "%s", r.stderr)
	require.Equal(t, "served-by: l2\n", string(r.stderr))
	require.Equal(t, `{"model": {"type": "BPE"}}`, string(r.stdout))

	// A hostile GGUF fails alone, named, and leaves the cache as it was.
	bad := filepath.Join(models, "bad.gguf")
	require.NoError(t, os.WriteFile(bad, []byte("GGUF\x03\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\x7f\x00\x00\x00\x00\x00\x00\x00\x00"), 0o644))
	r = warm(t, "--dir", dir, bad, filepath.Join(models, "v2.gguf"))
	require.Equal(t, 1, r.code)
	require.Contains(t, string(r.stderr), bad)
	require.Contains(t, string(r.stderr), "tensors cannot fit")
	r = warm(t, "get", "--dir", dir, "-v", filepath.Join(models, "v3.gguf"), "pos")
	require.Equal(t, 0, r.code)
	require.Equal(t, "served-by: l2\n", string(r.stderr))
}

// --content-digest: a copy of a warmed model at another path is served
// from the cache.
func TestWarm_ContentDigest(t *testing.T) {
	models := t.TempDir()
	a, b := filepath.Join(models, "a.safetensors"), filepath.Join(models, "b.safetensors")
	copyModel(t, a)
	copyModel(t, b)
	dir := t.TempDir()
	r := warm(t, "--dir", dir, "--content-digest", a)
	require.Equal(t, 0, r.code, "%s", r.stderr)
	r = warm(t, "get", "--dir", dir, "--content-digest", "-v", b, "Const_61")
	require.Equal(t, 0, r.code, "%s", r.stderr)
	require.Equal(t, "served-by: l2\n", string(r.stderr))
	require.Equal(t, tensorsOf(t, b)["Const_61"], r.stdout)
	r = warm(t, "get", "--dir", dir, "-v", b, "Const_61")
	require.Equal(t, 0, r.code, "%s", r.stderr)
	require.Contains(t, string(r.stderr), "served-by: l2", "the directory keeps keying by content")
	require.Contains(t, string(r.stderr), "keys by content")
}
