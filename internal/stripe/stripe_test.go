package stripe

import (
	"sync"
	"testing"
)

// A goroutine keeps its stripe; many goroutines spread over the stripes.
func TestOf(t *testing.T) {
	const n = 32
	seen := map[uint64]bool{}
	var mu sync.Mutex
	var wg, alive sync.WaitGroup
	alive.Add(256)
	for range 256 {
		wg.Go(func() {
			// Every goroutine lives until all have picked, so that none
			// reuses another's stack.
			defer alive.Wait()
			defer alive.Done()
			s := Of(n)
			for range 10 {
				if Of(n) != s {
					t.Error("a goroutine's stripe changed")
				}
			}
			if s >= n {
				t.Errorf("stripe %d of %d", s, n)
			}
			mu.Lock()
			seen[s] = true
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(seen) < n/2 {
		t.Errorf("256 goroutines used %d of %d stripes", len(seen), n)
	}
}
