package l2

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"

	"github.com/modelcache/modelcache/internal/third_party/badger"
	"github.com/modelcache/modelcache/internal/third_party/badger/table"

	"github.com/modelcache/modelcache/errs"
)

// removeEmptyLogs deletes zero-length memtable (.mem) and value-log (.vlog)
// files. A process killed between creating such a file and sizing it leaves
// one behind, and Badger then refuses to open the directory ("Create a new
// file"). An empty log holds no entry, and nothing can point into it.
func removeEmptyLogs(dir string) error {
	for _, pattern := range []string{"*.mem", "*.vlog"} {
		paths, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			return err
		}
		for _, p := range paths {
			if fi, err := os.Stat(p); err == nil && fi.Size() == 0 {
				if err := os.Remove(p); err != nil {
					return fmt.Errorf("l2: open %s: removing empty log %s: %w", dir, filepath.Base(p), err)
				}
			}
		}
	}
	return nil
}

// checkTables checks the trailer of every Badger table in dir before Badger
// opens them. Badger reads a table's index through lengths stored in its
// last bytes and, if those point outside the file (a truncated table), it
// panics in a goroutine of its own, which no caller can recover. Within
// bounds, Badger verifies the index checksum itself and returns an error.
//
// Only tables the manifest lists are checked: a table being written when the
// process was killed is not listed yet, may be empty, and Badger deletes it.
func checkTables(dir string) error {
	live, err := manifestTables(dir)
	if err != nil || len(live) == 0 {
		return nil // no manifest yet, or a damaged one: Badger reports that itself
	}
	paths, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil {
		return err
	}
	for _, p := range paths {
		if id, ok := table.ParseFileID(filepath.Base(p)); !ok || !live[id] {
			continue
		}
		if err := checkTable(p); err != nil {
			return fmt.Errorf("l2: open %s: %w: table %s: %v; remove the directory (it is a cache) or restore it",
				dir, errs.ErrCorrupt, filepath.Base(p), err)
		}
	}
	return nil
}

// manifestTables returns the ids of the tables the manifest in dir lists.
func manifestTables(dir string) (map[uint64]bool, error) {
	f, err := os.Open(filepath.Join(dir, badger.ManifestFilename))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m, _, err := badger.ReplayManifestFile(f, 0, badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		return nil, err
	}
	live := make(map[uint64]bool, len(m.Tables))
	for id := range m.Tables {
		live[id] = true
	}
	return live, nil
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
