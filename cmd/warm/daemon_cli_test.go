package main

import (
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Without --server, every command that can work through a daemon finds
// the warm serve that holds the directory (its socket in the directory)
// and uses it; those that need the directory alone say so.
func TestDaemon_FoundByTheCommandsItHolds(t *testing.T) {
	dir := t.TempDir()
	model, err := filepath.Abs(testModel)
	require.NoError(t, err)
	startDaemon(t, "", nil, dir, filepath.Join(dir, "serve.sock"), filepath.Dir(model))
	w := func(in string, args ...string) result {
		var r io.Reader
		if in != "" {
			r = strings.NewReader(in)
		}
		return runWarm(t, "", nil, r, append([]string{"--dir", dir}, args...)...)
	}
	ok := func(r result) result {
		t.Helper()
		require.Equal(t, 0, r.code, string(r.stderr))
		require.NotContains(t, string(r.stderr), "in use")
		require.NotContains(t, string(r.stderr), "directly")
		return r
	}

	ok(w("the output", "value", "put", "outputs", "p1"))
	r := ok(w("", "value", "get", "-v", "outputs", "p1"))
	require.Equal(t, "the output", string(r.stdout))
	require.Equal(t, "served-by: l1\n", string(r.stderr), "the daemon's RAM")

	r = ok(w("", model))
	require.Contains(t, string(r.stdout), "62 tensors")
	r = ok(w("", "get", "-v", model, "Const_61"))
	require.Equal(t, "served-by: l2\n", string(r.stderr), "warmed by the daemon into its directory")
	require.Equal(t, tensorsOf(t, model)["Const_61"], r.stdout)
	r = ok(w("", "load", "--json", model))
	require.Contains(t, string(r.stdout), `"tensors":62`)
	r = ok(w("", "stats", "--json"))
	var s statsJSON
	require.NoError(t, json.Unmarshal(r.stdout, &s))
	require.Equal(t, 62, s.Entries-1, "the model's tensors and the value")

	ok(w("", "value", "del", "outputs", "p1"))
	r = w("", "value", "get", "outputs", "p1")
	require.Equal(t, 1, r.code)
	require.Contains(t, string(r.stderr), "not found")
	ok(w("again", "value", "put", "outputs", "p2"))
	ok(w("", "value", "drop", "outputs"))
	require.Equal(t, 1, w("", "value", "get", "outputs", "p2").code)

	for _, args := range [][]string{{"gc"}, {"verify"}, {"ls"}, {"value", "ls"}, {"evict", model}} {
		r = w("", args...)
		require.Equal(t, 1, r.code, "%v: %s", args, r.stderr)
		require.Contains(t, string(r.stderr), "needs the cache directory itself", args)
		require.Contains(t, string(r.stderr), "stop that daemon", args)
	}
}

// --server is honoured by value; a daemon in $XDG_RUNTIME_DIR is used for
// the directory it serves, never for another.
func TestDaemon_ServerFlagAndRuntimeDir(t *testing.T) {
	runtime := t.TempDir()
	served, other, elsewhere := t.TempDir(), t.TempDir(), filepath.Join(t.TempDir(), "b.sock")
	xdg := filepath.Join(runtime, "modelcache.sock")
	startDaemon(t, "", nil, served, xdg)
	startDaemon(t, "", nil, other, elsewhere) // at a socket no one looks for
	env := []string{"XDG_RUNTIME_DIR=" + runtime}

	// --server: the value goes to the daemon, whatever --dir says.
	r := runWarm(t, "", nil, strings.NewReader("by flag"), "--dir", t.TempDir(), "--server", xdg, "value", "put", "ns", "k")
	require.Equal(t, 0, r.code, string(r.stderr))
	r = runWarm(t, "", env, nil, "--dir", served, "value", "get", "ns", "k")
	require.Equal(t, 0, r.code, string(r.stderr))
	require.Equal(t, "by flag", string(r.stdout))

	// The other directory is held by a daemon at a socket not looked for:
	// the $XDG_RUNTIME_DIR one serves another directory and is not used.
	r = runWarm(t, "", env, nil, "--dir", other, "value", "get", "ns", "k")
	require.Equal(t, 1, r.code, string(r.stderr))
	require.Contains(t, string(r.stderr), "in use")
	require.Contains(t, string(r.stderr), "--server")
	require.Empty(t, r.stdout)
	r = runWarm(t, "", env, nil, "--dir", other, "--server", elsewhere, "value", "get", "ns", "k")
	require.Equal(t, 1, r.code)
	require.Contains(t, string(r.stderr), "not found", "asked the daemon named")

	// A command that needs the directory says that --server does not help.
	r = runWarm(t, "", nil, nil, "--dir", t.TempDir(), "--server", xdg, "gc")
	require.Equal(t, 0, r.code, string(r.stderr))
	require.Contains(t, string(r.stderr), "--server is not used")
}
