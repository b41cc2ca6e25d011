package main

import (
	"fmt"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/modelcache/modelcache/l2"
	"github.com/modelcache/modelcache/tier"
)

func newGCCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Drop entries of changed or deleted files, shrink to the budget, reclaim disk",
		Long: `gc removes the entries of model files that have changed or no longer exist,
evicts least recently used entries down to the disk budget (--disk), and
reclaims the space of everything removed. It prints the entries and stored
bytes before and after, and the directory's disk use as du counts its files
before gc opened it and after it closed it (while open, the store
preallocates tens of MiB that it gives back at close).`,
		Example: `  warm gc
  warm gc --disk 50GB`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			// du before the store opens: opening preallocates.
			duBefore, duErr := l2.DiskUsage(g.dir)
			var before, after l2.Stats
			err := g.withCache(func(c *tier.Cache) error {
				before = c.Stats().L2
				if err := c.GC(); err != nil {
					return err
				}
				after = c.Stats().L2
				return nil
			})
			if err != nil {
				return err
			}
			if duErr == nil {
				before.DiskBytes = duBefore
			}
			if du, err := l2.DiskUsage(g.dir); err == nil {
				after.DiskBytes = du
			}
			fmt.Fprintf(g.stdout, "entries %d -> %d, stored %s -> %s, disk use %s -> %s\n",
				before.Entries, after.Entries,
				humanize.IBytes(before.StoredBytes), humanize.IBytes(after.StoredBytes),
				humanize.IBytes(uint64(max(before.DiskBytes, 0))), humanize.IBytes(uint64(max(after.DiskBytes, 0))))
			return nil
		},
	}
}
