package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestValue_PutGetLsDelDrop(t *testing.T) {
	dir := t.TempDir()
	w := func(in string, args ...string) result {
		var r *strings.Reader
		if in != "" {
			r = strings.NewReader(in)
		}
		if r == nil {
			return warm(t, append([]string{"--dir", dir}, args...)...)
		}
		return warmStdin(t, r, append([]string{"--dir", dir}, args...)...)
	}
	require.Equal(t, 0, w("the output", "value", "put", "outputs", "prompt 1").code)
	require.Equal(t, 0, w("an input", "value", "put", "--ttl", "1h", "inputs", "img").code)

	r := w("", "value", "get", "-v", "outputs", "prompt 1")
	require.Equal(t, 0, r.code, string(r.stderr))
	require.Equal(t, "the output", string(r.stdout))
	require.Equal(t, "served-by: l2\n", string(r.stderr))

	r = w("", "value", "get", "outputs", "absent")
	require.Equal(t, 1, r.code)
	require.Empty(t, r.stdout)
	require.Equal(t, 1, bytes.Count(r.stderr, []byte("\n")), "one line: %s", r.stderr)
	require.Contains(t, string(r.stderr), "not found")

	r = w("", "value", "ls", "--json")
	require.Equal(t, 0, r.code, string(r.stderr))
	var listed []valueJSON
	for _, line := range bytes.Split(bytes.TrimSpace(r.stdout), []byte("\n")) {
		var v valueJSON
		require.NoError(t, json.Unmarshal(line, &v))
		listed = append(listed, v)
	}
	require.Len(t, listed, 2)
	require.Equal(t, "inputs", listed[0].Namespace, "in key order")
	require.False(t, listed[0].Expires.IsZero())
	require.Equal(t, uint64(len("an input")), listed[0].LogicalBytes)
	require.True(t, listed[1].Expires.IsZero())
	r = w("", "value", "ls", "inputs")
	require.Contains(t, string(r.stdout), `"img"`)
	require.NotContains(t, string(r.stdout), "prompt")

	require.Equal(t, 0, w("", "value", "del", "inputs", "img").code)
	require.Equal(t, 1, w("", "value", "get", "inputs", "img").code)
	require.Equal(t, 0, w("", "value", "drop", "outputs").code)
	require.Equal(t, 1, w("", "value", "get", "outputs", "prompt 1").code)
	r = w("", "value", "ls")
	require.Equal(t, 1, bytes.Count(r.stdout, []byte("\n")), "the header only: %s", r.stdout)

	// Every process's value reads are in warm stats.
	r = w("", "stats", "--json")
	require.Equal(t, 0, r.code, string(r.stderr))
	var s statsJSON
	require.NoError(t, json.Unmarshal(r.stdout, &s))
	require.Equal(t, uint64(4), s.Measures.Values.Requests)
	require.Equal(t, uint64(1), s.Measures.Values.Hits)
	require.Equal(t, uint64(3), s.Measures.Namespaces["outputs"].Requests)
	// A miss in a namespace no process measured by name before counts
	// with the other namespaces: a lookup keeps nothing (issue 20).
	require.NotContains(t, s.Measures.Namespaces, "inputs")
	require.Equal(t, uint64(1), s.Measures.OtherNamespaces.Absent)
	r = w("", "stats")
	require.Contains(t, string(r.stdout), `"outputs"`)
	require.Contains(t, string(r.stdout), "T MEASURED")
	require.Contains(t, string(r.stdout), "(other namespaces)")

	// A file on stdin is streamed in; get streams it out.
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	f, err := os.CreateTemp(t.TempDir(), "value")
	require.NoError(t, err)
	_, err = f.Write(big)
	require.NoError(t, err)
	_, err = f.Seek(0, 0)
	require.NoError(t, err)
	r = warmStdin(t, f, "--dir", dir, "value", "put", "big", "file")
	require.Equal(t, 0, r.code, string(r.stderr))
	r = w("", "value", "get", "big", "file")
	require.Equal(t, 0, r.code, string(r.stderr))
	require.True(t, bytes.Equal(big, r.stdout))

	// Usage errors.
	require.Equal(t, 2, w("", "value", "get", "outputs").code)
	require.Equal(t, 2, w("x", "value", "put", "--shape", "2,2", "ns", "k").code)
	require.Equal(t, 1, w("x", "value", "put", "", "k").code, "an empty namespace")
}
