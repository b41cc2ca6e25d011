package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/internal/pagecache"
	"github.com/modelcache/modelcache/loader"
	"github.com/modelcache/modelcache/tier"
)

// The modes of warm bench, in the order they run and are shown.
var benchModes = []string{"cold_raw", "warm_raw", "l2_cold", "l2_warm", "l1"}

type latency struct {
	P50 float64 `json:"p50_us"`
	P99 float64 `json:"p99_us"`
}

// benchReport is one file's result; its JSON form is the contract of
// "warm bench --json".
type benchReport struct {
	File          string             `json:"file"`
	Bytes         uint64             `json:"bytes"`
	Tensors       int                `json:"tensors"`
	StoredRatio   float64            `json:"stored_ratio"`
	WarmGBps      float64            `json:"warm_gbps"`
	ColdRawGBps   float64            `json:"cold_raw_gbps"`
	WarmRawGBps   float64            `json:"warm_raw_gbps"`
	L2ColdGBps    float64            `json:"l2_cold_gbps"`
	L2WarmGBps    float64            `json:"l2_warm_gbps"`
	L1GBps        float64            `json:"l1_gbps"`
	ColdResidency float64            `json:"cold_residency"`
	SourceRate    uint64             `json:"source_rate_bytes_per_s,omitempty"`
	Runs          int                `json:"runs"`
	Latency       map[string]latency `json:"latency"`
}

// rateOf is the field holding the rate of a mode.
func (r *benchReport) rateOf(mode string) *float64 {
	switch mode {
	case "cold_raw":
		return &r.ColdRawGBps
	case "warm_raw":
		return &r.WarmRawGBps
	case "l2_cold":
		return &r.L2ColdGBps
	case "l2_warm":
		return &r.L2WarmGBps
	case "l1":
		return &r.L1GBps
	}
	panic("warm: unknown bench mode " + mode)
}

func (r *benchReport) rate(mode string) float64 { return *r.rateOf(mode) }

type benchOptions struct {
	runs       int
	sourceRate uint64 // bytes per second; 0: unthrottled
}

func newBenchCmd(g *globals) *cobra.Command {
	var asJSON bool
	var runs int
	var sourceRate, markdown, section, chart string
	cmd := &cobra.Command{
		Use:   "bench [flags] FILE...",
		Short: "Measure reads through each tier against cold and warm reads of the file",
		Long: `bench measures, for each model file, the rate of reading all its tensors
(logical bytes per second of wall time) in five ways:

  cold_raw  straight from the file, evicted from the OS page cache first
            (fsync, POSIX_FADV_DONTNEED; mincore confirms, see cold_residency)
  warm_raw  straight from the file, in the page cache
  l2_cold   through a freshly opened cache, L1 empty, L2 files evicted
  l2_warm   the same with L2 files in the page cache
  l1        every tensor served from RAM

plus the rate of warming L2 from the file in the page cache (warm_gbps),
stored/logical bytes, and per-tensor
latency p50/p99 for each mode. Each mode runs --runs times; the median run is
reported. Without --dir it uses a new temporary directory, removed afterwards.
--source-rate throttles the raw reads to emulate network storage.`,
		Example: `  warm bench model.safetensors
  warm bench --json --runs 5 model.safetensors
  warm bench --source-rate 200MB model.safetensors   # a source as slow as network storage`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if runs < 1 {
				return usageError{fmt.Errorf("--runs must be at least 1, got %d", runs)}
			}
			opts := benchOptions{runs: runs}
			if sourceRate != "" {
				r, err := humanize.ParseBytes(sourceRate)
				if err != nil || r == 0 {
					return usageError{fmt.Errorf("--source-rate: %q is not a rate in bytes per second (e.g. 200MB)", sourceRate)}
				}
				opts.sourceRate = r
			}
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			dir := g.dir
			if !cmd.Flags().Changed("dir") {
				tmp, err := os.MkdirTemp("", "warm-bench")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				dir = tmp
			}
			var reports []*benchReport
			for _, f := range args {
				r, err := g.benchFile(ctx, f, dir, opts)
				if err != nil {
					return err
				}
				reports = append(reports, r)
				if asJSON {
					if err := json.NewEncoder(g.stdout).Encode(r); err != nil {
						return err
					}
				}
			}
			if !asJSON {
				printBenchTable(g, reports)
			}
			if chart != "" {
				if err := os.WriteFile(chart, []byte(benchChart(reports)), 0o644); err != nil {
					return err
				}
			}
			if markdown != "" {
				return spliceMarkdown(markdown, section, benchMarkdown(reports, chart))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per file")
	cmd.Flags().IntVar(&runs, "runs", 3, "runs of each mode; the median is reported")
	cmd.Flags().StringVar(&sourceRate, "source-rate", "", "throttle raw reads to this many bytes per second, e.g. 200MB")
	cmd.Flags().StringVar(&markdown, "markdown", "", "write the results into this Markdown file, between the markers of --section")
	cmd.Flags().StringVar(&section, "section", "main", "the name of the section --markdown writes (<!-- warm-bench:NAME:start/end -->)")
	cmd.Flags().StringVar(&chart, "chart", "", "write an SVG chart of the rates to this file")
	return cmd
}

// pass is one timed pass over all tensors.
type pass struct {
	total time.Duration
	per   []time.Duration
}

func median(runs []pass) pass {
	slices.SortFunc(runs, func(a, b pass) int { return int(a.total - b.total) })
	return runs[len(runs)/2]
}

func gbps(bytes uint64, d time.Duration) float64 {
	return float64(bytes) / max(d.Seconds(), 1e-9) / 1e9
}

func percentiles(per []time.Duration) latency {
	s := slices.Clone(per)
	slices.Sort(s)
	at := func(q float64) float64 {
		return float64(s[min(len(s)-1, int(q*float64(len(s))))].Nanoseconds()) / 1e3
	}
	return latency{P50: at(0.50), P99: at(0.99)}
}

// benchFile runs every mode on one file.
func (g *globals) benchFile(ctx context.Context, path, dir string, o benchOptions) (*benchReport, error) {
	lf, err := loader.Open(path)
	if err != nil {
		return nil, err
	}
	tensors := slices.Clone(lf.Tensors())
	lf.Close()
	rep := &benchReport{File: path, Tensors: len(tensors), Runs: o.runs, SourceRate: o.sourceRate, Latency: map[string]latency{}}
	for _, t := range tensors {
		rep.Bytes += t.Length
	}
	if rep.Tensors == 0 {
		return nil, fmt.Errorf("%s: no tensors to measure", path)
	}

	raw := func() (pass, error) {
		f, err := loader.Open(path)
		if err != nil {
			return pass{}, err
		}
		defer f.Close()
		r := pass{per: make([]time.Duration, 0, len(tensors))}
		var read uint64
		begin := time.Now()
		for _, t := range tensors {
			t0 := time.Now()
			if _, err := f.ReadTensor(t.Name); err != nil {
				return pass{}, err
			}
			read += t.Length
			if o.sourceRate > 0 {
				// Sleep until the bytes so far fit the rate.
				due := time.Duration(float64(read) / float64(o.sourceRate) * float64(time.Second))
				if wait := due - time.Since(begin); wait > 0 {
					time.Sleep(wait)
				}
			}
			r.per = append(r.per, time.Since(t0))
		}
		r.total = time.Since(begin)
		return r, nil
	}
	cached := func(c *tier.Cache, want tier.Tier) (pass, error) {
		r := pass{per: make([]time.Duration, 0, len(tensors))}
		begin := time.Now()
		for _, t := range tensors {
			t0 := time.Now()
			tn, err := c.Tensor(ctx, path, t.Name)
			if err != nil {
				return pass{}, err
			}
			if tn.ServedBy != want {
				return pass{}, fmt.Errorf("%s: tensor %s served by %s, not %s (is the cache large enough?)", path, errs.Quote(t.Name), tn.ServedBy, want)
			}
			r.per = append(r.per, time.Since(t0))
		}
		r.total = time.Since(begin)
		return r, nil
	}
	throughL2 := func(evict bool) (pass, error) {
		if evict {
			if err := g.evictCold(dir, rep); err != nil {
				return pass{}, err
			}
		}
		c, err := g.openAt(dir, 1) // L1 admits nothing: every read is from L2
		if err != nil {
			return pass{}, err
		}
		defer c.Close()
		return cached(c, tier.L2)
	}

	// Warm L2 (timed, Close included: it syncs), with the file in the page
	// cache so that this measures L2's write path, and take the ratio.
	if _, err := raw(); err != nil {
		return nil, err
	}
	c, err := g.openAt(dir, 1)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	wr, err := c.Warm(ctx, path)
	if cerr := c.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	if wr.Written == wr.Tensors {
		rep.WarmGBps = gbps(rep.Bytes, time.Since(start))
	}
	if c, err = g.openAt(dir, 1); err != nil {
		return nil, err
	}
	_, logical, stored, err := c.FileEntries(path)
	c.Close()
	if err != nil {
		return nil, err
	}
	if logical > 0 {
		rep.StoredRatio = float64(stored) / float64(logical)
	}

	results := map[string][]pass{}
	for _, mode := range benchModes {
		var l1 *tier.Cache
		switch mode {
		case "warm_raw":
			if _, err := raw(); err != nil { // load the page cache
				return nil, err
			}
		case "l2_warm":
			if _, err := throughL2(false); err != nil {
				return nil, err
			}
		case "l1":
			if l1, err = g.openAt(dir, int64(rep.Bytes)+int64(rep.Tensors)*1024+1<<20); err != nil {
				return nil, err
			}
			if _, err := cached(l1, tier.L2); err != nil {
				l1.Close()
				return nil, err
			}
		}
		for range o.runs {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			var r pass
			var err error
			switch mode {
			case "cold_raw":
				if err = g.evictCold(path, rep); err == nil {
					r, err = raw()
				}
			case "warm_raw":
				r, err = raw()
			case "l2_cold":
				r, err = throughL2(true)
			case "l2_warm":
				r, err = throughL2(false)
			case "l1":
				r, err = cached(l1, tier.L1)
			}
			if err != nil {
				if l1 != nil {
					l1.Close()
				}
				return nil, err
			}
			results[mode] = append(results[mode], r)
		}
		if l1 != nil {
			l1.Close()
		}
		m := median(results[mode])
		rep.Latency[mode] = percentiles(m.per)
		*rep.rateOf(mode) = gbps(rep.Bytes, m.total)
	}
	return rep, nil
}

// evictCold drops root from the page cache and records how much stayed.
func (g *globals) evictCold(root string, rep *benchReport) error {
	if err := pagecache.EvictAll(root); err != nil {
		return err
	}
	frac, err := pagecache.ResidentFraction(root)
	if err != nil {
		return err
	}
	rep.ColdResidency = max(rep.ColdResidency, frac)
	if frac > 0.05 {
		fmt.Fprintf(g.stderr, "warm: bench: %.1f%% of %s stayed in the page cache after eviction; cold rates are optimistic\n", frac*100, root)
	}
	return nil
}

func printBenchTable(g *globals, reports []*benchReport) {
	tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "file\tbytes\ttensors\tstored\twarm\tcold_raw\twarm_raw\tl2_cold\tl2_warm\tl1\t")
	for _, r := range reports {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.3f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.1f\t\n", r.File, humanize.IBytes(r.Bytes), r.Tensors,
			r.StoredRatio, r.WarmGBps, r.ColdRawGBps, r.WarmRawGBps, r.L2ColdGBps, r.L2WarmGBps, r.L1GBps)
	}
	tw.Flush()
	fmt.Fprintln(g.stdout, "rates in GB/s of logical tensor bytes; stored = stored/logical bytes in L2")
	for _, r := range reports {
		var parts []string
		for _, m := range benchModes {
			l := r.Latency[m]
			parts = append(parts, fmt.Sprintf("%s %.0f/%.0f", m, l.P50, l.P99))
		}
		fmt.Fprintf(g.stdout, "%s: per-tensor latency p50/p99 µs: %s; page cache residency after eviction ≤ %.1f%%\n",
			r.File, strings.Join(parts, ", "), r.ColdResidency*100)
	}
}

func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if name, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d cores, %s %s/%s", cpu, runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
