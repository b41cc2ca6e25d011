// Command inference runs the first layers of a real model (PoseNet, a
// MobileNet v1, from testdata) on an input through one modelcache, so that
// all four kinds of data the cache keeps meet in one place:
//
//   - parameters: the layers' weights, read through the cache (Model.Tensor);
//   - inputs: the preprocessed image, a value computed once (Cache.GetWith);
//   - intermediates: the first convolution's activations;
//   - outputs: the features after the depthwise convolution and pooling.
//
// Intermediates and outputs live in namespaces named after the model's
// version (tier.NamespaceFor), so a changed model never serves them. The
// program runs the same request twice and prints, for each run, which tier
// served each piece and the cache's hit rate and average access time: by
// the formula HR·Tc + (1 − HR)·(Tc + Tr) and as measured.
//
//	go run ./examples/inference [-dir DIR] [-model FILE]
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"os"

	"github.com/modelcache/modelcache/tier"
)

func main() {
	dir := flag.String("dir", "", "cache directory (default: a temporary one)")
	model := flag.String("model", "testdata/models/posenet.bf16.safetensors", "PoseNet weights")
	flag.Parse()
	if *dir == "" {
		d, err := os.MkdirTemp("", "modelcache-inference")
		if err != nil {
			log.Fatal(err)
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	if _, err := run(context.Background(), os.Stdout, *dir, *model, 2); err != nil {
		log.Fatal(err)
	}
}

// Run is what one run served and computed.
type Run struct {
	Weights               map[tier.Tier]int // tensors by the tier that served them
	Input, Hidden, Output tier.Tier
	Features              []float32
	Stats                 tier.Stats
}

// run answers the same request runs times through one cache and reports
// each run to w.
func run(ctx context.Context, w io.Writer, dir, model string, runs int) ([]Run, error) {
	c, err := tier.Open(&tier.Options{Dir: dir})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	m, err := c.Model(ctx, model)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	var out []Run
	for i := range runs {
		r, err := infer(ctx, c, m, "image-0001")
		if err != nil {
			return nil, err
		}
		s := c.Stats()
		r.Stats = s
		fmt.Fprintf(w, "run %d: weights from %v, input from %s, layer-1 activations from %s, features from %s\n",
			i+1, r.Weights, r.Input, r.Hidden, r.Output)
		for _, k := range []struct {
			name string
			m    tier.Measures
		}{{"tensors", s.Tensors}, {"values", s.Values}} {
			fmt.Fprintf(w, "  %-7s so far: %d requests, hit rate %.0f%%, Tc %v, Tr %v, T by the formula %v, measured %v\n",
				k.name, k.m.Requests, 100*k.m.HitRate, k.m.Tc, k.m.Tr, k.m.Formula, k.m.Measured)
		}
		out = append(out, r)
	}
	fmt.Fprintf(w, "features[:4] = %.4f\n", out[len(out)-1].Features[:4])
	return out, nil
}

// The input: a 65×65 RGB image, made up (a smooth pattern), preprocessed as
// PoseNet wants, to [-1, 1].
const side = 65

func infer(ctx context.Context, c *tier.Cache, m *tier.Model, image string) (Run, error) {
	r := Run{Weights: map[tier.Tier]int{}}
	// Parameters: layer 1 is a 3×3 convolution, 3 → 24 channels, stride 2;
	// layer 2 a 3×3 depthwise convolution of its 24 channels.
	weights := map[string][]float32{}
	for _, name := range []string{"Const_55", "Const_54", "Const_53", "Const_52"} {
		t, err := m.Tensor(ctx, name)
		if err != nil {
			return r, err
		}
		weights[name] = fromBF16(t.Bytes())
		r.Weights[t.ServedBy]++
	}
	f32 := func(n int) *tier.PutOptions { return &tier.PutOptions{DType: "F32", Shape: []uint64{uint64(n)}} }

	// Input: preprocessing runs once per image.
	in, err := c.GetWith(ctx, "inputs", image, f32(side*side*3), func(context.Context) ([]byte, error) {
		x := make([]float32, side*side*3)
		for i := range x {
			pixel := (i*7 + i/(side*3)*13) % 256
			x[i] = float32(pixel)/127.5 - 1
		}
		return toBytes(x), nil
	})
	if err != nil {
		return r, err
	}
	r.Input = in.ServedBy

	// Intermediate: layer 1's activations, for this version of the model.
	const hs = (side + 1) / 2
	hidden, err := c.GetWith(ctx, tier.NamespaceFor(m, "layer1"), image, f32(hs*hs*24), func(context.Context) ([]byte, error) {
		return toBytes(conv(floats(in.Bytes()), side, 3, weights["Const_55"], weights["Const_54"], 24, 2, false)), nil
	})
	if err != nil {
		return r, err
	}
	r.Hidden = hidden.ServedBy

	// Output: layer 2 (depthwise), then average pooling to 24 features.
	out, err := c.GetWith(ctx, tier.NamespaceFor(m, "features"), image, f32(24), func(context.Context) ([]byte, error) {
		y := conv(floats(hidden.Bytes()), hs, 24, weights["Const_53"], weights["Const_52"], 24, 1, true)
		feat := make([]float32, 24)
		for i, v := range y {
			feat[i%24] += v / float32(hs*hs)
		}
		return toBytes(feat), nil
	})
	if err != nil {
		return r, err
	}
	r.Output, r.Features = out.ServedBy, floats(out.Bytes())
	return r, nil
}

// conv is a 3×3 convolution of an n×n×cin NHWC image with "same" padding
// and the given stride, then bias and ReLU6, as in MobileNet. Weights are
// TensorFlow's HWIO (3,3,cin,cout); depthwise ones are (3,3,c,1), each
// channel its own filter.
func conv(x []float32, n, cin int, w, bias []float32, cout, stride int, depthwise bool) []float32 {
	on := (n + stride - 1) / stride
	pad := max((on-1)*stride+3-n, 0) / 2
	y := make([]float32, on*on*cout)
	for oy := range on {
		for ox := range on {
			for co := range cout {
				s := bias[co]
				for ky := range 3 {
					for kx := range 3 {
						iy, ix := oy*stride+ky-pad, ox*stride+kx-pad
						if iy < 0 || ix < 0 || iy >= n || ix >= n {
							continue
						}
						px := x[(iy*n+ix)*cin:]
						if depthwise {
							s += px[co] * w[(ky*3+kx)*cin+co]
							continue
						}
						for ci := range cin {
							s += px[ci] * w[((ky*3+kx)*cin+ci)*cout+co]
						}
					}
				}
				y[(oy*on+ox)*cout+co] = min(max(s, 0), 6)
			}
		}
	}
	return y
}

func fromBF16(b []byte) []float32 {
	out := make([]float32, len(b)/2)
	for i := range out {
		out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16)
	}
	return out
}

func floats(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

func toBytes(x []float32) []byte {
	b := make([]byte, 4*len(x))
	for i, v := range x {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}
