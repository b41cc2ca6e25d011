// Package stripe picks, for the calling goroutine, one of n stripes of a
// striped counter or buffer.
package stripe

import "unsafe"

// Of picks a stripe below n (a power of two) for the calling goroutine from
// its stack's address (otter's idea): one goroutine keeps using the same
// stripe, so its updates stay in order and the line stays in its core's
// cache, while goroutines running at the same time mostly use different
// ones. The address's low 11 bits depend on call depth, not on the
// goroutine, and are dropped.
func Of(n uint64) uint64 {
	var x byte
	a := uint64(uintptr(unsafe.Pointer(&x))) >> 11
	a ^= a >> 33
	a *= 0xff51afd7ed558ccd
	a ^= a >> 33
	return a & (n - 1)
}
