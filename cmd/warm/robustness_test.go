package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/internal/testfs"
	"github.com/modelcache/modelcache/internal/testmodels"
)

// A cache directory that cannot be used does not stop get from reading the
// model: on a full disk (the pid file Badger writes failed), read-only, or
// held by another process, it warns once and reads the file. --require-l2
// makes that an error naming the directory.
func TestGet_UnusableCacheDirectoryReadsTheFile(t *testing.T) {
	want := tensorsOf(t, testModel)["Const_1"]
	full := testfs.Tmpfs(t, 8<<20)
	testfs.FillTo(t, full, 0)
	ro := testfs.Tmpfs(t, 8<<20, "ro")
	held := t.TempDir()
	holdDir(t, held)
	for name, dir := range map[string]string{
		"full": filepath.Join(full, "cache"), "read-only": filepath.Join(ro, "cache"), "held": held,
	} {
		r := warm(t, "get", "--dir", dir, "-v", "-n", "2", testModel, "Const_1")
		require.Equal(t, 0, r.code, "%s: %s", name, r.stderr)
		require.Equal(t, want, r.stdout, name)
		stderr := string(r.stderr)
		require.Equal(t, 1, strings.Count(stderr, "running without the cache directory"), "%s: one warning:\n%s", name, stderr)
		require.Contains(t, stderr, dir, name)
		require.Contains(t, stderr, "served-by: source\nserved-by: l1\n", name)

		r = warm(t, "get", "--dir", dir, "--require-l2", testModel, "Const_1")
		require.Equal(t, 1, r.code, "%s: %s", name, r.stderr)
		require.Contains(t, string(r.stderr), dir, name)
		require.Empty(t, r.stdout, name)
	}
}

// A FIFO named on the command line is refused at once, naming it, by warm
// and warm get (opening it for reading blocked forever, holding the lock).
func TestWarm_RefusesAFIFO(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "f")
	mkfifo(t, fifo)
	dir := t.TempDir()
	for _, args := range [][]string{{"--dir", dir, fifo}, {"get", "--dir", dir, fifo, "-"}} {
		r := warm(t, args...)
		require.Equal(t, 1, r.code, "%v: %s", args, r.stderr)
		require.Contains(t, string(r.stderr), fifo)
		require.Contains(t, string(r.stderr), "a FIFO")
	}
}

// An error line names the file and stays readable: a tensor name of 60 KB
// is cut, not echoed whole.
func TestWarm_ErrorLinesStayReadable(t *testing.T) {
	name := strings.Repeat("x", 60_000)
	r := warm(t, "get", "--dir", t.TempDir(), testModel, name)
	require.Equal(t, 1, r.code)
	require.Contains(t, string(r.stderr), "posenet.bf16.safetensors")
	require.Contains(t, string(r.stderr), "not found")
	require.Less(t, len(r.stderr), 1000, "%.300s", r.stderr)
}

// Another process fills the disk while warm writes: warm reports failed
// writes and exits 1 (or finishes), never dies of a SIGBUS (it did in 2 of
// 3 rounds, in Badger's value-log write); the directory then opens and what
// it holds reads back right.
func TestWarm_DiskFilledWhileWarming(t *testing.T) {
	model := filepath.Join(t.TempDir(), "big.safetensors")
	require.NoError(t, testmodels.WriteSyntheticBF16(model, 48<<20, 3))
	for round := range 3 {
		root := testfs.Tmpfs(t, 64<<20)
		dir := filepath.Join(root, "cache")
		fill := filepath.Join(root, "fill")
		dd := exec.Command("dd", "if=/dev/zero", "of="+fill, "bs=64k", "status=none")
		require.NoError(t, dd.Start())
		done := make(chan struct{})
		go func() { _ = dd.Wait(); close(done) }()
		r := warm(t, "--dir", dir, model)
		_ = dd.Process.Kill()
		<-done
		require.Contains(t, []int{0, 1}, r.code, "round %d: %s", round, r.stderr)
		require.NotContains(t, string(r.stderr), "fatal error", "round %d", round)
		require.NotContains(t, string(r.stderr), "SIGBUS", "round %d", round)
		require.NoError(t, os.Remove(fill))
		r = warm(t, "verify", "--dir", dir)
		require.Equal(t, 0, r.code, "round %d: verify: %s", round, r.stderr)
	}
}
