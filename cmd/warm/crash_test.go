package main

import (
	"context"
	"math/rand/v2"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/internal/testmodels"

	"github.com/modelcache/modelcache/tier"
)

// kill -9 at random moments of warm: the directory always opens, every
// entry it holds is whole, verify finds nothing damaged, and a rerun
// completes the job.
func TestWarm_KilledAtRandomMoments(t *testing.T) {
	seed := testmodels.Seed(t, "WARM_CRASH_SEED")
	r := rand.New(rand.NewPCG(seed, 3))
	files := models(t)
	dir := t.TempDir()
	for round := range 6 {
		cmd := exec.Command(warmBin, append([]string{"--dir", dir}, files...)...)
		cmd.Env = []string{"HOME=" + t.TempDir()}
		require.NoError(t, cmd.Start())
		time.Sleep(time.Duration(r.IntN(150)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()

		v := warm(t, "verify", "--dir", dir)
		require.Equal(t, 0, v.code, "round %d: %s", round, v.stderr)
	}
	r2 := warm(t, append([]string{"--dir", dir}, files...)...)
	require.Equal(t, 0, r2.code, "%s", r2.stderr)

	c, err := tier.Open(&tier.Options{Dir: dir})
	require.NoError(t, err)
	defer c.Close()
	for _, f := range files {
		for name, want := range tensorsOf(t, f) {
			tn, err := c.Tensor(context.Background(), f, name)
			require.NoError(t, err)
			require.Equal(t, tier.L2, tn.ServedBy, "%s %s", f, name)
			require.Equal(t, want, tn.Bytes(), "%s %s", f, name)
		}
	}
}
