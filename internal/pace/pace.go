// Package pace spaces transfers as one link of a fixed rate would: the
// stand-in for a slow origin (network storage) in measurements.
package pace

import (
	"sync"
	"time"
)

// Link carries bytes at a fixed rate, one transfer after another. It is
// safe for concurrent use.
type Link struct {
	rate float64 // bytes a second

	mu   sync.Mutex
	next time.Time // when the link is free
}

// New is a link of bytesPerSec (at least 1).
func New(bytesPerSec int64) *Link { return &Link{rate: float64(max(bytesPerSec, 1))} }

// Wait returns when the link has carried n bytes after those before them.
func (l *Link) Wait(n int) {
	d := time.Duration(float64(n) / l.rate * float64(time.Second))
	l.mu.Lock()
	start := l.next
	if now := time.Now(); start.Before(now) {
		start = now
	}
	l.next = start.Add(d)
	done := l.next
	l.mu.Unlock()
	time.Sleep(time.Until(done))
}
