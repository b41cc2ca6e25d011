package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/internal/testmodels"
	"github.com/modelcache/modelcache/internal/testredis"
)

// daemonArgs are the arguments of a warm serve on dir at socket whose
// clients read models under roots: the one place tests of this file say
// how a daemon is started. Each root is a --root where warm serve has the
// flag (it reads files by path only inside them).
func daemonArgs(dir, socket string, roots ...string) []string {
	args := []string{"--dir", dir, "serve", "--socket", socket}
	if serveHasRoot() {
		for _, r := range roots {
			args = append(args, "--root", r)
		}
	}
	return args
}

// serveHasRoot reports whether warm serve takes --root.
var serveHasRoot = sync.OnceValue(func() bool {
	out, _ := exec.Command(warmBin, "serve", "--help").Output()
	return bytes.Contains(out, []byte("--root"))
})

// startDaemon starts warm serve in the working directory cwd (with env
// added to a clean environment) and waits, bounded, for its socket; the
// test stops it.
func startDaemon(t *testing.T, cwd string, env []string, dir, socket string, roots ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(warmBin, daemonArgs(dir, socket, roots...)...)
	cmd.Dir = cwd
	cmd.Env = append([]string{"HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH")}, env...)
	cmd.SysProcAttr = childProcAttr()
	var stderr syncBuffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unix", socket); err == nil {
			c.Close()
			return cmd
		}
		require.False(t, time.Now().After(deadline), "warm serve did not come up: %s", stderr.String())
		time.Sleep(20 * time.Millisecond)
	}
}

// warmIn is warm run in the working directory cwd.
func warmIn(t *testing.T, cwd string, args ...string) result {
	t.Helper()
	return runWarm(t, cwd, warmExtraEnv, nil, args...)
}

// runWarm runs warm in cwd ("": the test's), with env added to a clean
// environment and stdin read from in.
func runWarm(t *testing.T, cwd string, env []string, in io.Reader, args ...string) result {
	t.Helper()
	cmd := exec.Command(warmBin, args...)
	cmd.Dir = cwd
	cmd.Stdin = in
	cmd.Env = append([]string{"HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH")}, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return result{code, stdout.Bytes(), stderr.Bytes()}
}

// A relative path with a ':' in it is a path, not a name: through the
// daemon (whose working directory holds another file of that name) get
// and load read the file in the client's working directory.
func TestServer_RelativePathWithColon(t *testing.T) {
	mine, theirs := t.TempDir(), t.TempDir()
	const name = "x:y.safetensors"
	require.NoError(t, testmodels.WriteSyntheticBF16(filepath.Join(mine, name), 1<<20, 1))
	require.NoError(t, testmodels.WriteSyntheticBF16(filepath.Join(theirs, name), 1<<20, 2))
	want := tensorsOf(t, filepath.Join(mine, name))
	other := tensorsOf(t, filepath.Join(theirs, name))
	var tensor string
	for n := range want {
		if !bytes.Equal(want[n], other[n]) {
			tensor = n
			break
		}
	}
	require.NotEmpty(t, tensor, "the two files differ")

	socket := filepath.Join(t.TempDir(), "mc.sock")
	startDaemon(t, theirs, nil, t.TempDir(), socket, mine, theirs)

	r := warmIn(t, mine, "--server", socket, "get", "-v", name, tensor)
	require.Equal(t, 0, r.code, string(r.stderr))
	require.NotContains(t, string(r.stderr), "reading the files directly")
	require.True(t, bytes.Equal(want[tensor], r.stdout), "the bytes of the file in the client's directory")

	r = warmIn(t, mine, "--server", socket, "load", "--json", name)
	require.Equal(t, 0, r.code, string(r.stderr))
	var lr loadResult
	require.NoError(t, json.Unmarshal(r.stdout, &lr))
	require.Equal(t, filepath.Join(mine, name), lr.Path)
	require.Equal(t, len(want), lr.Tensors)
}

// A malformed --redis is a usage error naming the flag, for every command
// (warm serve too), before anything runs.
func TestRedis_MalformedAddressIsAUsageError(t *testing.T) {
	for _, addr := range []string{"localhost", "host:port/0", "127.0.0.1:6379/0", "127.0.0.1:", ":6379",
		"127.0.0.1:6379,localhost", "unix:///tmp/redis.sock", "http://127.0.0.1:6379", "redis://127.0.0.1:6379/zero",
		"redis://127.0.0.1:6379?dial_timeout=1s"} {
		r := warm(t, "--dir", t.TempDir(), "--redis", addr, "get", testModel, "Const_61")
		require.Equal(t, 2, r.code, "%s: %s", addr, r.stderr)
		require.Contains(t, string(r.stderr), "--redis", addr)
		require.Empty(t, r.stdout, addr)
	}
	r := warm(t, "--dir", t.TempDir(), "--redis", "localhost", "serve", "--socket", filepath.Join(t.TempDir(), "s"))
	require.Equal(t, 2, r.code, string(r.stderr))
	require.Contains(t, string(r.stderr), "--redis")
	// A password in a URL is never echoed.
	r = warm(t, "--dir", t.TempDir(), "--redis", "redis://u:sesame@127.0.0.1:1/x", "stats")
	require.Equal(t, 2, r.code, string(r.stderr))
	require.NotContains(t, string(r.stderr), "sesame")
}

// A redis:// URL with user, password and database reaches that database;
// warm serve says at start whether L3 is up, and why not.
func TestRedis_URLWithUserPasswordAndDB(t *testing.T) {
	srv := testredis.Start(t, "requirepass sesame")
	url := "redis://default:sesame@" + srv.Addr + "/3"
	a := []string{"--dir", t.TempDir(), "--redis", url}
	b := []string{"--dir", t.TempDir(), "--redis", url}
	r := warm(t, append(a, "get", "-v", testModel, "Const_61")...)
	require.Equal(t, 0, r.code, string(r.stderr))
	require.Equal(t, "served-by: source\n", string(r.stderr))
	r = warm(t, append(b, "get", "-v", testModel, "Const_61")...)
	require.Equal(t, 0, r.code, string(r.stderr))
	require.Equal(t, "served-by: l3\n", string(r.stderr))
	out, err := srv.CLI("-a", "sesame", "--no-auth-warning", "-n", "3", "dbsize")
	require.NoError(t, err, out)
	n, err := strconv.Atoi(strings.TrimSpace(out))
	require.NoError(t, err, out)
	require.Positive(t, n, "the entries are in database 3")
	out, err = srv.CLI("-a", "sesame", "--no-auth-warning", "-n", "0", "dbsize")
	require.NoError(t, err, out)
	require.Equal(t, "0", strings.TrimSpace(out), "and not in database 0")

	r = warm(t, append(b, "stats", "--json")...)
	require.Equal(t, 0, r.code, string(r.stderr))
	var s statsJSON
	require.NoError(t, json.Unmarshal(r.stdout, &s))
	require.True(t, s.L3.Up, s.L3.Error)
	require.NotContains(t, s.L3.Redis, "sesame")

	// warm serve's first lines: L3 up; with a wrong password, down and why.
	for _, c := range []struct{ url, want string }{
		{url, "l3: redis redis://default:xxxxx@" + srv.Addr + "/3 up"},
		{"redis://default:wrong@" + srv.Addr, "down: "},
	} {
		socket := filepath.Join(t.TempDir(), "s")
		cmd := exec.Command(warmBin, "--dir", t.TempDir(), "--redis", c.url, "serve", "--socket", socket)
		cmd.SysProcAttr = childProcAttr()
		var stderr syncBuffer
		cmd.Stderr = &stderr
		require.NoError(t, cmd.Start())
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(stderr.String(), "l3: ") {
			require.False(t, time.Now().After(deadline), "no l3 line: %s", stderr.String())
			time.Sleep(20 * time.Millisecond)
		}
		require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
		require.NoError(t, cmd.Wait())
		require.Contains(t, stderr.String(), c.want)
		require.NotContains(t, stderr.String(), "sesame")
	}
}

// syncBuffer is a bytes.Buffer a process writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
