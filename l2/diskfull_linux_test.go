package l2

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
)

// mountTmpfs mounts a tmpfs of size bytes on a new directory, for a real
// file system that fills up. It needs root (CI runs as root); elsewhere the
// test is skipped.
func mountTmpfs(t *testing.T, size int64) string {
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount a tmpfs here (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	return dir
}

// On a file system that fills up, Puts start failing with ErrNoSpace before
// Badger can hit ENOSPC inside an mmap (a SIGBUS); everything written before
// stays readable, and the directory closes and reopens cleanly.
func TestStore_DiskFull(t *testing.T) {
	dir := mountTmpfs(t, 40<<20)
	o := &Options{Dir: dir, ReserveBytes: 10 << 20}
	s, err := Open(o)
	require.NoError(t, err)
	entry := func(i int) []byte {
		b := make([]byte, 1<<20)
		r := rand.New(rand.NewPCG(uint64(i), 1))
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		return b
	}
	written := 0
	for i := 0; ; i++ {
		require.Less(t, i, 100, "the file system never filled up")
		err := s.Put(fmt.Sprint(i), "U8", nil, entry(i))
		if err != nil {
			require.True(t, errors.Is(err, errs.ErrNoSpace), "want ErrNoSpace, got %v", err)
			break
		}
		written++
	}
	require.Positive(t, written)
	require.Equal(t, uint64(1), s.Stats().PutErrors)
	check := func(s *Store) {
		for i := range written {
			v, err := s.Get(fmt.Sprint(i))
			require.NoError(t, err, "entry %d", i)
			require.Equal(t, entry(i), v.Data, "entry %d", i)
		}
	}
	check(s)
	require.NoError(t, s.Close())
	s, err = Open(o)
	require.NoError(t, err, "reopen on a full file system")
	check(s)
	require.NoError(t, s.Close())
	t.Logf("%d MiB written before the reserve stopped writes", written)
}
