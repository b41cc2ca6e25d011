package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/dustin/go-humanize"
	"github.com/stretchr/testify/require"
)

// A directory of several models, asked for as one, is named for what it
// is, with the models to choose from.
func TestGet_DirectoryOfSeveralModels(t *testing.T) {
	models := t.TempDir()
	b, err := os.ReadFile(testModel)
	require.NoError(t, err)
	for _, n := range []string{"a.safetensors", "b.safetensors"} {
		require.NoError(t, os.WriteFile(filepath.Join(models, n), b, 0o644))
	}
	require.NoError(t, os.WriteFile(filepath.Join(models, "README.md"), []byte("x"), 0o644))
	r := warm(t, "--dir", t.TempDir(), "get", models, "Const_61")
	require.Equal(t, 1, r.code, string(r.stderr))
	require.Contains(t, string(r.stderr), "a directory of 2 models")
	require.Contains(t, string(r.stderr), "a.safetensors, b.safetensors")
	require.NotContains(t, string(r.stderr), "no such file")
	require.NotContains(t, string(r.stderr), "README")
}

// warm tensors lists a file's tensors without caching anything; warm ls
// FILE points to it.
func TestTensors_ListsAFileWithoutCachingIt(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	r := warm(t, "--dir", dir, "tensors", "--json", testModel)
	require.Equal(t, 0, r.code, string(r.stderr))
	var tf tensorsFile
	require.NoError(t, json.Unmarshal(r.stdout, &tf))
	require.Equal(t, "safetensors", tf.Format)
	require.Len(t, tf.Tensors, 62)
	require.Equal(t, uint64(2516390), tf.Bytes)
	want := tensorsOf(t, testModel)
	var sum uint64
	for _, tn := range tf.Tensors {
		require.Equal(t, uint64(len(want[tn.Name])), tn.Bytes, tn.Name)
		require.Equal(t, "BF16", tn.DType)
		elems := uint64(1)
		for _, d := range tn.Shape {
			elems *= d
		}
		require.Equal(t, 2*elems, tn.Bytes, tn.Name)
		sum += tn.Bytes
	}
	require.Equal(t, tf.Bytes, sum)
	_, err := os.Stat(dir)
	require.ErrorIs(t, err, os.ErrNotExist, "the cache directory was not even created")

	r = warm(t, "--dir", dir, "tensors", testModel)
	require.Equal(t, 0, r.code, string(r.stderr))
	require.Regexp(t, `Const_61 +BF16 +\[1 1 384 32\] +24576`, string(r.stdout))
	r = warm(t, "--dir", dir, "tensors", testModel, "absent.safetensors")
	require.Equal(t, 1, r.code)
	require.Contains(t, string(r.stderr), "absent.safetensors")

	r = warm(t, "--dir", dir, "ls", testModel)
	require.Equal(t, 2, r.code)
	require.Contains(t, string(r.stderr), "warm tensors "+testModel)
}

// --dtype is one of the known element types, and the value a whole number
// of them, in process and through the daemon.
func TestValuePut_DTypeAndLengthChecked(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(t.TempDir(), "mc.sock")
	startDaemon(t, "", nil, t.TempDir(), socket)
	for _, where := range [][]string{{"--dir", dir}, {"--server", socket}} {
		put := func(in string, args ...string) result {
			return runWarm(t, "", nil, strings.NewReader(in), append(append(where, "value", "put"), args...)...)
		}
		r := put("abcd", "--dtype", "FLOAT32", "ns", "k")
		require.Equal(t, 2, r.code, "%v: %s", where, r.stderr)
		require.Contains(t, string(r.stderr), "--dtype")
		r = put("abc", "--dtype", "F32", "ns", "k")
		require.Equal(t, 1, r.code, "%v: %s", where, r.stderr)
		require.Contains(t, string(r.stderr), "3 bytes are not a whole number of F32 elements")
		r = put("abcdefgh", "--dtype", "F32", "--shape", "3", "ns", "k")
		require.Equal(t, 1, r.code, "%v: %s", where, r.stderr)
		require.Contains(t, string(r.stderr), "not 8")
		r = put("abcdefgh", "--dtype", "F32", "--shape", "2", "ns", "k")
		require.Equal(t, 0, r.code, "%v: %s", where, r.stderr)
	}
}

// duFiles is what du counts under dir less the directories' own blocks:
// the files, which is what warm counts.
func duFiles(t *testing.T, dir string) int64 {
	t.Helper()
	out, err := exec.Command("du", "-s", "-B1", dir).Output()
	require.NoError(t, err)
	total, err := strconv.ParseInt(strings.Fields(string(out))[0], 10, 64)
	require.NoError(t, err)
	return total - dirBlocks(t, dir) // a cache directory has no subdirectory
}

// The disk use warm stats and warm gc print is what du finds (it was the
// store's while open: some 35 MiB it preallocates and gives back at close).
func TestDiskUse_IsWhatDuFinds(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("du -B1 is GNU du's")
	}
	if _, err := exec.LookPath("du"); err != nil {
		t.Skip("no du")
	}
	dir := t.TempDir()
	r := warm(t, "--dir", dir, "--json", testModel)
	require.Equal(t, 0, r.code, string(r.stderr))
	var sum warmSummary
	require.NoError(t, json.Unmarshal(r.stdout, &sum))
	require.Equal(t, duFiles(t, dir), sum.DiskBytes, "warm --json")

	r = warm(t, "--dir", dir, "stats", "--json")
	require.Equal(t, 0, r.code, string(r.stderr))
	var s statsJSON
	require.NoError(t, json.Unmarshal(r.stdout, &s))
	require.Equal(t, duFiles(t, dir), s.DiskBytes, "warm stats --json")

	r = warm(t, "--dir", dir, "gc")
	require.Equal(t, 0, r.code, string(r.stderr))
	require.Contains(t, string(r.stdout), "-> "+humanize.IBytes(uint64(duFiles(t, dir)))+"\n")
}

// A typo of a command that is no file is a usage error suggesting the
// command; a file of that name is warmed.
func TestTypoOfACommandSuggestsIt(t *testing.T) {
	r := warm(t, "--dir", t.TempDir(), "lod", testModel)
	require.Equal(t, 2, r.code, string(r.stderr))
	require.Contains(t, string(r.stderr), `unknown command "lod"; did you mean "load"?`)
	require.Empty(t, r.stdout)
	r = warm(t, "--dir", t.TempDir(), "valeu", "ls")
	require.Equal(t, 2, r.code)
	require.Contains(t, string(r.stderr), `did you mean "value"?`)

	cwd := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(cwd, "lod"), []byte("a plain file"), 0o644))
	r = warmIn(t, cwd, "--dir", t.TempDir(), "lod")
	require.Equal(t, 0, r.code, string(r.stderr))
	require.Contains(t, string(r.stdout), "lod: 1 tensors")
}
