// Command genmodel writes a synthetic BF16 safetensors model for benchmarks
// (make bench): a transformer-like layout with N(0, σ²) weights, generated,
// never committed.
//
//	go run ./internal/tools/genmodel -o /tmp/synthetic.safetensors -size 1GiB
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/dustin/go-humanize"

	"github.com/modelcache/modelcache/internal/testmodels"
)

func main() {
	out := flag.String("o", "synthetic.safetensors", "output file")
	size := flag.String("size", "1GiB", "approximate size")
	seed := flag.Uint64("seed", 1, "random seed")
	flag.Parse()
	n, err := humanize.ParseBytes(*size)
	if err != nil {
		fmt.Fprintf(os.Stderr, "genmodel: -size: %v\n", err)
		os.Exit(2)
	}
	if err := testmodels.WriteSyntheticBF16(*out, int64(n), *seed); err != nil {
		fmt.Fprintf(os.Stderr, "genmodel: %v\n", err)
		os.Exit(1)
	}
	fi, err := os.Stat(*out)
	if err != nil {
		fmt.Fprintf(os.Stderr, "genmodel: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("wrote %s (%s)\n", *out, humanize.IBytes(uint64(fi.Size())))
}
