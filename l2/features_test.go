package l2

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
)

func TestStore_TTL(t *testing.T) {
	dir := t.TempDir()
	now := time.Unix(1_000_000, 0)
	s := openStore(t, dir, func(o *Options) { o.TTL = time.Hour })
	s.now = func() time.Time { return now }
	require.NoError(t, s.Put("hour", "U8", nil, payload(5000, 1)))
	require.NoError(t, s.PutTTL("minute", "U8", nil, payload(5000, 2), time.Minute))
	require.NoError(t, s.PutTTL("forever", "U8", nil, payload(5000, 3), 0))
	info, err := s.Stat("minute")
	require.NoError(t, err)
	require.Equal(t, now.Add(time.Minute), info.Expires)

	now = now.Add(2 * time.Minute)
	_, err = s.Get("minute")
	require.ErrorIs(t, err, errs.ErrNotFound)
	_, err = s.Get("hour")
	require.NoError(t, err)

	now = now.Add(2 * time.Hour)
	_, err = s.Stat("hour")
	require.ErrorIs(t, err, errs.ErrNotFound)
	require.NoError(t, s.GC())
	st := s.Stats()
	require.Equal(t, 1, st.Entries, "GC removed the expired entry")
	require.Equal(t, uint64(2), st.Expired)
	_, err = s.Get("forever")
	require.NoError(t, err)
}

func TestStore_EncryptionAtRest(t *testing.T) {
	dir := t.TempDir()
	key := bytes.Repeat([]byte{7}, 32)
	secret := bytes.Repeat([]byte("secret weights! "), 4096) // 64 KiB, lands in the value log
	s := openStore(t, dir, func(o *Options) { o.EncryptionKey = key })
	// The small value is stored raw (too short to compress), so without
	// encryption its plaintext would be on disk.
	require.NoError(t, s.Put("k", "U8", nil, secret))
	require.NoError(t, s.Put("small", "U8", nil, []byte("tiny secret value")))
	require.NoError(t, s.Close())

	// No file holds the plaintext.
	files, err := filepath.Glob(filepath.Join(dir, "*"))
	require.NoError(t, err)
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		require.False(t, bytes.Contains(b, []byte("tiny secret value")), f)
	}

	_, err = Open(&Options{Dir: dir})
	require.Error(t, err, "opening without the key fails")
	_, err = Open(&Options{Dir: dir, EncryptionKey: bytes.Repeat([]byte{8}, 32)})
	require.ErrorContains(t, err, "encryption key")

	s = openStore(t, dir, func(o *Options) { o.EncryptionKey = key })
	v, err := s.Get("k")
	require.NoError(t, err)
	require.Equal(t, secret, v.Data)

	_, err = Open(&Options{Dir: t.TempDir(), EncryptionKey: []byte("short")})
	require.ErrorContains(t, err, "want 16, 24 or 32")
}

func TestStore_RefusesWritesIntoTheReserve(t *testing.T) {
	s := openStore(t, "")
	require.NoError(t, s.Put("a", "U8", nil, payload(100, 1)))
	s.reserve = 1 << 62 // more than any disk has free
	err := s.Put("b", "U8", nil, payload(100, 2))
	require.ErrorIs(t, err, errs.ErrNoSpace)
	require.Contains(t, err.Error(), s.Dir())
	_, err = s.Get("a")
	require.NoError(t, err, "reads go on")
	require.Equal(t, uint64(1), s.Stats().PutErrors)
}

func TestStore_DiskBytesInStats(t *testing.T) {
	s := openStore(t, "")
	require.NoError(t, s.Put("a", "U8", nil, payload(1<<20, 1)))
	st := s.Stats()
	require.Positive(t, st.DiskBytes)
}
