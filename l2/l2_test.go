package l2

import (
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/modelcache/modelcache/internal/third_party/badger"
	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
)

// openStore opens a store in dir (a new temp dir if empty) and, at cleanup,
// checks that the index totals still match what is on disk.
func openStore(t *testing.T, dir string, mutate ...func(*Options)) *Store {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	o := &Options{Dir: dir, ChunkSize: 4096}
	for _, m := range mutate {
		m(o)
	}
	s, err := Open(o)
	require.NoError(t, err)
	t.Cleanup(func() {
		if err := s.enter(); err != nil {
			return // closed by the test
		}
		s.exit()
		checkTotals(t, s)
		require.NoError(t, s.Close())
	})
	return s
}

func checkTotals(t *testing.T, s *Store) {
	t.Helper()
	var logical, stored, charged uint64
	n := 0
	require.NoError(t, s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{metaPrefix}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			require.NoError(t, it.Item().Value(func(v []byte) error {
				m, err := parseMeta(v)
				require.NoError(t, err)
				logical += m.header.Length
				o := orderOf(string(it.Item().Key()[1:]), len(v), m.header, m.expires)
				stored += o.stored
				charged += o.charge
				n++
				return nil
			}))
		}
		return nil
	}))
	st := s.Stats()
	require.Equal(t, n, st.Entries)
	require.Equal(t, logical, st.LogicalBytes)
	require.Equal(t, stored, st.StoredBytes)
	require.Equal(t, charged, st.ChargedBytes)
}

func payload(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		if i%3 == 0 {
			b[i] = byte(r.Uint32())
		}
	}
	return b
}

func countChunks(t *testing.T, s *Store) int {
	n := 0
	require.NoError(t, s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{chunkPrefix}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	}))
	return n
}

func TestStore_PutGetDelete(t *testing.T) {
	s := openStore(t, "")
	for i, n := range []int{0, 1, 4095, 4096, 10000, 100_000} {
		key := fmt.Sprint("k", i)
		data := payload(n, uint64(i))
		require.NoError(t, s.Put(key, "BF16", []uint64{uint64(n)}, data))
		v, err := s.Get(key)
		require.NoError(t, err)
		require.Equal(t, data, v.Data)
		require.Equal(t, "BF16", v.DType)
		require.Equal(t, []uint64{uint64(n)}, v.Shape)
		info, err := s.Stat(key)
		require.NoError(t, err)
		require.Equal(t, uint64(n), info.LogicalBytes)
		require.WithinDuration(t, time.Now(), info.Written, time.Minute)
	}
	st := s.Stats()
	require.Equal(t, 6, st.Entries)
	require.Less(t, st.StoredBytes, st.LogicalBytes, "payload is compressible")
	require.NoError(t, s.Delete("k5"))
	_, err := s.Get("k5")
	require.ErrorIs(t, err, errs.ErrNotFound)
	require.NoError(t, s.Delete("never there"))
	require.Equal(t, uint64(1), s.Stats().Misses)
}

func TestStore_ReplaceLeavesNoOldChunks(t *testing.T) {
	s := openStore(t, "")
	require.NoError(t, s.Put("k", "U8", nil, payload(20000, 1)))
	before := countChunks(t, s)
	newer := payload(9000, 2)
	require.NoError(t, s.Put("k", "U8", nil, newer))
	v, err := s.Get("k")
	require.NoError(t, err)
	require.Equal(t, newer, v.Data)
	require.Equal(t, 5, before)
	require.Equal(t, 3, countChunks(t, s))
}

func TestStore_PersistsAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	data := payload(50000, 3)
	require.NoError(t, s.Put("k", "F32", []uint64{2, 6250}, data))
	require.NoError(t, s.Close())
	s = openStore(t, dir)
	v, err := s.Get("k")
	require.NoError(t, err)
	require.Equal(t, data, v.Data)
	require.Equal(t, []uint64{2, 6250}, v.Shape)
	require.Equal(t, 1, s.Stats().Entries)
}

func TestOpen_SecondOpenFailsAtOnce(t *testing.T) {
	dir := t.TempDir()
	openStore(t, dir)
	start := time.Now()
	_, err := Open(&Options{Dir: dir})
	require.ErrorIs(t, err, errs.ErrLocked)
	require.Contains(t, err.Error(), dir)
	require.Less(t, time.Since(start), 5*time.Second)
}

func TestStore_CorruptChunkIsDroppedNotReturned(t *testing.T) {
	s := openStore(t, "")
	require.NoError(t, s.Put("bad", "U8", nil, payload(10000, 4)))
	good := payload(10000, 5)
	require.NoError(t, s.Put("good", "U8", nil, good))
	m, err := s.readMeta("bad")
	require.NoError(t, err)
	// Damage the second chunk's stored bytes.
	require.NoError(t, s.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(chunkKey(m.id, 1))
		require.NoError(t, err)
		v, err := item.ValueCopy(nil)
		require.NoError(t, err)
		v[len(v)/2] ^= 0xff
		return txn.Set(chunkKey(m.id, 1), v)
	}))
	_, err = s.Get("bad")
	require.ErrorIs(t, err, errs.ErrCorrupt)
	_, err = s.Get("bad")
	require.ErrorIs(t, err, errs.ErrNotFound, "a corrupt entry is dropped")
	v, err := s.Get("good")
	require.NoError(t, err)
	require.Equal(t, good, v.Data)
	require.Equal(t, uint64(1), s.Stats().Corrupt)
}

func TestStore_CorruptMetaIsDroppedAtOpen(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	require.NoError(t, s.Put("bad", "U8", nil, payload(10000, 6)))
	require.NoError(t, s.Put("good", "U8", nil, payload(10, 7)))
	require.NoError(t, s.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(metaKey("bad"))
		require.NoError(t, err)
		v, err := item.ValueCopy(nil)
		require.NoError(t, err)
		v[len(v)-1] ^= 1
		return txn.Set(metaKey("bad"), v)
	}))
	_, err := s.Get("bad")
	require.ErrorIs(t, err, errs.ErrCorrupt)
	require.NoError(t, s.Close())
	s = openStore(t, dir)
	_, err = s.Get("bad")
	require.ErrorIs(t, err, errs.ErrNotFound)
	_, err = s.Get("good")
	require.NoError(t, err)
	require.Equal(t, 1, countChunks(t, s), "the bad entry's chunks were swept")
}

// crash closes Badger under s without what Close adds (the order index's
// totals), as a process that dies leaves the directory.
func crash(t *testing.T, s *Store) {
	t.Helper()
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	s.closed = true
	require.NoError(t, s.db.Close())
	require.NoError(t, s.lock.Close())
}

// Chunks written without their meta record (a crash before the commit) are
// swept at the next Open and never served.
func TestOpen_SweepsOrphanChunks(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	require.NoError(t, s.Put("k", "U8", nil, payload(9000, 8)))
	require.NoError(t, s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(chunkKey(newID(), 0), []byte("orphan"))
	}))
	require.Equal(t, 4, countChunks(t, s))
	crash(t, s)
	s = openStore(t, dir)
	require.Equal(t, 3, countChunks(t, s))
	_, err := s.Get("k")
	require.NoError(t, err)
}

func TestStore_BudgetEvictsLeastRecentlyUsed(t *testing.T) {
	s := openStore(t, "")
	// Incompressible 4 KiB entries, so stored ≈ logical.
	noise := func(seed uint64) []byte {
		r := rand.New(rand.NewPCG(seed, 9))
		b := make([]byte, 4096)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	// Three entries with their per-entry overhead fit under lowWater; a
	// fourth passes highWater.
	s.max = 17500
	for i := range 3 {
		require.NoError(t, s.Put(fmt.Sprint(i), "U8", nil, noise(uint64(i))))
	}
	_, err := s.Get("0") // 1 is now least recently used
	require.NoError(t, err)
	require.NoError(t, s.Put("3", "U8", nil, noise(3)))
	_, err = s.Get("1")
	require.ErrorIs(t, err, errs.ErrNotFound)
	for _, k := range []string{"0", "2", "3"} {
		_, err := s.Get(k)
		require.NoError(t, err, k)
	}
	st := s.Stats()
	require.Equal(t, uint64(1), st.Evictions)
	require.LessOrEqual(t, st.ChargedBytes, uint64(s.max))
}

func TestStore_Concurrent(t *testing.T) {
	s := openStore(t, "")
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 30 {
				key := fmt.Sprint(i % 5)
				data := payload(5000+i%5, uint64(i%5))
				if (i+g)%3 == 0 {
					require.NoError(t, s.Put(key, "U8", nil, data))
					continue
				}
				v, err := s.Get(key)
				if err == nil {
					require.Equal(t, data, v.Data)
				} else {
					require.ErrorIs(t, err, errs.ErrNotFound)
				}
			}
		})
	}
	wg.Wait()
	require.Zero(t, s.Stats().Corrupt)
}

func TestStore_Closed(t *testing.T) {
	s := openStore(t, "")
	require.NoError(t, s.Close())
	require.ErrorIs(t, s.Put("k", "", nil, nil), errs.ErrClosed)
	_, err := s.Get("k")
	require.ErrorIs(t, err, errs.ErrClosed)
	require.NoError(t, s.Close())
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// A kill between creating a memtable or value-log file and sizing it leaves
// an empty file that Badger alone refuses to open past.
func TestOpen_IgnoresEmptyLogsLeftByACrash(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	require.NoError(t, s.Put("k", "U8", nil, payload(100_000, 1)))
	require.NoError(t, s.Close())
	for _, name := range []string{"00009.mem", "000009.vlog"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), nil, 0o644))
	}
	s = openStore(t, dir)
	v, err := s.Get("k")
	require.NoError(t, err)
	require.Equal(t, payload(100_000, 1), v.Data)
}
