package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/modelcache/modelcache/tier"
)

func newVerifyCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Check every cached entry's checksums and drop damaged ones",
		Long: `verify reads every entry in the cache directory and checks its header and
chunk checksums. Damaged entries are named on stderr and dropped (they will be
reloaded from their model file when next read); nothing else is touched.
Damage that opening the directory found and repaired (a table's unreadable
blocks cut out, a manifest rebuilt, files set aside) is reported too, with
what it cost. Exit status 1 if anything was damaged.`,
		Example: `  warm verify
  warm verify --dir /var/cache/modelcache`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withCache(func(c *tier.Cache) error {
				repairs := c.Repairs()
				for _, r := range repairs {
					fmt.Fprintf(g.stderr, "warm: repaired at open: %s\n", r)
				}
				checked, bad, err := c.Verify(func(key string, err error) {
					fmt.Fprintf(g.stderr, "warm: damaged: %s: %v (dropped)\n", tier.DescribeKey(key), err)
				})
				if err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "verified %d entries: %d damaged and dropped; %d repairs at open\n", checked, bad, len(repairs))
				if bad > 0 || len(repairs) > 0 {
					return errReported
				}
				return nil
			})
		},
	}
}
