package tier

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// BenchmarkOpenWarmed measures tier.Open (and Close) of a directory that
// holds a warmed model: what a restarted service pays before its first read.
func BenchmarkOpenWarmed(b *testing.B) {
	dir := b.TempDir()
	c, err := Open(&Options{Dir: dir, Logger: nilLogger()})
	require.NoError(b, err)
	_, err = c.Warm(context.Background(), testModel)
	require.NoError(b, err)
	require.NoError(b, c.Close())
	b.ResetTimer()
	for b.Loop() {
		c, err := Open(&Options{Dir: dir, Logger: nilLogger()})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		c.Close()
		b.StartTimer()
	}
}
