package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/client"
	"github.com/modelcache/modelcache/internal/testmodels"
)

// startServe starts warm serve as a process and waits (bounded) for its
// socket; the test stops it. args are more flags of warm serve; without
// any, it serves every file (--root /), for tests not about roots.
func startServe(t testing.TB, dir, socket string, args ...string) *exec.Cmd {
	t.Helper()
	if len(args) == 0 {
		args = []string{"--root", "/"}
	}
	cmd := exec.Command(warmBin, append([]string{"--dir", dir, "serve", "--socket", socket}, args...)...)
	cmd.SysProcAttr = childProcAttr()
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unix", socket); err == nil {
			c.Close()
			return cmd
		}
		require.False(t, time.Now().After(deadline), "warm serve did not come up")
		time.Sleep(20 * time.Millisecond)
	}
}

func TestServe_ClientsDaemonDeathAndRestart(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(t.TempDir(), "mc.sock")
	model, err := filepath.Abs("../../testdata/models/posenet.bf16.safetensors")
	require.NoError(t, err)
	daemon := startServe(t, dir, socket)

	// A second process on the directory would be refused; through the
	// daemon, the CLI reads it.
	r := warm(t, "--server", socket, "get", "-v", "-n", "2", model, "Const_61")
	require.Equal(t, 0, r.code, string(r.stderr))
	require.Equal(t, "served-by: source\nserved-by: l1\n", string(r.stderr))
	want := r.stdout
	r = warm(t, "--server", socket, "stats", "--json")
	require.Equal(t, 0, r.code, string(r.stderr))
	require.Contains(t, string(r.stdout), `"dir":"`+dir)
	transports := []string{"http", "shm"}
	if runtime.GOOS != "linux" {
		transports = transports[:1]
		r = warm(t, "--server", socket, "load", "--transport", "shm", model)
		require.Equal(t, 2, r.code)
		require.Contains(t, string(r.stderr), "shared memory needs Linux")
	}
	for _, transport := range transports {
		r = warm(t, "--server", socket, "load", "--json", "--transport", transport, model)
		require.Equal(t, 0, r.code, string(r.stderr))
		require.Contains(t, string(r.stdout), `"tensors":62,"bytes":2516390`, transport)
	}

	// The daemon killed: clients get a clear error, and the CLI reads the
	// file itself, saying so.
	require.NoError(t, daemon.Process.Kill())
	_ = daemon.Wait()
	_, err = client.Dial(socket)
	require.ErrorIs(t, err, client.ErrNoServer)
	r = warm(t, "--dir", t.TempDir(), "--server", socket, "get", "-v", model, "Const_61")
	require.Equal(t, 0, r.code, string(r.stderr))
	require.Contains(t, string(r.stderr), "no warm serve daemon answers")
	require.Contains(t, string(r.stderr), "served-by: source")
	require.Equal(t, want, r.stdout)

	// A restarted daemon reopens the directory (the dead one's lock is
	// gone with it) and replaces the stale socket file.
	daemon = startServe(t, dir, socket)
	c, err := client.Dial(socket)
	require.NoError(t, err)
	tn, err := c.Tensor(context.Background(), model, "Const_61")
	require.NoError(t, err)
	// From L2 if the killed daemon's background write had landed.
	require.Contains(t, []string{"l2", "source"}, tn.ServedBy)
	require.Equal(t, want, tn.Data)

	// SIGTERM: a clean stop, exit status 0, the socket removed.
	require.NoError(t, daemon.Process.Signal(syscall.SIGTERM))
	require.NoError(t, daemon.Wait())
	_, err = net.Dial("unix", socket)
	require.Error(t, err)
}

func TestServe_HTTPNeedsATokenOffLoopback(t *testing.T) {
	r := warm(t, "--dir", t.TempDir(), "serve", "--socket", filepath.Join(t.TempDir(), "s"), "--http", "0.0.0.0:0")
	require.Equal(t, 2, r.code)
	require.Contains(t, string(r.stderr), "--http-token-file")
}

// The Python example in docs/ works against a real daemon (CI installs
// Debian's python3).
func TestServe_PythonExample(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("MODELCACHE_CI") != "" {
			t.Fatal("python3 not found, and MODELCACHE_CI is set")
		}
		t.Skip("python3 not found")
	}
	socket := filepath.Join(t.TempDir(), "mc.sock")
	startServe(t, t.TempDir(), socket)
	model, err := filepath.Abs("../../testdata/models/posenet.bf16.safetensors")
	require.NoError(t, err)
	out, err := exec.Command(py, "../../docs/examples/client.py", socket, model, "Const_61").CombinedOutput()
	require.NoError(t, err, string(out))
	require.Equal(t, "62 tensors\nConst_61 BF16 1,1,384,32 24576 bytes from source\nhello\nabsent: ErrNotFound\n", string(out))
}

// fds counts a process's open file descriptors.
func fds(t *testing.T, pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	require.NoError(t, err)
	return len(ents)
}

// A client killed while the daemon streams it a large tensor: the daemon
// lets go of what the request held (its files, its connection) and serves
// on.
func TestServe_ClientKilledMidRead(t *testing.T) {
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		t.Skip("needs /proc")
	}
	model := filepath.Join(t.TempDir(), "big.safetensors")
	require.NoError(t, testmodels.WriteSyntheticBF16(model, 256<<20, 1))
	socket := filepath.Join(t.TempDir(), "mc.sock")
	daemon := startServe(t, t.TempDir(), socket)
	c, err := client.Dial(socket)
	require.NoError(t, err)
	m, err := c.Model(context.Background(), model)
	require.NoError(t, err)
	big := m.Tensors[0]
	for _, tn := range m.Tensors {
		if tn.Bytes > big.Bytes {
			big = tn
		}
	}
	c.Close()
	time.Sleep(100 * time.Millisecond)
	baseline := fds(t, daemon.Process.Pid)

	// The client's stdout is a pipe nobody reads: the transfer stalls
	// mid-tensor, then the client is killed.
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	defer pr.Close()
	cl := exec.Command(warmBin, "--server", socket, "get", model, big.Name)
	cl.Stdout = pw
	require.NoError(t, cl.Start())
	pw.Close()
	deadline := time.Now().Add(10 * time.Second)
	for fds(t, daemon.Process.Pid) <= baseline {
		require.False(t, time.Now().After(deadline), "the request never started")
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, cl.Process.Kill())
	_ = cl.Wait()
	for fds(t, daemon.Process.Pid) > baseline {
		require.False(t, time.Now().After(deadline), "the daemon still holds %d descriptors more", fds(t, daemon.Process.Pid)-baseline)
		time.Sleep(10 * time.Millisecond)
	}
	c, err = client.Dial(socket)
	require.NoError(t, err)
	_, err = c.Tensor(context.Background(), model, m.Tensors[len(m.Tensors)-1].Name)
	require.NoError(t, err)
}

// secretContent is what files no client may read hold.
const secretContent = "TOP-SECRET root:$6$hash:19000:0:99999:7:::\n"

// rootTree is a root holding the test model, and outside it a secret file
// only root may read, with a symlink to it in the root.
func rootTree(t *testing.T) (root, model, secret string) {
	t.Helper()
	base, err := os.MkdirTemp("", "warm-roots")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(base) })
	require.NoError(t, os.Chmod(base, 0o755))
	root = filepath.Join(base, "models")
	require.NoError(t, os.Mkdir(root, 0o755))
	private := filepath.Join(base, "private")
	require.NoError(t, os.Mkdir(private, 0o700))
	secret = filepath.Join(private, "shadow")
	require.NoError(t, os.WriteFile(secret, []byte(secretContent), 0o600))
	b, err := os.ReadFile(testModel)
	require.NoError(t, err)
	model = filepath.Join(root, "model.safetensors")
	require.NoError(t, os.WriteFile(model, b, 0o644))
	require.NoError(t, os.Symlink(secret, filepath.Join(root, "shadow")))
	return root, model, secret
}

// warm serve --root: a client reads files in the roots, and nothing
// outside them however named; the roots come from the flag or from
// MODELCACHE_ROOTS; with none, paths are refused, naming --root.
func TestServe_Roots(t *testing.T) {
	root, model, secret := rootTree(t)
	other := t.TempDir()
	b, err := os.ReadFile(model)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(other, "m.safetensors"), b, 0o644))

	socket := filepath.Join(t.TempDir(), "mc.sock")
	daemon := startServe(t, t.TempDir(), socket, "--root", root, "--root", other)
	for _, p := range []string{model, filepath.Join(other, "m.safetensors")} {
		r := warm(t, "--server", socket, "get", p, "Const_61")
		require.Equal(t, 0, r.code, string(r.stderr))
		require.Len(t, r.stdout, 24576)
	}
	for _, p := range []string{secret, filepath.Join(root, "shadow"), filepath.Join(root, "..", "private", "shadow"), "/proc/self/root" + secret} {
		r := warm(t, "--server", socket, "get", p, "-")
		require.NotEqual(t, 0, r.code, p)
		require.Contains(t, string(r.stderr), "outside every root", p)
		require.NotContains(t, string(r.stdout)+string(r.stderr), "TOP-SECRET", p)
	}
	require.NoError(t, daemon.Process.Signal(syscall.SIGTERM))
	require.NoError(t, daemon.Wait())

	// From the environment, colon-separated. (Some flag, --http, so that
	// startServe adds no --root.)
	t.Setenv("MODELCACHE_ROOTS", other+":"+root)
	daemon = startServe(t, t.TempDir(), socket, "--http", "127.0.0.1:0")
	r := warm(t, "--server", socket, "get", model, "Const_61")
	require.Equal(t, 0, r.code, string(r.stderr))
	r = warm(t, "--server", socket, "get", secret, "-")
	require.Contains(t, string(r.stderr), "outside every root")
	require.NoError(t, daemon.Process.Signal(syscall.SIGTERM))
	require.NoError(t, daemon.Wait())

	// None: paths are refused, and the message says how to allow them.
	t.Setenv("MODELCACHE_ROOTS", "")
	startServe(t, t.TempDir(), socket, "--http", "127.0.0.1:0")
	r = warm(t, "--server", socket, "get", model, "Const_61")
	require.NotEqual(t, 0, r.code)
	require.Contains(t, string(r.stderr), "--root")

	// A root that is not a directory is a usage error.
	r = warm(t, "--dir", t.TempDir(), "serve", "--socket", filepath.Join(t.TempDir(), "s"), "--root", filepath.Join(root, "absent"))
	require.Equal(t, 2, r.code, string(r.stderr))
	require.Contains(t, string(r.stderr), "--root")
}

// An unprivileged user (nobody, by setpriv) asking the daemon, which runs
// as root, for a file only root may read: refused, however it is named,
// by a symlink the user made included. In the roots, the daemon serves
// what its operator put there to everyone on the socket.
func TestServe_UnprivilegedClientReadsNoSecret(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the daemon runs as root and the client as nobody (setpriv)")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv (util-linux) not found")
	}
	root, model, secret := rootTree(t)
	base := filepath.Dir(root)
	// The client's binary, socket and home, all reachable by nobody.
	bin := filepath.Join(base, "warm")
	b, err := os.ReadFile(warmBin)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(bin, b, 0o755))
	home := filepath.Join(base, "home")
	require.NoError(t, os.Mkdir(home, 0o777))
	require.NoError(t, os.Chmod(home, 0o777))
	socket := filepath.Join(base, "mc.sock")
	startServe(t, t.TempDir(), socket, "--root", root)
	require.NoError(t, os.Chmod(socket, 0o666))
	// nobody's own symlink to the secret, where nobody may write.
	link := filepath.Join(home, "mine.safetensors")
	require.NoError(t, os.Symlink(secret, link))

	asNobody := func(args ...string) (int, string) {
		cmd := exec.Command(setpriv, append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--", bin, "--server", socket}, args...)...)
		cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else {
			require.NoError(t, err, string(out))
		}
		return code, string(out)
	}
	code, out := asNobody("get", model, "Const_61")
	require.Equal(t, 0, code, out)
	for _, p := range []string{secret, link, filepath.Join(root, "shadow"), "/proc/self/root" + secret} {
		code, out = asNobody("get", p, "-")
		require.NotEqual(t, 0, code, p)
		require.Contains(t, out, "outside every root", p)
		require.NotContains(t, out, "TOP-SECRET", p)
	}
}

// --socket naming something that is not a socket: an error naming it,
// and it is left as it was (a stale socket is still replaced:
// TestServe_ClientsDaemonDeathAndRestart).
func TestServe_SocketPathThatIsNotASocket(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "notes.txt")
	require.NoError(t, os.WriteFile(file, []byte("keep me"), 0o644))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "d"), 0o755))
	for _, p := range []string{file, filepath.Join(dir, "d")} {
		r := warm(t, "--dir", t.TempDir(), "serve", "--socket", p, "--root", dir)
		require.NotEqual(t, 0, r.code, p)
		require.Contains(t, string(r.stderr), p)
		require.Contains(t, string(r.stderr), "not a socket")
	}
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	require.Equal(t, "keep me", string(b))
}
