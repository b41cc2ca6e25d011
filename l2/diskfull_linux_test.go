package l2

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/internal/testfs"
	"github.com/modelcache/modelcache/internal/third_party/badger"
)

// On a file system that fills up, Puts start failing with ErrNoSpace before
// Badger can hit ENOSPC inside an mmap (a SIGBUS); everything written before
// stays readable, and the directory closes and reopens cleanly.
func TestStore_DiskFull(t *testing.T) {
	dir := testfs.Tmpfs(t, 64<<20)
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

// Opening on a nearly full file system is an ErrNoSpace error naming the
// directory. Upstream Badger mapped a sparse memtable file and faulted
// (SIGBUS) writing its header; a crash here fails the whole test binary.
func TestStore_OpenOnFullDisk(t *testing.T) {
	for _, left := range []int64{0, 4 << 10, 12 << 10, 1 << 20} {
		t.Run(fmt.Sprint(left), func(t *testing.T) {
			root := testfs.Tmpfs(t, 24<<20)
			testfs.FillTo(t, root, left)
			dir := filepath.Join(root, "cache")
			s, err := Open(&Options{Dir: dir, Logger: discardLogger()})
			if err == nil {
				s.Close()
			}
			require.Error(t, err)
			require.ErrorIs(t, err, errs.ErrNoSpace)
			require.Contains(t, err.Error(), dir)
		})
	}
}

// Without the free-space check, Badger itself meets the full disk when it
// opens an existing directory: an error, never a fault, because every file
// it writes through mmap is allocated before it is mapped.
func TestStore_BadgerOpenOnFullDiskIsAnError(t *testing.T) {
	root := testfs.Tmpfs(t, 24<<20)
	dir := filepath.Join(root, "cache")
	opts := badger.DefaultOptions(dir).WithLogger(nil).WithMemTableSize(4 << 20).
		WithValueLogFileSize(4 << 20).WithValueThreshold(64 << 10)
	db, err := badger.Open(opts)
	require.NoError(t, err)
	require.NoError(t, db.Close())
	for _, left := range []int64{0, 4 << 10, 12 << 10} {
		fill := testfs.FillTo(t, root, left)
		db, err = badger.Open(opts)
		if err == nil {
			db.Close()
		}
		require.ErrorContains(t, err, "no space left on device", "%d bytes free", left)
		require.NoError(t, os.Remove(fill))
	}
}

// Another process fills the disk while the store writes: Puts fail with an
// error (ErrNoSpace or Badger's ENOSPC), never a fault; what was written
// reads back, and the store closes and reopens once room is made. Upstream
// Badger faulted in (*valueLog).write in 2 of 3 rounds of this.
func TestStore_DiskFilledByAnotherProcess(t *testing.T) {
	for round := range 3 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			root := testfs.Tmpfs(t, 96<<20)
			dir := filepath.Join(root, "cache")
			o := &Options{Dir: dir, ReserveBytes: 1 << 20, Logger: discardLogger()}
			s, err := Open(o)
			require.NoError(t, err)
			fill := filepath.Join(root, "fill")
			dd := exec.Command("dd", "if=/dev/zero", "of="+fill, "bs=64k", "status=none")
			require.NoError(t, dd.Start())
			ddDone := make(chan struct{})
			go func() { _ = dd.Wait(); close(ddDone) }()
			t.Cleanup(func() { _ = dd.Process.Kill(); <-ddDone })

			entry := func(i int) []byte {
				b := make([]byte, 256<<10)
				r := rand.New(rand.NewPCG(uint64(i), uint64(round)))
				for j := range b {
					b[j] = byte(r.Uint32())
				}
				return b
			}
			var written []int
			failures := 0
			for i := 0; i < 400 && failures < 20; i++ {
				if err := s.Put(fmt.Sprint(i), "U8", nil, entry(i)); err != nil {
					failures++
					continue
				}
				written = append(written, i)
			}
			<-ddDone // dd stops by itself when the disk is full
			require.Positive(t, failures, "the disk never filled up")
			check := func(s *Store) {
				for _, i := range written {
					v, err := s.Get(fmt.Sprint(i))
					require.NoError(t, err, "entry %d", i)
					require.Equal(t, entry(i), v.Data, "entry %d", i)
				}
			}
			check(s)
			// Close may fail to flush the memtable to the full disk: it says so
			// and keeps the memtable's log, which the next Open replays.
			if err := s.Close(); err != nil {
				require.ErrorContains(t, err, "replayed at the next open")
			}
			require.NoError(t, os.Remove(fill))
			s, err = Open(o)
			require.NoError(t, err)
			check(s)
			require.NoError(t, s.Close())
			t.Logf("%d entries written, %d puts failed", len(written), failures)
		})
	}
}
