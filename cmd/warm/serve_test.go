package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/client"
	"github.com/modelcache/modelcache/internal/testmodels"
)

// startServe starts warm serve as a process and waits (bounded) for its
// socket; the test stops it.
func startServe(t testing.TB, dir, socket string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(warmBin, "--dir", dir, "serve", "--socket", socket)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
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
	for _, transport := range []string{"http", "shm"} {
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
