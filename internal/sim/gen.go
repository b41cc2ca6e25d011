package sim

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
)

// ServingOptions shapes a generated serving trace. Zero fields take the
// defaults in brackets.
type ServingOptions struct {
	Models   int     // distinct models [40]
	Requests int     // requests in the trace, about [2,000,000]
	Zipf     float64 // skew of model popularity, > 1 [1.2]
	SwapIn   float64 // chance that serving a model first loads it whole [0.05]
	HotShare float64 // share of a model's tensors its requests read [0.1]
	Burst    int     // reads of hot tensors per request [20]
	Seed     uint64  // [1]
}

func (o *ServingOptions) defaults() ServingOptions {
	d := ServingOptions{Models: 40, Requests: 2_000_000, Zipf: 1.2, SwapIn: 0.05, HotShare: 0.1, Burst: 20, Seed: 1}
	if o == nil {
		return d
	}
	if o.Models > 0 {
		d.Models = o.Models
	}
	if o.Requests > 0 {
		d.Requests = o.Requests
	}
	if o.Zipf > 1 {
		d.Zipf = o.Zipf
	}
	if o.SwapIn > 0 {
		d.SwapIn = o.SwapIn
	}
	if o.HotShare > 0 {
		d.HotShare = o.HotShare
	}
	if o.Burst > 0 {
		d.Burst = o.Burst
	}
	if o.Seed != 0 {
		d.Seed = o.Seed
	}
	return d
}

type model struct {
	sizes []uint32 // tensor sizes in file order
	hot   []int    // the tensors its requests read
}

// GenerateServing writes a weighted text trace ("key size" per line) of a
// model-serving workload: requests pick a model with Zipf popularity; with
// chance SwapIn the model is loaded first, a scan of all its tensors in file
// order; then a burst of reads of its hot tensors follows. Models differ in
// size (50 to 500 tensors, tensor sizes log-normal around 1 MiB).
func GenerateServing(w io.Writer, opts *ServingOptions) error {
	o := opts.defaults()
	r := rand.New(rand.NewPCG(o.Seed, 11))
	models := make([]model, o.Models)
	for i := range models {
		n := 50 + r.IntN(451)
		m := model{sizes: make([]uint32, n)}
		for j := range m.sizes {
			s := math.Exp(math.Log(1<<20) + 1.5*r.NormFloat64())
			m.sizes[j] = uint32(min(max(s, 256), 64<<20))
		}
		hot := max(1, int(float64(n)*o.HotShare))
		m.hot = r.Perm(n)[:hot]
		models[i] = m
	}
	zipf := rand.NewZipf(r, o.Zipf, 1, uint64(o.Models-1))
	bw := bufio.NewWriterSize(w, 1<<20)
	written := 0
	emit := func(mi, ti int) {
		fmt.Fprintf(bw, "m%d/t%d %d\n", mi, ti, models[mi].sizes[ti])
		written++
	}
	for written < o.Requests {
		mi := int(zipf.Uint64())
		m := models[mi]
		if r.Float64() < o.SwapIn {
			for ti := range m.sizes {
				emit(mi, ti)
			}
		}
		for range o.Burst {
			emit(mi, m.hot[r.IntN(len(m.hot))])
		}
	}
	return bw.Flush()
}
