package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// pipedValueBytes is the size of the value the memory tests pipe in.
const pipedValueBytes = 256 << 20

// pipedValue writes n bytes, the same for a seed, and returns their
// digest: a random 4 KiB block repeated, which L2 stores in a few MiB, so
// that the child's RSS is not the stored bytes (the store maps its value
// log: RSS counts the pages written through that mapping).
func pipedValue(w io.Writer, n int, seed uint64) [32]byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	block := make([]byte, 4<<10)
	for i := range block {
		block[i] = byte(rng.Uint32())
	}
	buf := bytes.Repeat(block, 256) // 1 MiB
	h := sha256.New()
	mw := io.MultiWriter(w, h)
	for n > 0 {
		k := min(n, len(buf))
		if _, err := mw.Write(buf[:k]); err != nil {
			break
		}
		n -= k
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// putPiped runs warm value put with a value of pipedValueBytes on a pipe
// and returns the child's peak RSS in bytes and the value's digest.
//
// A child's ru_maxrss counts the RSS of the process it was forked from
// until its exec (os/exec's clone shares the parent's memory, and exec
// keeps its high-water mark): this test process may have grown large. So
// warm is started by a fresh process (this test binary again, see
// maxRSSWrapper), small, that reports warm's ru_maxrss and its own.
func putPiped(t *testing.T, args ...string) (maxRSS int64, sum [32]byte) {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	report := filepath.Join(t.TempDir(), "rusage")
	cmd := exec.Command(self, append([]string{warmBin}, args...)...)
	cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH"), "MODELCACHE_MAXRSS_OUT=" + report}
	pw, err := cmd.StdinPipe()
	require.NoError(t, err)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	sum = pipedValue(pw, pipedValueBytes, 7)
	pw.Close()
	require.NoError(t, cmd.Wait(), stderr.String())
	b, err := os.ReadFile(report)
	require.NoError(t, err)
	var child, wrapper int64
	_, err = fmt.Sscan(string(b), &child, &wrapper)
	require.NoError(t, err, string(b))
	// warm's figure is its own only if it is above what it inherited.
	require.Less(t, wrapper, int64(pipedValueBytes/5), "the measuring parent is small")
	return child, sum
}

// maxRSSWrapper runs os.Args[1:] with this process's stdin, stdout and
// stderr, writes the child's ru_maxrss and this process's own peak RSS
// before it started the child (bytes) to the file out, and returns the
// child's exit status.
func maxRSSWrapper(out string) int {
	cmd := exec.Command(os.Args[1], os.Args[2:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// Its own peak since its exec (VmHWM), which warm's ru_maxrss may
	// include; not its ru_maxrss, which counts its own parent's.
	var hwm int64
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				_, _ = fmt.Sscan(v, &hwm)
			}
		}
	}
	err := cmd.Run()
	if cmd.ProcessState == nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := os.WriteFile(out, fmt.Appendf(nil, "%d %d\n", maxRSS(cmd.ProcessState), hwm<<10), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return cmd.ProcessState.ExitCode()
}

// getDigest runs warm value get and returns the digest of what it wrote.
func getDigest(t *testing.T, args ...string) [32]byte {
	t.Helper()
	cmd := exec.Command(warmBin, args...)
	cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH")}
	h := sha256.New()
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = h, &stderr
	require.NoError(t, cmd.Run(), stderr.String())
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// A value piped into warm value put is streamed, in process and to a
// daemon: the child's peak RSS stays well below the value's size (it was
// about 4.5 times the value, read whole).
func TestValuePut_PipeMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("pipes 512 MiB")
	}
	if !measuresRSS {
		t.Skip("a child's peak RSS is read from ru_maxrss (Unix)")
	}
	dir := t.TempDir()
	rss, want := putPiped(t, "--dir", dir, "value", "put", "big", "piped")
	t.Logf("in process: peak RSS %d MiB for a %d MiB value", rss>>20, pipedValueBytes>>20)
	require.Less(t, rss, int64(pipedValueBytes/4), "peak RSS of warm value put")
	require.Equal(t, want, getDigest(t, "--dir", dir, "value", "get", "big", "piped"))
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range ents {
		require.NotContains(t, e.Name(), "value-put", "the spool file is gone")
	}

	socket := filepath.Join(t.TempDir(), "mc.sock")
	startDaemon(t, "", nil, t.TempDir(), socket)
	rss, want = putPiped(t, "--server", socket, "value", "put", "big", "piped")
	t.Logf("to a daemon: peak RSS %d MiB", rss>>20)
	require.Less(t, rss, int64(pipedValueBytes/4), "peak RSS of warm value put --server")
	require.Equal(t, want, getDigest(t, "--server", socket, "value", "get", "big", "piped"))
}
