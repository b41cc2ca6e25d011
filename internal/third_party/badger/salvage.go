package badger

// modelcache patch: this file is not in upstream Badger.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/dgraph-io/ristretto/v2/z"

	"github.com/modelcache/modelcache/internal/third_party/badger/fb"
	"github.com/modelcache/modelcache/internal/third_party/badger/options"
	"github.com/modelcache/modelcache/internal/third_party/badger/pb"
	"github.com/modelcache/modelcache/internal/third_party/badger/table"
	"github.com/modelcache/modelcache/internal/third_party/badger/y"
)

// TableSalvage says what SalvageTables did to one damaged table.
type TableSalvage struct {
	ID         uint64
	Level      int
	Blocks     int   // blocks the table had
	LostBlocks int   // blocks that could not be read, and their entries
	Kept       int   // entries rewritten into the table
	// IndexDamaged: the table did not open as it was (a damaged index, or
	// last block); its blocks were found through its index all the same.
	IndexDamaged bool
	Removed    error // not nil: nothing could be read, and the table was removed
	// Lost are the key ranges of the lost blocks: their entries were the
	// keys between After and Before (exclusive; nil: the table's start or
	// end), as far as the blocks around them tell. Keys carry their
	// version, as Badger stores them (y.ParseKey strips it).
	Lost []KeyRange
}

// KeyRange is a range of keys between two keys, both excluded.
type KeyRange struct{ After, Before []byte }

// SalvageTables reads every table the manifest in opt.Dir lists, block by
// block, and rewrites each one that has unreadable blocks without them, in
// place: same id, same level, what is left of its key range. A table whose
// index cannot be read is removed from the manifest. It returns what it did
// to each damaged table; healthy ones are not touched. Call it before Open,
// with the options Open will get, on a directory no process has open.
//
// Without it, one damaged block costs far more than its entries: iterators
// stop at it without an error, so a compaction that meets it writes its
// output without every entry after it, and deletes the input.
//
// trusted, if not nil, names tables known to be intact (checked since they
// were last written), which are not read. modelcache patch.
func SalvageTables(opt Options, trusted func(id uint64) bool) ([]TableSalvage, error) {
	mfp, err := os.Open(filepath.Join(opt.Dir, ManifestFilename))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	m, _, err := ReplayManifestFile(mfp, opt.ExternalMagicVersion, opt)
	mfp.Close()
	if err != nil {
		return nil, y.Wrapf(err, "while reading the manifest")
	}
	var kr *KeyRegistry
	if len(opt.EncryptionKey) > 0 {
		kr, err = OpenKeyRegistry(KeyRegistryOptions{
			Dir: opt.Dir, ReadOnly: true, EncryptionKey: opt.EncryptionKey,
			EncryptionKeyRotationDuration: opt.EncryptionKeyRotationDuration,
		})
		if err != nil {
			return nil, err
		}
		defer kr.Close()
	}
	pool := z.NewAllocatorPool(1)
	defer pool.Release()
	var out []TableSalvage
	var gone []*pb.ManifestChange
	for id, tm := range m.Tables {
		if trusted != nil && trusted(id) {
			continue
		}
		var dk *pb.DataKey
		if tm.KeyID != 0 {
			if kr == nil {
				continue // Open will refuse the missing key
			}
			if dk, err = kr.DataKey(tm.KeyID); err != nil {
				return out, err
			}
		}
		topt := table.Options{
			TableSize: uint64(opt.BaseTableSize), BlockSize: opt.BlockSize,
			BloomFalsePositive: opt.BloomFalsePositive, ChkMode: options.OnBlockRead,
			Compression: tm.Compression, ZSTDCompressionLevel: opt.ZSTDCompressionLevel, DataKey: dk,
			AllocPool: pool,
		}
		s, err := salvageTable(opt.Dir, id, topt)
		if err != nil {
			return out, err
		}
		if s == nil {
			continue
		}
		s.Level = int(tm.Level)
		if s.Removed != nil {
			gone = append(gone, newDeleteChange(id))
		}
		out = append(out, *s)
	}
	if len(gone) > 0 {
		mf, _, err := helpOpenOrCreateManifestFile(opt.Dir, false, opt.ExternalMagicVersion,
			manifestDeletionsRewriteThreshold, opt)
		if err != nil {
			return out, err
		}
		err = mf.addChanges(gone, opt)
		if cerr := mf.close(); err == nil {
			err = cerr
		}
		if err != nil {
			return out, y.Wrapf(err, "while removing unreadable tables from the manifest")
		}
		for _, c := range gone {
			if err := os.Remove(table.NewFilename(c.Id, opt.Dir)); err != nil && !os.IsNotExist(err) {
				return out, err
			}
		}
	}
	return out, nil
}

// salvageTable checks one table and rewrites it without its unreadable
// blocks; nil if it was whole.
func salvageTable(dir string, id uint64, topt table.Options) (*TableSalvage, error) {
	path := table.NewFilename(id, dir)
	// An encrypted table keeps its decrypted index in a cache, which it
	// requires; the table read and the one rebuilt share an id, which keys
	// that cache, so each gets a cache of its own.
	withCache := func(o table.Options) (table.Options, func(), error) {
		if o.DataKey == nil {
			return o, func() {}, nil
		}
		c, err := ristretto.NewCache(&ristretto.Config[uint64, *fb.TableIndex]{
			NumCounters: 100, MaxCost: 16 << 20, BufferItems: 64})
		if err != nil {
			return o, nil, err
		}
		o.IndexCache = c
		return o, c.Close, nil
	}
	readOpt, closeCache, err := withCache(topt)
	if err != nil {
		return nil, err
	}
	defer closeCache()
	mf, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
	if err != nil {
		return &TableSalvage{ID: id, Removed: err}, nil
	}
	t, err := openTableSafely(mf, readOpt)
	indexDamaged := false
	if err != nil {
		// A damaged index may still locate the blocks, whose own checksums
		// tell which are whole; a damaged last block stops a plain open too.
		readOpt.Salvaging = true
		mf2, err2 := z.OpenMmapFile(path, os.O_RDONLY, 0)
		if err2 != nil {
			return &TableSalvage{ID: id, Removed: err}, nil
		}
		if t, err2 = openTableSafely(mf2, readOpt); err2 != nil {
			return &TableSalvage{ID: id, Removed: err}, nil
		}
		indexDamaged = true
	}
	buildOpt, closeCache2, err := withCache(topt)
	if err != nil {
		return nil, err
	}
	defer closeCache2()
	b := table.NewTableBuilder(buildOpt)
	defer b.Close()
	kept := 0
	var ranges []KeyRange
	var last []byte
	open := false // the last range awaits its Before
	blocks, lost := t.Salvage(func(key []byte, vs y.ValueStruct) {
		if open {
			ranges[len(ranges)-1].Before = append([]byte(nil), key...)
			open = false
		}
		last = append(last[:0], key...)
		var vlen uint32
		if vs.Meta&bitValuePointer != 0 {
			var vp valuePointer
			vp.Decode(vs.Value)
			vlen = vp.Len
		}
		b.Add(key, vs, vlen)
		kept++
	}, func(int) {
		if !open {
			ranges = append(ranges, KeyRange{After: append([]byte(nil), last...)})
			if len(last) == 0 {
				ranges[len(ranges)-1].After = nil
			}
			open = true
		}
	})
	closeErr := t.Close(-1)
	if lost == 0 && !indexDamaged {
		return nil, closeErr
	}
	s := &TableSalvage{ID: id, Blocks: blocks, LostBlocks: lost, Kept: kept, Lost: ranges, IndexDamaged: indexDamaged}
	if b.Empty() {
		s.Removed = fmt.Errorf("all %d blocks unreadable", blocks)
		return s, nil
	}
	// Build beside it under the same name (table ids come from file names),
	// then swap it in.
	tmpDir := filepath.Join(dir, "salvage.tmp")
	if err := os.RemoveAll(tmpDir); err != nil {
		return nil, err
	}
	if err := os.Mkdir(tmpDir, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmpDir)
	nt, err := table.CreateTable(table.NewFilename(id, tmpDir), b)
	if err != nil {
		return nil, y.Wrapf(err, "while rebuilding table %d", id)
	}
	if err := nt.Close(-1); err != nil {
		return nil, err
	}
	if err := os.Rename(table.NewFilename(id, tmpDir), path); err != nil {
		return nil, err
	}
	return s, errors.Join(closeErr, syncDir(dir))
}

// openTableSafely is table.OpenTable, with a panic while reading a damaged
// index turned into an error.
func openTableSafely(mf *z.MmapFile, topt table.Options) (t *table.Table, err error) {
	defer func() {
		if r := recover(); r != nil {
			_ = mf.Close(-1)
			t, err = nil, fmt.Errorf("unreadable table index: %v", r)
		}
	}()
	return table.OpenTable(mf, topt)
}

// RebuildManifest writes a new manifest for a store in opt.Dir whose own
// cannot be read, listing every table there at level 0. Tables at level 0
// may overlap, and reads and compactions order entries by version, not by
// level, so nothing is lost; compaction moves them down again. A table that
// does not open is removed. It returns how many tables the new manifest
// lists. Stores that encrypt cannot be rebuilt so: a table's data key is in
// the manifest only.
func RebuildManifest(opt Options) (int, error) {
	if len(opt.EncryptionKey) > 0 {
		return 0, errors.New("the manifest of an encrypted store cannot be rebuilt")
	}
	paths, err := filepath.Glob(filepath.Join(opt.Dir, "*.sst"))
	if err != nil {
		return 0, err
	}
	m := createManifest()
	for _, p := range paths {
		id, ok := table.ParseFileID(filepath.Base(p))
		if !ok {
			continue
		}
		mf, err := z.OpenMmapFile(p, os.O_RDONLY, 0)
		if err != nil {
			return 0, err
		}
		topt := table.Options{BlockSize: opt.BlockSize, ChkMode: options.NoVerification, Compression: opt.Compression}
		t, err := openTableSafely(mf, topt)
		if err != nil {
			if err := os.Remove(p); err != nil {
				return 0, err
			}
			continue
		}
		m.Tables[id] = TableManifest{Level: 0, Compression: t.CompressionType()}
		if err := t.Close(-1); err != nil {
			return 0, err
		}
	}
	fp, _, err := helpRewrite(opt.Dir, &m, opt.ExternalMagicVersion)
	if err != nil {
		return 0, err
	}
	return len(m.Tables), fp.Close()
}
