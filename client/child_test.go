package client

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/server"
	"github.com/modelcache/modelcache/tier"
)

// The test binary doubles as a daemon in a process of its own (for tests
// that kill it, or count its descriptors): with $MODELCACHE_TEST_DAEMON
// set to a socket, it serves a cache in $MODELCACHE_TEST_DIR there, with
// the server.Options in $MODELCACHE_TEST_OPTIONS (JSON), until killed.
func TestMain(m *testing.M) {
	if socket := os.Getenv("MODELCACHE_TEST_DAEMON"); socket != "" {
		childDaemon(socket)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func childDaemon(socket string) {
	c, err := tier.Open(&tier.Options{Dir: os.Getenv("MODELCACHE_TEST_DIR"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		panic(err)
	}
	var o server.Options
	if err := json.Unmarshal([]byte(os.Getenv("MODELCACHE_TEST_OPTIONS")), &o); err != nil {
		panic(err)
	}
	l, err := net.Listen("unix", socket)
	if err != nil {
		panic(err)
	}
	panic(server.Server(server.New(c, &o)).Serve(l))
}

// childProc is a daemon in a child process.
type childProc struct {
	socket string
	cmd    *exec.Cmd
}

// startChild starts a daemon process with o, and stops it (by PID) at the
// end of the test.
func startChild(t *testing.T, o server.Options) *childProc {
	t.Helper()
	opts, err := json.Marshal(o)
	require.NoError(t, err)
	socket := filepath.Join(t.TempDir(), "d.sock")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "MODELCACHE_TEST_DAEMON="+socket, "MODELCACHE_TEST_DIR="+t.TempDir(), "MODELCACHE_TEST_OPTIONS="+string(opts))
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	p := &childProc{socket: socket, cmd: cmd}
	t.Cleanup(p.kill)
	for i := 0; ; i++ {
		conn, err := net.Dial("unix", socket)
		if err == nil {
			conn.Close()
			break
		}
		require.Less(t, i, 300, "the daemon process never listened")
		time.Sleep(20 * time.Millisecond)
	}
	return p
}

// kill kills the daemon by its PID and waits for it.
func (p *childProc) kill() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	}
}

// fds is how many descriptors the daemon process has open.
func (p *childProc) fds(t *testing.T) int {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("counting a process's descriptors reads /proc (Linux)")
	}
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/fd")
	require.NoError(t, err)
	return len(ents)
}

// waitFor polls cond until it holds, for at most a minute (a bound on a
// hang, not a timing assertion).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: never happened", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
