package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelcache/modelcache/internal/third_party/badger"
	"github.com/stretchr/testify/require"
)

// damageChunks flips a byte in the first n chunk values of the store in dir.
func damageChunks(t *testing.T, dir string, n int) {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	require.NoError(t, err)
	defer func() { require.NoError(t, db.Close()) }()
	require.NoError(t, db.Update(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{'c'}})
		defer it.Close()
		for it.Rewind(); it.Valid() && n > 0; it.Next() {
			v, err := it.Item().ValueCopy(nil)
			require.NoError(t, err)
			v[len(v)/2] ^= 0x40
			require.NoError(t, txn.Set(it.Item().KeyCopy(nil), v))
			n--
		}
		return nil
	}))
}

func TestVerify_NamesAndDropsDamagedEntries(t *testing.T) {
	dir := t.TempDir()
	require.Equal(t, 0, warm(t, "--dir", dir, testModel).code)
	r := warm(t, "verify", "--dir", dir)
	require.Equal(t, 0, r.code, "%s", r.stderr)
	require.Contains(t, string(r.stdout), "verified 62 entries: 0 damaged")

	damageChunks(t, dir, 2)
	r = warm(t, "verify", "--dir", dir)
	require.Equal(t, 1, r.code)
	lines := strings.Split(strings.TrimSpace(string(r.stderr)), "\n")
	require.Len(t, lines, 2, "%s", r.stderr)
	for _, l := range lines {
		require.Contains(t, l, "posenet.bf16.safetensors")
		require.Contains(t, l, "tensor ")
	}
	require.Contains(t, string(r.stdout), "2 damaged and dropped")

	// Dropped, nothing else lost: the next verify is clean, 60 entries left,
	// and warm refills the two.
	r = warm(t, "verify", "--dir", dir)
	require.Equal(t, 0, r.code, "%s", r.stderr)
	require.Contains(t, string(r.stdout), "verified 60 entries")
	r = warm(t, "--dir", dir, testModel)
	require.Contains(t, string(r.stdout), "2 cached now, 60 already cached")
}

// One flipped byte in a table of a warmed directory: warm verify reports
// what opening repaired (the block cut out, the entries around it named),
// exits 1, and the rest of the cache is intact: a second warm rewrites only
// what was lost.
func TestVerify_ReportsATableRepairedAtOpen(t *testing.T) {
	dir := t.TempDir()
	require.Equal(t, 0, warm(t, "--dir", dir, testModel).code)
	ssts, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	require.NoError(t, err)
	require.Len(t, ssts, 1)
	b, err := os.ReadFile(ssts[0])
	require.NoError(t, err)
	b[len(b)/2] ^= 0x08
	require.NoError(t, os.WriteFile(ssts[0], b, 0o644))

	r := warm(t, "verify", "--dir", dir)
	require.Equal(t, 1, r.code, "%s", r.stderr)
	stderr := string(r.stderr)
	require.Contains(t, stderr, "repaired at open: table 000001.sst")
	require.Contains(t, stderr, "blocks unreadable and cut out")
	require.Contains(t, stderr, "lost: the records after")
	require.Contains(t, string(r.stdout), "1 repairs at open")

	r = warm(t, "--dir", dir, testModel)
	require.Equal(t, 0, r.code, "%s", r.stderr)
	var written, skipped int
	_, err = fmt.Sscanf(strings.SplitN(string(r.stdout), "B: ", 2)[1], "%d cached now, %d already cached", &written, &skipped)
	require.NoError(t, err, "%s", r.stdout)
	require.Equal(t, 62, written+skipped)
	require.Greater(t, skipped, 31, "most entries survived: %s", r.stdout)
	r = warm(t, "verify", "--dir", dir)
	require.Equal(t, 0, r.code, "%s", r.stderr)
}
