package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/tier"
)

// The second run of the same request is served from RAM whole, and gives
// the features the first computed; a new process (a new cache on the same
// directory) gets them from disk without computing anything.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	const model = "../../testdata/models/posenet.bf16.safetensors"
	var out bytes.Buffer
	runs, err := run(context.Background(), &out, dir, model, 2)
	require.NoError(t, err)
	first, second := runs[0], runs[1]
	require.Equal(t, map[tier.Tier]int{tier.Source: 4}, first.Weights)
	require.Equal(t, []tier.Tier{tier.Fill, tier.Fill, tier.Fill}, []tier.Tier{first.Input, first.Hidden, first.Output})
	require.Equal(t, map[tier.Tier]int{tier.L1: 4}, second.Weights)
	require.Equal(t, []tier.Tier{tier.L1, tier.L1, tier.L1}, []tier.Tier{second.Input, second.Hidden, second.Output})
	require.Equal(t, first.Features, second.Features)
	require.Len(t, first.Features, 24)
	require.Equal(t, 0.5, second.Stats.Values.HitRate)
	require.Positive(t, second.Stats.Values.Formula)
	require.Contains(t, out.String(), "T by the formula")

	runs, err = run(context.Background(), &out, dir, model, 1)
	require.NoError(t, err)
	require.Equal(t, map[tier.Tier]int{tier.L2: 4}, runs[0].Weights)
	require.Equal(t, []tier.Tier{tier.L2, tier.L2, tier.L2}, []tier.Tier{runs[0].Input, runs[0].Hidden, runs[0].Output})
	require.Equal(t, first.Features, runs[0].Features)
}

// The layers compute what they should: a 3×3 convolution of a constant
// image with constant weights, away from the border, is 9·cin·x·w + b, cut
// at 6 (ReLU6).
func TestConv(t *testing.T) {
	const n, cin, cout = 5, 2, 3
	x := make([]float32, n*n*cin)
	for i := range x {
		x[i] = 0.1
	}
	w := make([]float32, 9*cin*cout)
	for i := range w {
		w[i] = 0.5
	}
	y := conv(x, n, cin, w, []float32{1, 2, 10}, cout, 1, false)
	center := y[(2*n+2)*cout:]
	require.InDelta(t, 9*cin*0.1*0.5+1, center[0], 1e-5)
	require.InDelta(t, 9*cin*0.1*0.5+2, center[1], 1e-5)
	require.Equal(t, float32(6), center[2])
	corner := y[0:]
	require.InDelta(t, 4*cin*0.1*0.5+1, corner[0], 1e-5, "same padding: 4 taps at a corner")
	dw := conv(x, n, cin, w[:9*cin], []float32{0, 0}, cin, 2, true)
	require.Len(t, dw, 3*3*cin)
	require.InDelta(t, 9*0.1*0.5, dw[(1*3+1)*cin], 1e-5)
}
