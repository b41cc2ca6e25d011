package pace

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// Transfers share the link: three of 100 kB at 1 MB/s, two of them at
// once, take 300 ms in all, and the link idle since does not bank credit.
func TestLink(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := New(1_000_000)
		start := time.Now()
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() { l.Wait(100_000) })
		}
		wg.Wait()
		l.Wait(100_000)
		if got := time.Since(start); got != 300*time.Millisecond {
			t.Fatalf("three transfers took %v, want 300ms", got)
		}
		time.Sleep(time.Second)
		start = time.Now()
		l.Wait(50_000)
		if got := time.Since(start); got != 50*time.Millisecond {
			t.Fatalf("after an idle second a transfer took %v, want 50ms", got)
		}
	})
}
