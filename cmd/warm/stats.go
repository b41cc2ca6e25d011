package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/modelcache/modelcache/api"
	"github.com/modelcache/modelcache/client"
	"github.com/modelcache/modelcache/l2"
	"github.com/modelcache/modelcache/tier"
)

// statsJSON is the contract of "warm stats --json".
type statsJSON struct {
	Dir          string  `json:"dir"`
	Entries      int     `json:"entries"`
	LogicalBytes uint64  `json:"logical_bytes"`
	StoredBytes  uint64  `json:"stored_bytes"`
	StoredRatio  float64 `json:"stored_ratio"`
	// ChargedBytes is what the entries count against the disk budget:
	// stored bytes and each entry's records.
	ChargedBytes uint64 `json:"charged_bytes"`
	DiskBytes    int64  `json:"disk_bytes"`
	MaxBytes     int64  `json:"max_bytes"`
	// Reads of every process since the directory was created.
	Reads api.Counters `json:"reads"`
	// Measures of every process since the directory was created: hit
	// rates by tier, latency histograms, Tc, Tr and the average access
	// time, of tensors and of values (in all and by namespace).
	Measures api.Measured `json:"measures"`
	// L3 is the fleet tier, when --redis names one.
	L3 *l3JSON `json:"l3,omitempty"`
}

type l3JSON struct {
	Redis string `json:"redis"`
	Up    bool   `json:"up"`
	Error string `json:"error,omitempty"`
}

func newStatsCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stats [flags]",
		Short: "Show what the cache directory holds",
		Long: `stats prints the number of cached entries, their logical (uncompressed)
bytes and their stored (encoded) bytes. With --json it prints one JSON object:
{"dir", "entries", "logical_bytes", "stored_bytes", "stored_ratio",
"charged_bytes" (what counts against --disk: stored bytes and each entry's
records), "disk_bytes" (the directory's real disk use, as du counts it),
"max_bytes",
"reads": {"requests", "l1_hits", "l2_hits", "l2_misses", "source_loads",
"shared_loads", "failed", "warm_loads", "l2_errors"}}; reads count every
process's tensor reads since the directory was created. Each read counts in
requests and in one of l1_hits, l2_hits, source_loads, shared_loads (it
joined another read of the same tensor) and failed; warm_loads are the
tensors warm itself read from model files.

Below, a table gives the cache's measures since the directory was created,
for tensor reads, for value reads and for each namespace of values: requests,
hit rate in all and of L1 and of L2 (of the requests that reached it), Tc (the
mean time of a hit), Tr (the mean time of a read of the model file or of a
fill), and the average access time T by the formula HR·Tc + (1 − HR)·(Tc + Tr)
beside the mean actually measured. In --json they are "measures": {"tensors",
"values", "namespaces": {NS: ...}}, each {"requests", "hits", "misses",
"shared", "failed", "hit_rate", "tiers": [{"tier", "requests", "hits",
"hit_rate", "latency": {"count", "sum_ns", "buckets"}}], "tc_ns", "tr_ns",
"miss_latency", "formula_ns", "measured_ns"}; latency buckets count requests
below 128 ns << i (not cumulative), the last one any longer.`,
		Example: `  warm stats
  warm stats --json | jq .stored_ratio`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			// The daemon's Stats, or this process's as the daemon would send
			// them.
			var all client.Stats
			var l3err error
			local := false
			dir := g.dir
			if err := g.viaDaemonOr(func(d *client.Client) error {
				// The daemon's cache: its directory's and its processes' counts.
				st, err := d.Stats(cmdContext(cmd))
				if err != nil {
					return err
				}
				all, dir = *st, st.L2.Dir
				return nil
			}, func(c *tier.Cache) error {
				local = true
				st, err := wireStats(c.Stats())
				if err != nil {
					return err
				}
				all, l3err = *st, c.CheckL3(cmdContext(cmd))
				return nil
			}); err != nil {
				return err
			}
			if local && all.L2.Dir != "" {
				// Disk use as du finds it once warm has exited: open, the
				// store preallocates its value log and memtable (tens of MiB
				// that Close gives back).
				if du, err := l2.DiskUsage(g.dir); err == nil {
					all.L2.DiskBytes = du
				}
			}
			st := all.L2
			s := statsJSON{Dir: dir, Entries: st.Entries, LogicalBytes: st.LogicalBytes, StoredBytes: st.StoredBytes,
				ChargedBytes: st.ChargedBytes, DiskBytes: st.DiskBytes, MaxBytes: st.MaxBytes, Reads: all.Lifetime,
				Measures: all.LifetimeMeasured}
			if all.L3.Enabled {
				s.L3 = &l3JSON{Redis: redisShown(g.redis), Up: l3err == nil}
				if l3err != nil {
					s.L3.Error = l3err.Error()
				}
			}
			if st.LogicalBytes > 0 {
				s.StoredRatio = float64(st.StoredBytes) / float64(st.LogicalBytes)
			}
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				return enc.Encode(s)
			}
			fmt.Fprintf(g.stdout, "dir:           %s\nentries:       %d\nlogical bytes: %s (%d)\nstored bytes:  %s (%d), ratio %.3f\ndisk use:      %s (%d)\n",
				s.Dir, s.Entries, humanize.IBytes(s.LogicalBytes), s.LogicalBytes, humanize.IBytes(s.StoredBytes), s.StoredBytes, s.StoredRatio,
				humanize.IBytes(uint64(max(s.DiskBytes, 0))), s.DiskBytes)
			r := s.Reads
			fromL3 := ""
			if r.L3Hits > 0 {
				fromL3 = fmt.Sprintf(", %d from L3", r.L3Hits)
			}
			fmt.Fprintf(g.stdout, "reads:         %d since the cache was created: %d from L1, %d from L2 (%d L2 misses)%s, %d from model files, %d L2 errors\n",
				r.Requests, r.L1Hits, r.L2Hits, r.L2Misses, fromL3, r.SourceLoads, r.L2Errors)
			if s.L3 != nil {
				state := "up"
				if !s.L3.Up {
					state = "down: " + s.L3.Error
				}
				fmt.Fprintf(g.stdout, "l3:            redis %s, %s\n", s.L3.Redis, state)
			}
			printMeasures(g, s.Measures)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

// printMeasures prints hit rates and average access times: a row for tensors, values and
// each namespace.
func printMeasures(g *globals, m api.Measured) {
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tREQUESTS\tHIT RATE\tL1\tL2\tL3\tTc\tTr\tT FORMULA\tT MEASURED\t")
	row := func(name string, s api.Measures) {
		pct := func(r float64) string { return fmt.Sprintf("%.1f%%", r*100) }
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", name, s.Requests, pct(s.HitRate),
			pct(s.Tiers[0].HitRate), pct(s.Tiers[1].HitRate), pct(s.Tiers[2].HitRate), dur(s.Tc), dur(s.Tr), dur(s.Formula), dur(s.Measured))
	}
	row("tensors", m.Tensors)
	row("values", m.Values)
	names := slices.Sorted(maps.Keys(m.Namespaces))
	for _, ns := range names {
		row("  "+strconv.Quote(ns), m.Namespaces[ns])
	}
	if m.OtherNamespaces != nil {
		// Past tier.Options.MaxNamespaceMeters, namespaces count together.
		row("  (other namespaces)", *m.OtherNamespaces)
	}
	tw.Flush()
}

// dur prints a duration with three significant digits.
func dur(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d.Nanoseconds())
	case d < time.Millisecond:
		return fmt.Sprintf("%.3gµs", float64(d)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.3gms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.3gs", d.Seconds())
}
