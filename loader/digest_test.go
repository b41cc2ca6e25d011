package loader

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDigestFile(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	data := make([]byte, 3<<20+17)
	_, _ = rand.Read(data)
	require.NoError(t, os.WriteFile(a, data, 0o644))
	require.NoError(t, os.WriteFile(b, data, 0o644))
	da, ida, err := digestFile(a)
	require.NoError(t, err)
	db, _, err := digestFile(b)
	require.NoError(t, err)
	require.Equal(t, da, db, "same content, same digest")
	require.Equal(t, int64(len(data)), ida.Size)
	back, err := ParseDigest(da.String())
	require.NoError(t, err)
	require.Equal(t, da, back)
	data[1<<20] ^= 1
	require.NoError(t, os.WriteFile(b, data, 0o644))
	db, _, err = digestFile(b)
	require.NoError(t, err)
	require.NotEqual(t, da, db)
	_, err = ParseDigest("sha256:00")
	require.Error(t, err)
	_, _, err = digestFile(dir)
	require.Error(t, err)
}

// go test ./loader -run '^$' -bench digestFile
func BenchmarkDigestFile(b *testing.B) {
	p := filepath.Join(b.TempDir(), "f")
	data := make([]byte, 64<<20)
	_, _ = rand.Read(data)
	require.NoError(b, os.WriteFile(p, data, 0o644))
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, _, err := digestFile(p); err != nil {
			b.Fatal(err)
		}
	}
}
