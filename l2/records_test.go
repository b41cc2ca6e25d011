package l2

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// A counter that comes to 0 is removed: tier moves the counts of a
// namespace it stops keeping by name to another counter by adding -v, and
// the records it kept must go, or they would pile up process after
// process.
func TestRecords_CounterAtZeroIsRemoved(t *testing.T) {
	r := openStore(t, t.TempDir()).Records()
	require.NoError(t, r.Add(map[string]uint64{"a": 5, "b": 2}))
	five := uint64(5)
	require.NoError(t, r.Add(map[string]uint64{"a": -five, "b": 1, "c": 0}))
	got, err := r.Counts()
	require.NoError(t, err)
	require.Equal(t, map[string]uint64{"b": 3}, got)
}
