package l2

import (
	"bufio"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// rssFile is the process's resident file-backed memory, from
// /proc/self/status.
func rssFile(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "RssFile:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			require.NoError(t, err)
			return kb << 10
		}
	}
	t.Skip("no RssFile in /proc/self/status")
	return 0
}

// An entry streamed in and out through the value log's mapping does not
// stay in the resident set: Badger (patched) gives the pages of large
// writes and of values read once back to the page cache.
func TestStore_StreamsLeaveTheResidentSetSmall(t *testing.T) {
	s := openStore(t, "", func(o *Options) { o.ChunkSize = 0 })
	const size = 128 << 20
	base := rssFile(t)
	rng := rand.NewChaCha8([32]byte{1})
	require.NoError(t, s.PutStream("big", "U8", nil, size, io.LimitReader(rng, size)))
	afterWrite := rssFile(t)
	r, err := s.OpenEntry("big")
	require.NoError(t, err)
	h := r.Header()
	buf := make([]byte, h.ChunkSize)
	for i := range h.Chunks {
		require.NoError(t, r.ReadChunk(i, buf[:h.ChunkLen(i)]))
	}
	afterRead := rssFile(t)
	t.Logf("file-backed RSS: %d MiB at start, +%d MiB after writing %d MiB, +%d MiB after reading it",
		base>>20, (afterWrite-base)>>20, size>>20, (afterRead-base)>>20)
	require.Less(t, afterWrite-base, int64(size/4), "written pages stayed resident")
	require.Less(t, afterRead-base, int64(size/4), "read pages stayed resident")
}
