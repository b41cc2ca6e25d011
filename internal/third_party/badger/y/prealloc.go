package y

import (
	"errors"
	"fmt"
	"os"

	"github.com/dgraph-io/ristretto/v2/z"
)

// OpenMmapFile is z.OpenMmapFile for the files Badger writes through their
// mapping (memtable and value logs, tables, discard stats). A file it
// creates is sized sparse; a page that the file system then cannot back,
// because it filled up in the meantime, is not a write error but a SIGBUS
// that kills the whole process. So the blocks of a new file are allocated
// before anything is written to the mapping: a full disk is an error here,
// the file is removed again, and every later write lands on allocated
// blocks.
//
// modelcache patch: not in upstream Badger (see badger issue 1801).
func OpenMmapFile(filename string, flag int, maxSz int) (*z.MmapFile, error) {
	mf, err := z.OpenMmapFile(filename, flag, maxSz)
	if !errors.Is(err, z.NewFile) {
		return mf, err
	}
	if perr := preallocate(mf.Fd, 0, int64(len(mf.Data))); perr != nil {
		_ = mf.Delete()
		return nil, fmt.Errorf("while allocating %d bytes for %s: %w", len(mf.Data), filename, perr)
	}
	return mf, err
}

// OpenMmapFileAhead is OpenMmapFile for a log written from its start
// onwards: of a file it creates, only the first ahead bytes are allocated,
// and the writer allocates further with Preallocate before it writes there.
// A log is created at twice its size limit and mostly filled far less, so
// allocating it whole would take that much disk for nothing.
//
// modelcache patch: not in upstream Badger.
func OpenMmapFileAhead(filename string, flag int, maxSz int, ahead int64) (*z.MmapFile, int64, error) {
	mf, err := z.OpenMmapFile(filename, flag, maxSz)
	if !errors.Is(err, z.NewFile) {
		if mf != nil {
			return mf, int64(len(mf.Data)), err
		}
		return mf, 0, err
	}
	n := min(ahead, int64(len(mf.Data)))
	if perr := preallocate(mf.Fd, 0, n); perr != nil {
		_ = mf.Delete()
		return nil, 0, fmt.Errorf("while allocating %d bytes for %s: %w", n, filename, perr)
	}
	return mf, n, err
}

// Preallocate allocates the blocks of [off, off+n) of f, where the file
// system can (see OpenMmapFile). modelcache patch.
func Preallocate(f *os.File, off, n int64) error { return preallocate(f, off, n) }

// GrowMmapFile grows a mapped file to size, allocating the new blocks
// first, for the reason given at OpenMmapFile.
//
// modelcache patch: not in upstream Badger.
func GrowMmapFile(mf *z.MmapFile, size int64) error {
	if old := int64(len(mf.Data)); size > old {
		if err := preallocate(mf.Fd, old, size-old); err != nil {
			return fmt.Errorf("while allocating %d bytes for %s: %w", size-old, mf.Fd.Name(), err)
		}
	}
	return mf.Truncate(size)
}

