package sim

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// The draws follow P(i) ∝ 1/(i+1)^θ: the top ranks' shares match the
// formula within sampling error.
func TestZipfian_Distribution(t *testing.T) {
	for _, theta := range []float64{0.5, 0.99, 1, 1.2} {
		const n, draws = 1000, 400_000
		z, err := NewZipfian(rand.New(rand.NewPCG(1, 2)), n, theta)
		require.NoError(t, err)
		counts := make([]int, n)
		for range draws {
			counts[z.Next()]++
		}
		var zeta float64
		for i := 1; i <= n; i++ {
			zeta += 1 / math.Pow(float64(i), theta)
		}
		for _, i := range []int{0, 1, 2, 9, 99} {
			want := draws / math.Pow(float64(i+1), theta) / zeta
			require.InDelta(t, want, counts[i], 5*math.Sqrt(want)+0.05*want, "θ=%v rank %d", theta, i)
		}
	}
	_, err := NewZipfian(rand.New(rand.NewPCG(1, 2)), 10, 0)
	require.Error(t, err)
}

func TestGenerateZipf_ReadsBack(t *testing.T) {
	var b bytes.Buffer
	o := ZipfOptions{Keys: 1000, Requests: 10_000, Theta: 0.99, Seed: 3}
	require.NoError(t, GenerateZipf(&b, o))
	tr, err := Decode(&b)
	require.NoError(t, err)
	keys, err := ZipfKeys(o)
	require.NoError(t, err)
	require.Equal(t, keys, tr.Keys)
	n, _ := tr.Footprint()
	require.LessOrEqual(t, n, 1000)
}
