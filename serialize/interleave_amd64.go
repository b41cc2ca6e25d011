//go:build amd64 && !purego

package serialize

// interleave2SSE2 writes n elements of 2 bytes: dst[2i] = s0[i],
// dst[2i+1] = s1[i]; n is a multiple of 16. SSE2 is part of amd64.
//
//go:noescape
func interleave2SSE2(dst, s0, s1 *byte, n int)

// interleave4SSE2 writes n elements of 4 bytes from four byte groups;
// n is a multiple of 16.
//
//go:noescape
func interleave4SSE2(dst, s0, s1, s2, s3 *byte, n int)

// interleave2Wide interleaves as many leading elements as the vector code
// handles and returns how many.
func interleave2Wide(dst, s0, s1 []byte) int {
	n := min(len(s0), len(s1), len(dst)/2) &^ 15
	if n > 0 {
		interleave2SSE2(&dst[0], &s0[0], &s1[0], n)
	}
	return n
}

func interleave4Wide(dst, s0, s1, s2, s3 []byte) int {
	n := min(len(s0), len(s1), len(s2), len(s3), len(dst)/4) &^ 15
	if n > 0 {
		interleave4SSE2(&dst[0], &s0[0], &s1[0], &s2[0], &s3[0], n)
	}
	return n
}
