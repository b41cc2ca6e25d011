package main

import (
	"encoding/json"
	"fmt"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

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
	Reads tier.Counters `json:"reads"`
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
tensors warm itself read from model files.`,
		Example: `  warm stats
  warm stats --json | jq .stored_ratio`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var all tier.Stats
			if err := g.withCache(func(c *tier.Cache) error { all = c.Stats(); return nil }); err != nil {
				return err
			}
			st := all.L2
			s := statsJSON{Dir: g.dir, Entries: st.Entries, LogicalBytes: st.LogicalBytes, StoredBytes: st.StoredBytes,
				ChargedBytes: st.ChargedBytes, DiskBytes: st.DiskBytes, MaxBytes: st.MaxBytes, Reads: all.Lifetime}
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
			fmt.Fprintf(g.stdout, "reads:         %d since the cache was created: %d from L1, %d from L2 (%d L2 misses), %d from model files, %d L2 errors\n",
				r.Requests, r.L1Hits, r.L2Hits, r.L2Misses, r.SourceLoads, r.L2Errors)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}
