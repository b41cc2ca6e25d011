package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// warmEnv runs warm with extra environment variables.
func warmEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	old := warmExtraEnv
	warmExtraEnv = env
	defer func() { warmExtraEnv = old }()
	return warm(t, args...)
}

// A Hugging Face hub cache: the snapshot is symlinks into blobs/.
func hubCache(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	repo := filepath.Join(root, "models--google--posenet")
	const sha = "0123456789abcdef0123456789abcdef01234567"
	require.NoError(t, os.MkdirAll(filepath.Join(repo, "blobs"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(repo, "refs"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(repo, "snapshots", sha), 0o755))
	b, err := os.ReadFile(testModel)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(repo, "blobs", "5f1c0ffee"), b, 0o644))
	require.NoError(t, os.Symlink("../../blobs/5f1c0ffee", filepath.Join(repo, "snapshots", sha, "model.safetensors")))
	require.NoError(t, os.WriteFile(filepath.Join(repo, "refs", "main"), []byte(sha), 0o644))
	return root
}

func TestWarm_HuggingFaceAndOllamaNames(t *testing.T) {
	hub := hubCache(t)
	ol := t.TempDir()
	gguf, err := os.ReadFile("../../loader/testdata/formats/v3.gguf")
	require.NoError(t, err)
	h := strings.Repeat("0f", 32)
	require.NoError(t, os.MkdirAll(filepath.Join(ol, "blobs"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(ol, "blobs", "sha256-"+h), gguf, 0o644))
	mp := filepath.Join(ol, "manifests", "registry.ollama.ai", "library", "tiny", "latest")
	require.NoError(t, os.MkdirAll(filepath.Dir(mp), 0o755))
	require.NoError(t, os.WriteFile(mp, []byte(`{"layers":[{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:`+h+`"}]}`), 0o644))
	env := []string{"HF_HUB_CACHE=" + hub, "OLLAMA_MODELS=" + ol}
	dir := t.TempDir()

	r := warmEnv(t, env, "--dir", dir, "--json", "hf:google/posenet", "ollama:tiny")
	require.Equal(t, 0, r.code, "%s", r.stderr)
	var sum warmSummary
	require.NoError(t, json.Unmarshal(r.stdout, &sum))
	require.Len(t, sum.Files, 2)
	require.Equal(t, 62, sum.Files[0].Tensors)

	want, err := os.ReadFile(testModel)
	require.NoError(t, err)
	r = warmEnv(t, env, "get", "--dir", dir, "-v", "hf:google/posenet", "Const_61")
	require.Equal(t, 0, r.code, "%s", r.stderr)
	require.Contains(t, string(r.stderr), "served-by: l2")
	require.NotEmpty(t, r.stdout)
	require.Less(t, len(r.stdout), len(want))

	r = warmEnv(t, env, "get", "--dir", dir, "-v", "ollama:tiny", "blk.0.ffn_down.weight")
	require.Equal(t, 0, r.code, "%s", r.stderr)
	require.Contains(t, string(r.stderr), "served-by: l2")

	r = warmEnv(t, env, "load", "--dir", dir, "--json", "hf:google/posenet")
	require.Equal(t, 0, r.code, "%s", r.stderr)
	var lr loadResult
	require.NoError(t, json.Unmarshal(r.stdout, &lr))
	require.Equal(t, 62, lr.Served.L2)

	r = warmEnv(t, env, "--dir", dir, "hf:google/absent")
	require.Equal(t, 1, r.code)
	require.Contains(t, string(r.stderr), "not in the Hugging Face cache")
}

// A directory of symbolic links is warmed through them, and a loop of links
// ends.
func TestWarm_FollowsSymlinksWithoutLooping(t *testing.T) {
	hub := hubCache(t)
	snaps := filepath.Join(hub, "models--google--posenet", "snapshots")
	// A link from inside the tree back to its top.
	ents, err := os.ReadDir(snaps)
	require.NoError(t, err)
	require.NoError(t, os.Symlink("../..", filepath.Join(snaps, ents[0].Name(), "loop")))
	dir := t.TempDir()
	r := warm(t, "--dir", dir, "--json", snaps)
	require.Equal(t, 0, r.code, "%s", r.stderr)
	var sum warmSummary
	require.NoError(t, json.Unmarshal(r.stdout, &sum))
	require.Len(t, sum.Files, 1, "the snapshot's model once, through its link")
	require.Equal(t, 62, sum.Files[0].Written)
}
