package l2

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/internal/testmodels"

	"github.com/modelcache/modelcache/errs"
)

// crashData is the deterministic content of key i: sizes from a few bytes
// to several chunks, so a kill can land inside a multi-chunk write.
func crashData(i int) []byte {
	r := rand.New(rand.NewPCG(uint64(i), 77))
	n := []int{10, 5000, 300_000, 1_100_000}[i%4] + r.IntN(1000)
	b := make([]byte, n)
	for j := range b {
		if j%2 == 0 {
			b[j] = byte(r.Uint32())
		}
	}
	return b
}

// TestHelperCrashWriter is not a test: TestStore_SurvivesKill9 runs it in a
// child process, which writes entries and reports each one on stdout once
// Put has returned, until it is killed.
func TestHelperCrashWriter(t *testing.T) {
	dir := os.Getenv("L2_CRASH_DIR")
	if dir == "" {
		t.Skip("helper process only")
	}
	start, _ := strconv.Atoi(os.Getenv("L2_CRASH_START"))
	s, err := Open(&Options{Dir: dir, ChunkSize: 256 << 10})
	if err != nil {
		fmt.Println("open error:", err)
		os.Exit(3)
	}
	fmt.Println("ready")
	for i := start; ; i++ {
		if err := s.Put(fmt.Sprint(i), "U8", nil, crashData(i)); err != nil {
			fmt.Println("put error:", err)
			os.Exit(3)
		}
		fmt.Println("ok", i)
		if i%5 == 4 {
			// Rewrite an older entry (perhaps deleted) with its own bytes
			// under a new id: the swap must be atomic too.
			fmt.Println("putting", i-3)
			if err := s.Put(fmt.Sprint(i-3), "U8", nil, crashData(i-3)); err != nil {
				fmt.Println("put error:", err)
				os.Exit(3)
			}
			fmt.Println("ok", i-3)
		}
		if i%7 == 6 {
			fmt.Println("deleting", i-1) // from here on, either outcome is right
			if err := s.Delete(fmt.Sprint(i - 1)); err != nil {
				fmt.Println("delete error:", err)
				os.Exit(3)
			}
			fmt.Println("del", i-1)
		}
	}
}

// kill -9 at random moments of a writing process leaves a directory that
// opens, serves every entry reported as written byte for byte, and never
// serves a partial or damaged entry.
func TestStore_SurvivesKill9(t *testing.T) {
	seed := testmodels.Seed(t, "L2_CRASH_SEED")
	r := rand.New(rand.NewPCG(seed, 1))
	dir := t.TempDir()
	// key -> "ok" (written), "del" (deleted), or "deleting" / "putting" (in
	// flight when last heard of: present with the right bytes, or absent)
	reported := map[int]string{}
	next := 0
	rounds := 8
	for round := range rounds {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperCrashWriter$")
		cmd.Env = append(os.Environ(), "L2_CRASH_DIR="+dir, "L2_CRASH_START="+strconv.Itoa(next))
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		// The clock starts once the store is open, so that slow builds
		// (-race) still kill it while it writes.
		delay := time.Duration(r.IntN(400)) * time.Millisecond
		var timer *time.Timer
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "ready" {
				timer = time.AfterFunc(delay, func() { _ = cmd.Process.Signal(syscall.SIGKILL) })
				continue
			}
			f := strings.Fields(sc.Text())
			if len(f) == 2 && (f[0] == "ok" || f[0] == "del" || f[0] == "deleting" || f[0] == "putting") {
				i, _ := strconv.Atoi(f[1])
				// A rewrite of a live entry leaves it live either way.
				if f[0] != "putting" || reported[i] != "ok" {
					reported[i] = f[0]
				}
				next = max(next, i+1)
			} else if len(f) > 0 && strings.HasSuffix(f[0], "error:") {
				t.Fatalf("round %d: child: %s", round, sc.Text())
			}
		}
		if timer == nil {
			_ = cmd.Process.Kill()
			t.Fatalf("round %d: the child never opened the store", round)
		}
		timer.Stop()
		err = cmd.Wait()
		var ee *exec.ExitError
		require.True(t, errors.As(err, &ee), "round %d: child ended with %v, want killed", round, err)

		s, err := Open(&Options{Dir: dir, ChunkSize: 256 << 10})
		require.NoError(t, err, "round %d: reopen after kill -9 at %v", round, delay)
		for i, state := range reported {
			v, err := s.Get(fmt.Sprint(i))
			switch {
			case state == "del":
				// A delete reported done stays done.
				require.ErrorIs(t, err, errs.ErrNotFound, "round %d key %d", round, i)
				continue
			case (state == "deleting" || state == "putting") && errors.Is(err, errs.ErrNotFound):
				continue
			}
			require.NoError(t, err, "round %d: key %d was reported written", round, i)
			require.Equal(t, crashData(i), v.Data, "round %d key %d", round, i)
		}
		// Entries written but not yet reported are whole too.
		require.NoError(t, s.Range("", func(e *EntryInfo) bool {
			i, _ := strconv.Atoi(e.Key)
			v, err := s.Get(e.Key)
			require.NoError(t, err, "round %d key %s", round, e.Key)
			require.Equal(t, crashData(i), v.Data, "round %d key %s", round, e.Key)
			return true
		}))
		require.Zero(t, s.Stats().Corrupt, "round %d", round)
		t.Logf("round %d: killed after %v, %d keys reported", round, delay, len(reported))
		require.NoError(t, s.Close())
	}
	require.Positive(t, next, "the child wrote something")
}
