package main

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
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
func putPiped(t *testing.T, args ...string) (maxRSS int64, sum [32]byte) {
	t.Helper()
	cmd := exec.Command(warmBin, args...)
	cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH")}
	pw, err := cmd.StdinPipe()
	require.NoError(t, err)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	sum = pipedValue(pw, pipedValueBytes, 7)
	pw.Close()
	require.NoError(t, cmd.Wait(), stderr.String())
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	require.True(t, ok)
	return ru.Maxrss << 10, sum // Linux: KiB
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
