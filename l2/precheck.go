package l2

import (
	"fmt"
	"os"
	"path/filepath"
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
