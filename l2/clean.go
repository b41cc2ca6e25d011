package l2

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// tablesClean records, at a clean Close, every table file as it was left:
// the next Open trusts a table still exactly so (same size, modification
// time and inode) and does not read it block by block. A table written
// since, or any table after a crash (Open removes the record first), is
// salvaged as before. Damage that strikes a file at rest without touching
// its metadata is still caught when its blocks are read (every block read
// is checksummed).
const tablesClean = "TABLES-CLEAN"

func tableLine(name string, fi os.FileInfo) string {
	return fmt.Sprintf("%s %d %d %d\n", name, fi.Size(), fi.ModTime().UnixNano(), inode(fi))
}

// markTablesClean writes the record; failing to is not an error, the next
// Open reads every table.
func markTablesClean(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	var b strings.Builder
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".sst") {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return
		}
		b.WriteString(tableLine(e.Name(), fi))
	}
	tmp := filepath.Join(dir, tablesClean+".tmp")
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return
	}
	_ = os.Rename(tmp, filepath.Join(dir, tablesClean))
}

// trustedTables reads and removes the record, and returns which tables it
// vouches for.
func trustedTables(dir string) func(id uint64) bool {
	p := filepath.Join(dir, tablesClean)
	b, err := os.ReadFile(p)
	_ = os.Remove(p)
	if err != nil {
		return nil
	}
	lines := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		lines[sc.Text()+"\n"] = true
	}
	return func(id uint64) bool {
		name := fmt.Sprintf("%06d.sst", id)
		fi, err := os.Stat(filepath.Join(dir, name))
		return err == nil && lines[tableLine(name, fi)]
	}
}
