package l2

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"

	"github.com/modelcache/modelcache/errs"
)

// checkTables checks the trailer of every Badger table in dir before Badger
// opens them. Badger reads a table's index through lengths stored in its
// last bytes and, if those point outside the file (a truncated table), it
// panics in a goroutine of its own, which no caller can recover. Within
// bounds, Badger verifies the index checksum itself and returns an error.
func checkTables(dir string) error {
	paths, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil {
		return err
	}
	for _, p := range paths {
		if err := checkTable(p); err != nil {
			return fmt.Errorf("l2: open %s: %w: table %s: %v; remove the directory (it is a cache) or restore it",
				dir, errs.ErrCorrupt, filepath.Base(p), err)
		}
	}
	return nil
}

func checkTable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	// Layout from the end: ... index | index length u32 | checksum |
	// checksum length u32, big-endian.
	var b [4]byte
	readU32 := func(off int64) (int64, error) {
		if off < 0 || off+4 > size {
			return 0, fmt.Errorf("trailer outside a file of %d bytes (truncated?)", size)
		}
		if _, err := f.ReadAt(b[:], off); err != nil {
			return 0, err
		}
		return int64(binary.BigEndian.Uint32(b[:])), nil
	}
	pos := size - 4
	checksumLen, err := readU32(pos)
	if err != nil {
		return err
	}
	pos -= checksumLen + 4
	indexLen, err := readU32(pos)
	if err != nil {
		return err
	}
	if pos-indexLen < 0 {
		return fmt.Errorf("index of %d bytes does not fit before offset %d (truncated?)", indexLen, pos)
	}
	return nil
}
