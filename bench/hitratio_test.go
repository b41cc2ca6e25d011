package bench

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/internal/sim"
)

// TestHitRatios replays every trace of ../../shared/traces and a generated
// model-serving trace through every contender at three sizes (1%, 5% and 25%
// of the trace's footprint) and logs a Markdown table, and a second one of
// byte hit ratios for the weighted traces. HITRATIO_TRACES and
// HITRATIO_CONTENDERS (regular expressions) narrow the run, for trying a
// change on a few traces.
func TestHitRatios(t *testing.T) {
	traceRE := regexp.MustCompile(os.Getenv("HITRATIO_TRACES"))
	contenderRE := regexp.MustCompile(os.Getenv("HITRATIO_CONTENDERS"))
	files, _ := filepath.Glob("../../shared/traces/*.trace.*")
	files = slices.DeleteFunc(files, func(f string) bool { return !traceRE.MatchString(f) })
	if len(files) == 0 {
		t.Skip("../../shared/traces not present")
	}
	var traces []*sim.Trace
	for _, f := range files {
		tr, err := sim.Read(f)
		require.NoError(t, err)
		tr.Name = strings.TrimSuffix(strings.TrimSuffix(filepath.Base(f), ".gz"), ".xz")
		traces = append(traces, tr)
	}
	var buf bytes.Buffer
	require.NoError(t, sim.GenerateServing(&buf, &sim.ServingOptions{Requests: 1_000_000}))
	serving, err := sim.Decode(&buf)
	require.NoError(t, err)
	serving.Name = "serving (generated, weighted)"
	if traceRE.MatchString(serving.Name) {
		traces = append(traces, serving)
	}

	cs := slices.DeleteFunc(contenders(), func(c contender) bool { return !contenderRE.MatchString(c.name) })
	var out, byteOut strings.Builder
	for _, o := range []*strings.Builder{&out, &byteOut} {
		o.WriteString("| trace | size |")
		for _, c := range cs {
			o.WriteString(" " + c.name + " |")
		}
		o.WriteString("\n|---|---|" + strings.Repeat("---|", len(cs)) + "\n")
	}
	for _, tr := range traces {
		keys, bytes := tr.Footprint()
		total := uint64(keys)
		if tr.Sizes != nil {
			total = bytes
		}
		for _, f := range []float64{0.01, 0.05, 0.25} {
			size := max(uint64(f*float64(total)), 1)
			weighted := tr.Sizes != nil
			fmt.Fprintf(&out, "| %s | %d%% |", tr.Name, int(f*100))
			if weighted {
				fmt.Fprintf(&byteOut, "| %s | %d%% |", tr.Name, int(f*100))
			}
			for _, c := range cs {
				cache, ok := c.make(size, weighted)
				if !ok {
					out.WriteString(" — |")
					if weighted {
						byteOut.WriteString(" — |")
					}
					continue
				}
				r := sim.NewResult(tr, c.name, size, sim.Replay(tr, cache))
				fmt.Fprintf(&out, " %.2f |", 100*r.HitRatio)
				if weighted {
					fmt.Fprintf(&byteOut, " %.2f |", 100*r.ByteHitRatio)
				}
			}
			out.WriteString("\n")
			if weighted {
				byteOut.WriteString("\n")
			}
		}
	}
	t.Log("hit ratios\n" + out.String())
	t.Log("byte hit ratios of the weighted traces\n" + byteOut.String())
}
