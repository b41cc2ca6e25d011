package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/internal/testmodels"
)

// A directory argument is walked for model files, files are warmed in
// parallel, and --json summarises the run.
func TestWarm_DirectoriesJobsAndJSON(t *testing.T) {
	models := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(models, "a", "b"), 0o755))
	for _, p := range []string{"one.safetensors", "a/two.safetensors", "a/b/three.SAFETENSORS"} {
		copyModel(t, filepath.Join(models, p))
	}
	require.NoError(t, os.WriteFile(filepath.Join(models, "README.md"), []byte("not a model"), 0o644))

	dir := t.TempDir()
	r := warm(t, "--dir", dir, "--jobs", "3", "--json", models)
	require.Equal(t, 0, r.code, "%s", r.stderr)
	var sum warmSummary
	require.NoError(t, json.Unmarshal(r.stdout, &sum))
	require.Len(t, sum.Files, 3)
	for _, f := range sum.Files {
		require.Equal(t, 62, f.Written, f.File)
		require.Empty(t, f.Error)
	}
	require.Equal(t, 186, sum.Entries)
	require.Zero(t, sum.Failed)
	require.Positive(t, sum.DiskBytes)

	r = warm(t, "--dir", dir, "--json", filepath.Join(models, "a"), filepath.Join(models, "missing"))
	require.Equal(t, 1, r.code)
	require.NoError(t, json.Unmarshal(r.stdout, &sum))
	require.Len(t, sum.Files, 2)
	require.Equal(t, 62, sum.Files[0].Skipped, "already cached")
	require.Equal(t, 1, sum.Failed)
	require.Contains(t, string(r.stderr), "missing")

	r = warm(t, "--dir", dir, t.TempDir())
	require.Equal(t, 1, r.code)
	require.Contains(t, string(r.stderr), "no model files")
}

// Ctrl-C stops warm cleanly with status 130, and the same command run again
// completes the job.
func TestWarm_InterruptAndResume(t *testing.T) {
	model := filepath.Join(t.TempDir(), "big.safetensors")
	require.NoError(t, testmodels.WriteSyntheticBF16(model, 256<<20, 1))
	dir := t.TempDir()
	cmd := exec.Command(warmBin, "--dir", dir, model)
	cmd.Env = []string{"HOME=" + t.TempDir()}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	time.Sleep(300 * time.Millisecond)
	require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
	err := cmd.Wait()
	if err == nil {
		t.Skip("warm finished before the interrupt; nothing to resume")
	}
	ee, ok := err.(*exec.ExitError)
	require.True(t, ok, "%v", err)
	require.Equal(t, 130, ee.ExitCode(), "%s", stderr.String())
	require.Contains(t, stderr.String(), "run the same command again to resume")

	r := warm(t, "--dir", dir, "--json", model)
	require.Equal(t, 0, r.code, "%s", r.stderr)
	var sum warmSummary
	require.NoError(t, json.Unmarshal(r.stdout, &sum))
	require.Positive(t, sum.Files[0].Skipped, "the first run's work was kept")
	require.Equal(t, sum.Files[0].Tensors, sum.Files[0].Skipped+sum.Files[0].Written)
	require.Zero(t, warm(t, "verify", "--dir", dir).code)
}

func TestLs(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(t.TempDir(), "m.safetensors")
	copyModel(t, model)
	require.Equal(t, 0, warm(t, "--dir", dir, model).code)

	r := warm(t, "ls", "--dir", dir, "--json", "-t")
	require.Equal(t, 0, r.code, "%s", r.stderr)
	var models []lsModel
	require.NoError(t, json.Unmarshal(r.stdout, &models))
	require.Len(t, models, 1)
	m := models[0]
	require.Equal(t, model, m.File)
	require.True(t, m.Current)
	require.Equal(t, 62, m.Tensors)
	require.Len(t, m.TensorList, 62)
	require.Equal(t, uint64(2516390), m.LogicalBytes)
	require.Less(t, m.StoredBytes, m.LogicalBytes)

	// Rewritten: the cached version is stale.
	later := time.Now().Add(time.Hour)
	require.NoError(t, os.Chtimes(model, later, later))
	r = warm(t, "ls", "--dir", dir)
	require.Equal(t, 0, r.code)
	require.Contains(t, string(r.stdout), "stale")
}

// Read counts add up across processes, since the directory was created.
func TestStats_ReadsSinceCreation(t *testing.T) {
	dir := t.TempDir()
	require.Equal(t, 0, warm(t, "--dir", dir, testModel).code)
	for range 2 {
		require.Equal(t, 0, warm(t, "get", "--dir", dir, "-n", "3", testModel, "Const_1").code)
	}
	r := warm(t, "stats", "--dir", dir, "--json")
	require.Equal(t, 0, r.code, "%s", r.stderr)
	var s statsJSON
	require.NoError(t, json.Unmarshal(r.stdout, &s))
	require.Equal(t, uint64(6), s.Reads.Requests)
	require.Equal(t, uint64(2), s.Reads.L2Hits)
	require.Equal(t, uint64(4), s.Reads.L1Hits)
	require.Equal(t, uint64(62), s.Reads.WarmLoads, "warm read 62 tensors from the file")
	require.Zero(t, s.Reads.SourceLoads)
}

func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		r := warm(t, "completion", shell)
		require.Equal(t, 0, r.code, "%s", r.stderr)
		require.Contains(t, string(r.stdout), "warm")
	}
}
