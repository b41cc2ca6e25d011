package main

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/l2"
)

// holdDir holds the cache directory dir from a child process until the
// test ends.
func holdDir(t *testing.T, dir string) {
	h := exec.Command(os.Args[0], "-test.run=TestHelperHoldDir")
	h.Env = append(os.Environ(), "WARM_HOLD_DIR="+dir)
	stdout, err := h.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, h.Start())
	t.Cleanup(func() { _ = h.Process.Kill(); _ = h.Wait() })
	buf := make([]byte, 5)
	_, err = stdout.Read(buf)
	require.NoError(t, err)
	require.Equal(t, "held\n", string(buf))
}

// TestHelperHoldDir is not a test: TestWarm_DirectoryInUse runs it in a child
// process to hold a cache directory open until killed.
func TestHelperHoldDir(t *testing.T) {
	dir := os.Getenv("WARM_HOLD_DIR")
	if dir == "" {
		t.Skip("helper process only")
	}
	s, err := l2.Open(&l2.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fmt.Println("held")
	for {
		time.Sleep(time.Hour)
	}
}
