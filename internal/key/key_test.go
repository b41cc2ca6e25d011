package key

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/loader"
)

func TestKey_RoundTrip(t *testing.T) {
	id := loader.Identity{Path: "/m/a.safetensors", Size: 10, ModTime: 2, Ctime: 3, Dev: 4, Inode: 5}
	for _, c := range []struct {
		g    Group
		name string
	}{
		{File(id), "w"},
		{File(id), "with\x00nul"},
		{Digest("blake3:00ff"), "layer.0"},
		{Values("outputs@v1", 7), "prompt\x00with nul"},
		{Values("ns", 0), ""},
	} {
		k := c.g.Key(c.name)
		g, name, ok := Parse(k)
		require.True(t, ok, "%q", k)
		require.Equal(t, c.g, g)
		require.Equal(t, c.name, name)
		require.Equal(t, OwnerOf(c.g.Kind, c.g.Head), Owner(k))
	}
}

// The spellings of tensor keys are those of directories written before this
// package: changing them would orphan every cached entry.
func TestKey_TensorSpellingIsStable(t *testing.T) {
	id := loader.Identity{Path: "/m/a.safetensors", Size: 10, ModTime: 2, Ctime: 3, Dev: 4, Inode: 5}
	require.Equal(t, "/m/a.safetensors\x0010:2:3:4:5\x00w", File(id).Key("w"))
	require.Equal(t, id.String()+"\x00w", File(id).Key("w"))
	require.Equal(t, id.String(), File(id).Identity())
	require.Equal(t, "blake3:ab\x00content\x00w", Digest("blake3:ab").Key("w"))
}

func TestKey_KindsNeverMeet(t *testing.T) {
	g, _, ok := Parse(Values("/m/a.safetensors", 1).Key("x"))
	require.True(t, ok)
	require.Equal(t, Value, g.Kind)
	// A namespace that looks like a path is still a value; a path that
	// looks like a value cannot exist (paths are absolute).
	require.NotEqual(t, Owner(Values("/m", 1).Key("x")), Owner(File(loader.Identity{Path: "/m"}).Key("x")))
	for _, bad := range []string{"", "x", "x\x00y", "\x00v\x00ns\x00notanumber\x00k", "blake3:ab\x00v1\x00t", "\x00v\x00\x001\x00k"} {
		_, _, ok := Parse(bad)
		require.False(t, ok, "%q", bad)
	}
	require.Equal(t, "", Owner("nonul"))
}

func TestCheckValue(t *testing.T) {
	require.NoError(t, CheckValue("ns", ""))
	require.Error(t, CheckValue("", "k"))
	require.Error(t, CheckValue("a\x00b", "k"))
	require.Error(t, CheckValue(string(make([]byte, MaxNamespace+1)), "k"))
	require.Error(t, CheckValue("ns", string(make([]byte, MaxValueKey+1))))
	// A namespace is text: a Prometheus label value, a name in JSON.
	require.NoError(t, CheckValue("outputs@1:2:3:4:5", "\xff\x00any key"))
	require.NoError(t, CheckValue("résumé/é", "k"))
	for _, bad := range []string{"\xff", "a\xc3", "tab\there", "new\nline", "del\x7f", "c1\u0085", "\xed\xa0\x80"} {
		err := CheckValue(bad, "k")
		require.ErrorIs(t, err, errs.ErrInvalidArgument, "%q", bad)
		require.ErrorIs(t, CheckNamespace(bad), errs.ErrInvalidArgument, "%q", bad)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("/m/a\x001:2:3:4:5\x00w")
	f.Add("blake3:ab\x00content\x00w")
	f.Add("\x00v\x00ns\x003\x00k\x00")
	f.Add("\x00v\x00\xff\x000\x00k")           // a namespace no entry point accepts (older builds did)
	f.Add("\x00v\x00r\xc3\xa9s\x0012\x00\xff") // UTF-8 namespace, any key
	f.Fuzz(func(t *testing.T, s string) {
		g, name, ok := Parse(s)
		if !ok {
			return
		}
		// What parses spells itself back exactly.
		if got := g.Key(name); got != s {
			t.Fatalf("Parse(%q) = %+v %q, which spells %q", s, g, name, got)
		}
		if Owner(s) != OwnerOf(g.Kind, g.Head) {
			t.Fatalf("Owner(%q) = %q, want %q", s, Owner(s), OwnerOf(g.Kind, g.Head))
		}
		// A namespace CheckNamespace accepts is text: a label value no
		// scrape refuses.
		if g.Kind == Value && CheckNamespace(g.Head) == nil &&
			(!utf8.ValidString(g.Head) || strings.ContainsFunc(g.Head, unicode.IsControl) || len(g.Head) > MaxNamespace) {
			t.Fatalf("CheckNamespace accepted %q", g.Head)
		}
	})
}
