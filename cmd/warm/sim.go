package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/modelcache/modelcache/internal/sim"
	"github.com/modelcache/modelcache/l1"
)

func newSimCmd(g *globals) *cobra.Command {
	var policies, sizes, gen, out string
	var asJSON, weighted bool
	var genOpts sim.ServingOptions
	var zipfOpts sim.ZipfOptions
	cmd := &cobra.Command{
		Use:   "sim [flags] TRACE...",
		Short: "Replay access traces against L1 policies and print hit ratios",
		Long: `sim replays each trace through an L1 cache of each policy at each size and
prints the hit ratio: a table with one row per size (the miss-ratio curve) and
one column per policy, or with --json one object per trace, policy and size:
{"trace", "policy", "size", "weighted", "hits", "requests", "hit_ratio",
"hit_bytes", "request_bytes", "byte_hit_ratio"}. For weighted traces the
table gives both ratios, "hits/bytes": the share of requests L1 served and the
share of bytes (gdsf, which keeps small entries over large ones, raises the
first at the cost of the second).

Traces: text with one key per line (integer or string), or "key size" per line
for weighted traces; or the cache2k binary format (big-endian uint32 keys);
gzip- or xz-compressed or not. Sizes count entries, or bytes for weighted
traces (--weighted, or any trace with sizes); "auto" picks 8 sizes from 0.5% to
50% of the trace's footprint.

Replaying a service's tensor-access log ("file/tensor bytes" per line) this way
tells how much RAM L1 needs. --gen serving writes a synthetic trace of model
serving to --out instead; --gen zipf a trace of independent requests with Zipf
popularity (--gen-keys, --gen-theta), as the value benchmarks use.`,
		Example: `  warm sim --policy s3fifo,lru --size 1000,10000 trace.gz
  warm sim --size auto --json access.log
  warm sim --gen serving --out serving.trace && warm sim --size auto serving.trace
  warm sim --gen zipf --gen-keys 1000000 --out zipf.trace && warm sim --policy tinylfu --size 100000 zipf.trace`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if gen != "" {
				if gen != "serving" && gen != "zipf" {
					return usageError{fmt.Errorf("--gen: \"serving\" or \"zipf\", not %q", gen)}
				}
				if out == "" {
					return usageError{fmt.Errorf("--gen needs --out FILE")}
				}
				f, err := os.Create(out)
				if err != nil {
					return err
				}
				write := func() error { return sim.GenerateServing(f, &genOpts) }
				if gen == "zipf" {
					zipfOpts.Requests, zipfOpts.Seed = genOpts.Requests, max(genOpts.Seed, 1)
					if zipfOpts.Requests == 0 {
						zipfOpts.Requests = 2_000_000
					}
					write = func() error { return sim.GenerateZipf(f, zipfOpts) }
				}
				if err := write(); err != nil {
					f.Close()
					return err
				}
				return f.Close()
			}
			if len(args) == 0 {
				return usageError{fmt.Errorf("sim needs at least one TRACE (or --gen)")}
			}
			var pols []l1.Policy
			for _, p := range strings.Split(policies, ",") {
				if !slices.Contains(l1.Policies, l1.Policy(p)) {
					return usageError{fmt.Errorf("--policy: %q is not one of %v", p, l1.Policies)}
				}
				pols = append(pols, l1.Policy(p))
			}
			for _, path := range args {
				tr, err := sim.Read(path)
				if err != nil {
					return err
				}
				if weighted && tr.Sizes == nil {
					return fmt.Errorf("%s: --weighted, but the trace has no sizes", path)
				}
				sz, err := parseSimSizes(sizes, tr)
				if err != nil {
					return err
				}
				res, err := sim.Run(tr, pols, sz)
				if err != nil {
					return err
				}
				if asJSON {
					enc := json.NewEncoder(g.stdout)
					for _, r := range res {
						if err := enc.Encode(r); err != nil {
							return err
						}
					}
				} else {
					printCurve(g, tr, pols, sz, res)
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	var all []string
	for _, p := range l1.Policies {
		all = append(all, string(p))
	}
	f.StringVar(&policies, "policy", strings.Join(all, ","), "policies, comma-separated")
	f.StringVar(&sizes, "size", "auto", "cache sizes, comma-separated (entries, or bytes with units for weighted traces), or auto")
	f.BoolVar(&weighted, "weighted", false, "require sizes in the trace and count bytes")
	f.BoolVar(&asJSON, "json", false, "print one JSON object per trace, policy and size")
	f.StringVar(&gen, "gen", "", "generate a trace instead: serving, or zipf (independent requests, Zipf popularity)")
	f.StringVar(&out, "out", "", "with --gen: the file to write")
	f.IntVar(&genOpts.Models, "gen-models", 0, "with --gen: distinct models (default 40)")
	f.IntVar(&genOpts.Requests, "gen-requests", 0, "with --gen: requests (default 2,000,000)")
	f.Float64Var(&genOpts.SwapIn, "gen-swap-in", 0, "with --gen: chance a request first loads its model whole (default 0.05)")
	f.Uint64Var(&genOpts.Seed, "gen-seed", 0, "with --gen: random seed (default 1)")
	f.Uint64Var(&zipfOpts.Keys, "gen-keys", 1_000_000, "with --gen zipf: distinct keys")
	f.Float64Var(&zipfOpts.Theta, "gen-theta", 0.99, "with --gen zipf: skew θ (P(rank i) ∝ 1/i^θ)")
	return cmd
}

func parseSimSizes(spec string, tr *sim.Trace) ([]uint64, error) {
	if spec == "auto" {
		return sim.AutoSizes(tr, 8), nil
	}
	var out []uint64
	for _, s := range strings.Split(spec, ",") {
		var n uint64
		var err error
		if tr.Sizes != nil {
			n, err = humanize.ParseBytes(s)
		} else {
			n, err = strconv.ParseUint(s, 10, 64)
		}
		if err != nil || n == 0 {
			return nil, usageError{fmt.Errorf("--size: %q is not a positive size", s)}
		}
		out = append(out, n)
	}
	return out, nil
}

func printCurve(g *globals, tr *sim.Trace, pols []l1.Policy, sizes []uint64, res []sim.Result) {
	keys, bytes := tr.Footprint()
	unit := "entries"
	if tr.Sizes != nil {
		unit = "bytes"
	}
	fmt.Fprintf(g.stdout, "%s: %d requests, %d distinct keys", tr.Name, len(tr.Keys), keys)
	if tr.Sizes != nil {
		fmt.Fprintf(g.stdout, " (%s)", humanize.IBytes(bytes))
	}
	what := "hit ratio"
	if tr.Sizes != nil {
		what = "hit ratio / byte hit ratio"
	}
	fmt.Fprintf(g.stdout, "; %s by cache size (%s)\n", what, unit)
	tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "size\t")
	for _, p := range pols {
		fmt.Fprintf(tw, "%s\t", p)
	}
	fmt.Fprintln(tw)
	for i, s := range sizes {
		if tr.Sizes != nil {
			fmt.Fprintf(tw, "%s\t", humanize.IBytes(s))
		} else {
			fmt.Fprintf(tw, "%d\t", s)
		}
		for j := range pols {
			r := res[j*len(sizes)+i]
			if tr.Sizes != nil {
				fmt.Fprintf(tw, "%.4f / %.4f\t", r.HitRatio, r.ByteHitRatio)
			} else {
				fmt.Fprintf(tw, "%.4f\t", r.HitRatio)
			}
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}
