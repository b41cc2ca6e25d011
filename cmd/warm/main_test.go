package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/internal/testmodels"
)

var warmBin string

func TestMain(m *testing.M) {
	if socket := os.Getenv("MODELCACHE_ECHO_SOCKET"); socket != "" {
		echo(socket) // BenchmarkUnixRoundTrip's other process
		return
	}
	if out := os.Getenv("MODELCACHE_MAXRSS_OUT"); out != "" {
		os.Exit(maxRSSWrapper(out)) // TestValuePut_PipeMemoryBounded's measuring parent
	}
	dir, err := os.MkdirTemp("", "warm-test")
	if err != nil {
		panic(err)
	}
	warmBin = filepath.Join(dir, "warm")
	if out, err := exec.Command("go", "build", "-o", warmBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building warm: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	code           int
	stdout, stderr []byte
}

// warmExtraEnv is added to the environment of the next warm runs.
var warmExtraEnv []string

// warm runs the binary in a new process with a clean environment.
func warm(t *testing.T, args ...string) result {
	t.Helper()
	return warmStdin(t, nil, args...)
}

// warmStdin is warm with stdin read from in.
func warmStdin(t *testing.T, in io.Reader, args ...string) result {
	t.Helper()
	return runWarm(t, "", warmExtraEnv, in, args...)
}

const testModel = "../../testdata/models/posenet.bf16.safetensors"

// tensorsOf parses a safetensors file independently of package loader and
// returns each tensor's bytes by name.
func tensorsOf(t *testing.T, path string) map[string][]byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	n := binary.LittleEndian.Uint64(raw)
	var idx map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(raw[8:8+n], &idx))
	out := make(map[string][]byte)
	for name, msg := range idx {
		if name == "__metadata__" {
			continue
		}
		var ti struct {
			Offsets [2]uint64 `json:"data_offsets"`
		}
		require.NoError(t, json.Unmarshal(msg, &ti))
		out[name] = raw[8+n+ti.Offsets[0] : 8+n+ti.Offsets[1]]
	}
	return out
}

// copyModel copies the bundled model to path, for tests that change or
// delete the file.
func copyModel(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(testModel)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, b, 0o644))
}

func models(t *testing.T) []string {
	files := []string{testModel}
	shared, _ := filepath.Glob("../../../shared/testdata/models/*.safetensors")
	if len(shared) == 0 {
		t.Log("../shared not present: testing the bundled model only")
	}
	return append(files, shared...)
}

// warm, then in a new process for every tensor: warm get returns the file's
// bytes and says L2 served them.
func TestWarmThenGet_EveryTensorFromL2(t *testing.T) {
	dir := t.TempDir()
	files := models(t)
	r := warm(t, append([]string{"--dir", dir}, files...)...)
	require.Equal(t, 0, r.code, "stderr: %s", r.stderr)
	require.Contains(t, string(r.stdout), "cached now")
	for _, f := range files {
		tensors := tensorsOf(t, f)
		names := make([]string, 0, len(tensors))
		for n := range tensors {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, name := range names {
			r := warm(t, "get", "--dir", dir, "-v", f, name)
			require.Equal(t, 0, r.code, "%s %s: %s", f, name, r.stderr)
			require.Equal(t, "served-by: l2\n", string(r.stderr), "%s %s", f, name)
			require.True(t, bytes.Equal(tensors[name], r.stdout), "%s %s: bytes differ", f, name)
		}
	}
	// A second run skips everything.
	r = warm(t, append([]string{"--dir", dir}, files...)...)
	require.Equal(t, 0, r.code)
	require.Contains(t, string(r.stdout), " 0 cached now")
}

func TestGet_RepeatShowsL1(t *testing.T) {
	dir := t.TempDir()
	r := warm(t, "get", "--dir", dir, "-v", "-n", "2", testModel, "Const_61")
	require.Equal(t, 0, r.code, "%s", r.stderr)
	require.Equal(t, "served-by: source\nserved-by: l1\n", string(r.stderr))
	require.Equal(t, tensorsOf(t, testModel)["Const_61"], r.stdout)
}

func TestStats_JSON(t *testing.T) {
	dir := t.TempDir()
	require.Equal(t, 0, warm(t, "--dir", dir, testModel).code)
	r := warm(t, "stats", "--dir", dir, "--json")
	require.Equal(t, 0, r.code, "%s", r.stderr)
	var s map[string]any
	require.NoError(t, json.Unmarshal(r.stdout, &s))
	require.Equal(t, 62.0, s["entries"])
	require.Equal(t, 2516390.0, s["logical_bytes"])
	stored := s["stored_bytes"].(float64)
	require.Greater(t, stored, 0.0)
	require.Less(t, stored, 2516390.0, "BF16 weights compress")
}

func TestDir_FromEnvironment(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(warmBin, testModel)
	cmd.Env = []string{"MODELCACHE_DIR=" + dir, "HOME=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), dir)
	require.FileExists(t, filepath.Join(dir, "MANIFEST"))
}

// A bad model file: exit 1, one line on stderr naming the file and its
// defect, and the cache still serves what it held.
func TestWarm_BadFileLeavesCacheIntact(t *testing.T) {
	dir := t.TempDir()
	require.Equal(t, 0, warm(t, "--dir", dir, testModel).code)
	want := tensorsOf(t, testModel)["Const_10"]

	good, err := os.ReadFile(testModel)
	require.NoError(t, err)
	type badFile struct {
		file []byte
		want string
	}
	bad := map[string]badFile{
		"truncated-model":      {good[:len(good)/2], "past the"},
		"lying-length-model":   {append(binary.LittleEndian.AppendUint64(nil, 1<<40), good[8:]...), "exceeds"},
		"unknown-dtype-model":  {bytes.Replace(good, []byte(`"BF16"`), []byte(`"BF17"`), 1), "unknown dtype"},
		"duplicate-name-model": {bytes.Replace(good, []byte(`"Const_60"`), []byte(`"Const_61"`), 1), "appears twice"},
	}
	for name, c := range testmodels.Malformed() {
		bad[name] = badFile{c.File, c.Want}
	}
	require.GreaterOrEqual(t, len(bad), 20)
	tmp := t.TempDir()
	for name, tc := range bad {
		p := filepath.Join(tmp, strings.ReplaceAll(name, " ", "-")+".safetensors")
		require.NoError(t, os.WriteFile(p, tc.file, 0o644))
		r := warm(t, "--dir", dir, p)
		require.Equal(t, 1, r.code, name)
		lines := strings.Split(strings.TrimSpace(string(r.stderr)), "\n")
		require.Len(t, lines, 1, "%s: %s", name, r.stderr)
		require.Contains(t, lines[0], p, name)
		require.Contains(t, lines[0], tc.want, name)
		require.NotContains(t, string(r.stderr), "goroutine", name)

		r = warm(t, "get", "--dir", dir, "-v", testModel, "Const_10")
		require.Equal(t, 0, r.code, "%s: %s", name, r.stderr)
		require.Equal(t, "served-by: l2\n", string(r.stderr))
		require.Equal(t, want, r.stdout)
	}
	// A bad file among good ones: the good ones are warmed, the status is 1.
	p := filepath.Join(tmp, "empty-file.safetensors")
	r := warm(t, "--dir", t.TempDir(), p, testModel)
	require.Equal(t, 1, r.code)
	require.Contains(t, string(r.stdout), "62 cached now")
}

func TestGet_Errors(t *testing.T) {
	dir := t.TempDir()
	r := warm(t, "get", "--dir", dir, testModel, "no-such-tensor")
	require.Equal(t, 1, r.code)
	require.Contains(t, string(r.stderr), "no-such-tensor")
	require.Contains(t, string(r.stderr), "not found")
	r = warm(t, "get", "--dir", dir, "/no/such/file", "x")
	require.Equal(t, 1, r.code)
	require.Contains(t, string(r.stderr), "/no/such/file")
}

// A TTL too long to add to the clock means no expiry, not an overflow into
// the past that expired everything at once.
func TestWarm_HugeTTLDoesNotExpire(t *testing.T) {
	dir := t.TempDir()
	require.Equal(t, 0, warm(t, "--dir", dir, "--ttl", "2500000h", testModel).code)
	r := warm(t, "get", "--dir", dir, "--ttl", "2500000h", "-v", testModel, "Const_1")
	require.Equal(t, 0, r.code, "%s", r.stderr)
	require.Equal(t, "served-by: l2\n", string(r.stderr))
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"--no-such-flag", testModel},
		{"get", testModel},
		{"get", "-n", "0", testModel, "Const_1"},
		{"stats", "extra"},
		{"--memory", "lots", testModel},
		{"--memory", "0", testModel},
		{"--ttl", "-1h", testModel},
		{"--disk", "100KiB", testModel},
		{"get", "--ttl", "-5m", testModel, "Const_1"},
	} {
		r := warm(t, args...)
		require.Equal(t, 2, r.code, "%v: %s", args, r.stderr)
		require.Contains(t, string(r.stderr), "warm --help", "%v", args)
		for _, a := range args {
			if strings.HasPrefix(a, "--") && a != "--no-such-flag" {
				require.Contains(t, string(r.stderr), a, "the message names the flag")
			}
		}
	}
	r := warm(t, "--help")
	require.Equal(t, 0, r.code)
	require.Contains(t, string(r.stdout), "Examples:")
}

// A directory held by another process is refused at once, naming it.
func TestWarm_DirectoryInUse(t *testing.T) {
	dir := t.TempDir()
	holdDir(t, dir)
	r := warm(t, "--dir", dir, testModel)
	require.Equal(t, 1, r.code)
	require.Contains(t, string(r.stderr), dir)
	require.Contains(t, string(r.stderr), "in use by another process")
}

// Every subcommand's help has examples.
func TestHelp_EverySubcommandHasExamples(t *testing.T) {
	for _, sub := range []string{"get", "stats", "verify", "gc", "evict", "ls", "bench", "load", "sim", "value put", "value get", "value del", "value drop", "value ls"} {
		r := warm(t, append(strings.Fields(sub), "--help")...)
		require.Equal(t, 0, r.code, sub)
		require.Contains(t, string(r.stdout), "Examples:", sub)
		require.Contains(t, string(r.stdout), "--dir", "%s shows the shared flags", sub)
	}
}
