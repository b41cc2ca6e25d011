package loader

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
)

func TestParseIdentity(t *testing.T) {
	id := Identity{Path: "/m/a b.safetensors", Size: 12, ModTime: 1795939330365080542, Ctime: 1795939330365080543, Dev: 65024, Inode: 9977985}
	got, err := ParseIdentity(id.String())
	require.NoError(t, err)
	require.Equal(t, id, got)
	for _, bad := range []string{"", "/m", "/m\x001:2:3:4", "/m\x001:2:3:4:x", "/m\x00-1:2:3:4:5"} {
		_, err := ParseIdentity(bad)
		require.ErrorIs(t, err, errs.ErrCorrupt, "%q", bad)
	}
}

// Identities are read back from the cache's own records: whatever those
// hold, parsing never panics, and what parses spells itself back.
func FuzzParseIdentity(f *testing.F) {
	f.Add("/m/a.safetensors\x0012:1795939330365080542:1795939330365080543:65024:9977985")
	f.Add("\x00::::")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseIdentity(s)
		if err != nil {
			return
		}
		again, err := ParseIdentity(id.String())
		require.NoError(t, err)
		require.Equal(t, id, again)
	})
}
