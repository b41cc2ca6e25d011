package l2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/internal/testmodels"
)

const flipEntries = 600

// flipData is entry i's content: two in five are small (they live in the
// LSM tree), the rest 64 to 200 KiB (the value log); all compress poorly.
// Made once: the test compares every entry 50 times, and making them
// again each time (a random byte at a time, under -race) was most of its
// minutes.
func flipData(i int) []byte { return flipAll()[i] }

var flipAll = sync.OnceValue(func() [][]byte {
	all := make([][]byte, flipEntries)
	for i := range all {
		all[i] = makeFlipData(i)
	}
	return all
})

func makeFlipData(i int) []byte {
	r := rand.New(rand.NewPCG(uint64(i), 31))
	n := 100 + r.IntN(2000)
	if i%5 >= 2 {
		n = 64<<10 + r.IntN(136<<10)
	}
	b := make([]byte, n)
	for j := range b {
		b[j] = byte(r.Uint32())
	}
	return b
}

// flipOptions: a 2 GiB budget makes value-log files of 64 MiB, so that all
// values are in one, the last, which upstream cut at its first unreadable
// entry: the worst case.
func flipOptions(dir string) *Options {
	return &Options{Dir: dir, MaxBytes: 2 << 30, ChunkSize: 128 << 10, Logger: discardLogger()}
}

// fileKind groups the files of a store for the report.
func fileKind(name string) string {
	switch ext := filepath.Ext(name); ext {
	case ".sst", ".vlog", ".mem":
		return ext
	}
	return name
}

type flipResult struct {
	ok, lost, wrong, failed int
	openErr                 error
}

// flipRound copies golden, flips one bit of the named file at random, opens
// the copy, compacts the LSM tree whole and reads every entry.
func flipRound(t *testing.T, golden, file string, r *rand.Rand) flipResult {
	dir := t.TempDir()
	copyDir(t, golden, dir)
	p := filepath.Join(dir, file)
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	if len(b) > 0 {
		bit := r.IntN(len(b) * 8)
		b[bit/8] ^= 1 << (bit % 8)
	}
	require.NoError(t, os.WriteFile(p, b, 0o644))
	var res flipResult
	s, err := Open(flipOptions(dir))
	if err != nil {
		res.openErr = err
		return res
	}
	defer s.Close()
	require.NoError(t, s.db.CompactLevel0())
	for i := range flipEntries {
		v, err := s.Get(fmt.Sprint(i))
		switch {
		case err == nil && bytes.Equal(v.Data, flipData(i)):
			res.ok++
		case err == nil:
			res.wrong++
		case errors.Is(err, errs.ErrNotFound), errors.Is(err, errs.ErrCorrupt):
			res.lost++ // a miss: tier reads the model file again
		default:
			res.failed++
			t.Logf("%s: entry %d: %v", file, i, err)
		}
	}
	return res
}

// One flipped bit in a random file of a warmed store costs only the entries
// it touched: 50 rounds, each flipping one bit of one file (chosen at
// random) of a fresh copy, then compacting and reading everything. At least
// 95% of the entries survive damage to any kind of file (the issue asks it
// of tables and value-log files), and no read returns wrong bytes or fails. The survival per file kind is printed
// (docs/L2.md records it).
func TestStore_OneBitFlipCostsOnlyWhatItTouched(t *testing.T) {
	golden := t.TempDir()
	s, err := Open(flipOptions(golden))
	require.NoError(t, err)
	for i := range flipEntries {
		require.NoError(t, s.Put(fmt.Sprint(i), "U8", nil, flipData(i)))
	}
	require.NoError(t, s.Close())
	entries, err := os.ReadDir(golden)
	require.NoError(t, err)
	var files []string
	for _, e := range entries {
		if e.Type().IsRegular() && e.Name() != lockName {
			files = append(files, e.Name())
		}
	}
	slices.Sort(files)
	t.Logf("files: %v", files)

	r := rand.New(rand.NewPCG(testmodels.Seed(t, "L2_FLIP_SEED"), 1))
	type tally struct{ rounds, ok, lost, wrong, failed, openErrs int }
	byKind := map[string]*tally{}
	for range 50 {
		f := files[r.IntN(len(files))]
		res := flipRound(t, golden, f, r)
		k := byKind[fileKind(f)]
		if k == nil {
			k = &tally{}
			byKind[fileKind(f)] = k
		}
		k.rounds++
		if res.openErr != nil {
			k.openErrs++
			t.Logf("%s: open: %v", f, res.openErr)
			continue
		}
		k.ok += res.ok
		k.lost += res.lost
		k.wrong += res.wrong
		k.failed += res.failed
	}
	var report []string
	for kind, k := range byKind {
		survival := float64(k.ok) / float64(k.rounds*flipEntries)
		report = append(report, fmt.Sprintf("| %s | %d | %.1f%% | %d | %d | %d |", kind, k.rounds, 100*survival, k.wrong, k.failed, k.openErrs))
	}
	slices.Sort(report)
	t.Logf("| file | rounds | entries surviving | wrong | failed reads | open errors |\n%s", strings.Join(report, "\n"))
	for kind, k := range byKind {
		survival := float64(k.ok) / float64(k.rounds*flipEntries)
		require.Zero(t, k.wrong, "%s: wrong bytes", kind)
		require.Zero(t, k.failed, "%s: failed reads", kind)
		require.Zero(t, k.openErrs, "%s: the store did not open", kind)
		require.GreaterOrEqual(t, survival, 0.95, "%s: survival", kind)
	}
}

// smallValue is entry i of the table-damage tests: a few hundred bytes, so
// that it lives in the LSM tree.
func smallValue(i int) []byte { return []byte(fmt.Sprintf("value %d %0300d", i, i)) }

// fillTable puts n small entries into a new store, closes it and returns
// the path of the one table they went to.
func fillTable(t *testing.T, o *Options, n int) string {
	t.Helper()
	s, err := Open(o)
	require.NoError(t, err)
	for i := range n {
		require.NoError(t, s.Put(fmt.Sprintf("%05d", i), "U8", nil, smallValue(i)))
	}
	require.NoError(t, s.Close())
	ssts, err := filepath.Glob(filepath.Join(o.Dir, "*.sst"))
	require.NoError(t, err)
	require.Len(t, ssts, 1)
	return ssts[0]
}

// flipByte flips bits of the byte at off in the file at path.
func flipByte(t *testing.T, path string, off int64, mask byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	var b [1]byte
	_, err = f.ReadAt(b[:], off)
	require.NoError(t, err)
	b[0] ^= mask
	_, err = f.WriteAt(b[:], off)
	require.NoError(t, err)
}

// intact counts the n entries that read back right; none reads wrong.
func intact(t *testing.T, s *Store, n int) int {
	t.Helper()
	ok := 0
	for i := range n {
		if v, err := s.Get(fmt.Sprintf("%05d", i)); err == nil {
			require.Equal(t, smallValue(i), v.Data, "entry %d", i)
			ok++
		}
	}
	return ok
}

const tableEntries = 3000

// A damaged block of an encrypted store's table is cut out as in a plain
// one: the table is read and rebuilt with its data key.
func TestStore_SalvagesATableOfAnEncryptedStore(t *testing.T) {
	o := &Options{Dir: t.TempDir(), EncryptionKey: bytes.Repeat([]byte{3}, 32), Logger: discardLogger()}
	sst := fillTable(t, o, tableEntries)
	st, err := os.Stat(sst)
	require.NoError(t, err)
	flipByte(t, sst, st.Size()/3, 0x10) // inside a data block, far from the index at the end
	s, err := Open(o)
	require.NoError(t, err)
	defer s.Close()
	require.Len(t, s.Damage().Tables, 1)
	require.Equal(t, 1, s.Damage().LostBlocks())
	require.Greater(t, intact(t, s, tableEntries), tableEntries*95/100, "one block's entries lost, not the rest")
}

// Damage that appears while the store is open: a compaction that meets the
// damaged block fails and keeps its input (upstream wrote its output without
// every entry after the block and deleted the input), and the next Open cuts
// out the block alone.
func TestStore_CompactionKeepsItsInputOnDamage(t *testing.T) {
	o := &Options{Dir: t.TempDir(), Logger: discardLogger(), noBlockCache: true}
	sst := fillTable(t, o, tableEntries)
	s, err := Open(o)
	require.NoError(t, err)
	st, err := os.Stat(sst)
	require.NoError(t, err)
	flipByte(t, sst, st.Size()/3, 0x40) // the mapping Badger reads sees it
	require.Error(t, s.db.CompactLevel0(), "the compaction meets the damaged block")
	require.NoError(t, s.Close())
	s, err = Open(o)
	require.NoError(t, err)
	defer s.Close()
	require.Equal(t, 1, s.Damage().LostBlocks())
	require.Greater(t, intact(t, s, tableEntries), tableEntries*95/100, "one block's entries lost, not the rest")
}

// A flipped bit in a table's index: its blocks are found through it all the
// same, each checked by its own checksum, and the table is rebuilt.
func TestStore_DamagedTableIndexKeepsTheBlocks(t *testing.T) {
	o := &Options{Dir: t.TempDir(), Logger: discardLogger()}
	sst := fillTable(t, o, tableEntries)
	st, err := os.Stat(sst)
	require.NoError(t, err)
	flipByte(t, sst, st.Size()-200, 0x01) // in the index, which sits at the end
	s, err := Open(o)
	require.NoError(t, err)
	defer s.Close()
	d := s.Damage()
	require.Len(t, d.Tables, 1, "%+v", d)
	require.True(t, d.Tables[0].IndexDamaged)
	require.Greater(t, intact(t, s, tableEntries), tableEntries*95/100)
}

// A table whose last block is damaged does not open as it is (Badger reads
// its biggest key there); it is salvaged all the same.
func TestStore_DamagedLastBlockIsSalvaged(t *testing.T) {
	o := &Options{Dir: t.TempDir(), Logger: discardLogger()}
	sst := fillTable(t, o, tableEntries)
	b, err := os.ReadFile(sst)
	require.NoError(t, err)
	// The trailer, from the end: checksum length, checksum, index length,
	// index; the last block ends where the index starts.
	end := len(b) - 4
	end -= int(binary.BigEndian.Uint32(b[end:]))
	end -= 4
	end -= int(binary.BigEndian.Uint32(b[end:]))
	flipByte(t, sst, int64(end-100), 0x04)
	s, err := Open(o)
	require.NoError(t, err)
	defer s.Close()
	d := s.Damage()
	require.Len(t, d.Tables, 1, "%+v", d)
	require.Nil(t, d.Tables[0].Removed)
	require.Equal(t, 1, d.LostBlocks())
	require.Greater(t, intact(t, s, tableEntries), tableEntries*95/100)
}

// After a clean Close, Open trusts the tables left as they were and does
// not read them; damage that leaves a table's size and times as they were
// (a medium's silent bit flip) is caught when its block is read: those
// entries are damaged, never wrong bytes, and the rest read.
func TestStore_TrustsTablesAfterACleanClose(t *testing.T) {
	o := &Options{Dir: t.TempDir(), Logger: discardLogger(), noBlockCache: true}
	sst := fillTable(t, o, tableEntries)
	require.FileExists(t, filepath.Join(o.Dir, tablesClean))
	st, err := os.Stat(sst)
	require.NoError(t, err)
	// Past the order index, among the entries' records.
	flipByte(t, sst, st.Size()*6/10, 0x40)
	require.NoError(t, os.Chtimes(sst, st.ModTime(), st.ModTime()))
	s, err := Open(o)
	require.NoError(t, err)
	require.Empty(t, s.Damage().Tables, "a trusted table is not read at Open")
	require.NoFileExists(t, filepath.Join(o.Dir, tablesClean), "the record is used once")
	n := intact(t, s, tableEntries)
	require.Greater(t, n, tableEntries*95/100)
	require.Less(t, n, tableEntries, "the damaged block's entries read as damaged")
	require.NoError(t, s.Close())
	require.NoFileExists(t, filepath.Join(o.Dir, tablesClean), "a session that saw damage vouches for nothing")
	s, err = Open(o)
	require.NoError(t, err)
	defer s.Close()
	require.Equal(t, 1, s.Damage().LostBlocks(), "so the next Open cuts the block out")
}

// Without Badger's own value checksum, damaged value-log entry headers are
// caught by ours: the entries read as missing or corrupt, never as wrong
// bytes, and GC and Close still return. (The parser's own bounds are tested
// in the Badger package: header.decodeChecked.)
func TestStore_DamagedValueLogEntryHeaders(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(flipOptions(dir))
	require.NoError(t, err)
	for i := range 200 {
		require.NoError(t, s.Put(fmt.Sprint(i), "U8", nil, flipData(i)))
	}
	require.NoError(t, s.Close())
	vlogs, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	require.NoError(t, err)
	r := rand.New(rand.NewPCG(7, 7))
	for _, p := range vlogs {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		if len(b) < 1<<20 {
			continue
		}
		// Walk the entries (a 20-byte file header, then per entry: meta,
		// user meta, uvarint key and value lengths and expiry, key, value,
		// CRC) and damage the lengths of every third: runs of 0xff, which
		// never end as varints, or a key length that wraps round.
		off, n := 20, 0
		for off+16 < len(b) {
			klen, k1 := binary.Uvarint(b[off+2:])
			vlen, k2 := binary.Uvarint(b[off+2+k1:])
			_, k3 := binary.Uvarint(b[off+2+k1+k2:])
			if k1 <= 0 || k2 <= 0 || k3 <= 0 || klen == 0 {
				break // the zeroed end of the log
			}
			next := off + 2 + k1 + k2 + k3 + int(klen) + int(vlen) + 4
			switch n++; n % 6 {
			case 0:
				copy(b[off+2:], bytes.Repeat([]byte{0xff}, 10))
			case 3:
				// A key length of 2^32-1: klen+vlen wraps round in uint32.
				if k1 == 1 && r.IntN(2) == 0 {
					tail := append([]byte{}, b[off+3:next]...)
					b2 := append(append(append([]byte{}, b[:off+2]...), 0xff, 0xff, 0xff, 0xff, 0x0f), tail...)
					b = append(b2[:len(b2):len(b2)], b[next:]...)
					next += 4
				} else {
					copy(b[off+2:], bytes.Repeat([]byte{0xff}, 10))
				}
			}
			off = next
		}
		require.Greater(t, n, 50, "entries walked")
		require.NoError(t, os.WriteFile(p, b, 0o644))
	}
	s, err = Open(flipOptions(dir))
	require.NoError(t, err)
	ok, lost := 0, 0
	for i := range 200 {
		v, err := s.Get(fmt.Sprint(i))
		switch {
		case err == nil:
			require.Equal(t, flipData(i), v.Data, "entry %d", i)
			ok++
		case errors.Is(err, errs.ErrCorrupt), errors.Is(err, errs.ErrNotFound):
			lost++
		default:
			t.Fatalf("entry %d: %v", i, err)
		}
	}
	t.Logf("%d entries intact, %d lost to damaged entry headers", ok, lost)
	require.Positive(t, lost)
	done := make(chan error, 1)
	go func() {
		if err := s.GC(); err != nil {
			done <- err
			return
		}
		done <- s.Close()
	}()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("GC and Close did not return: a read lock was left held")
	}
}
