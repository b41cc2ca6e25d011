//go:build !amd64 || purego

package serialize

// Without vector code every element goes through the portable loops.
func interleave2Wide(dst, s0, s1 []byte) int         { return 0 }
func interleave4Wide(dst, s0, s1, s2, s3 []byte) int { return 0 }
