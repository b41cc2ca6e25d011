package main

import (
	"fmt"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/modelcache/modelcache/tier"
)

func newGCCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Drop entries of changed or deleted files, shrink to the budget, reclaim disk",
		Long: `gc removes the entries of model files that have changed or no longer exist,
evicts least recently used entries down to the disk budget (--disk), and
reclaims the space of everything removed.`,
		Example: `  warm gc
  warm gc --disk 50GB`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withCache(func(c *tier.Cache) error {
				before := c.Stats().L2
				if err := c.GC(); err != nil {
					return err
				}
				after := c.Stats().L2
				fmt.Fprintf(g.stdout, "entries %d -> %d, stored %s -> %s, disk use %s -> %s\n",
					before.Entries, after.Entries,
					humanize.IBytes(before.StoredBytes), humanize.IBytes(after.StoredBytes),
					humanize.IBytes(uint64(max(before.DiskBytes, 0))), humanize.IBytes(uint64(max(after.DiskBytes, 0))))
				return nil
			})
		},
	}
}
