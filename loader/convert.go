package loader

import "math/bits"

// swapBytes reverses the bytes of every width-byte element of b in place.
func swapBytes(b []byte, width int) {
	switch width {
	case 2:
		for i := 0; i+1 < len(b); i += 2 {
			b[i], b[i+1] = b[i+1], b[i]
		}
	case 4:
		for i := 0; i+3 < len(b); i += 4 {
			v := bits.ReverseBytes32(uint32(b[i]) | uint32(b[i+1])<<8 | uint32(b[i+2])<<16 | uint32(b[i+3])<<24)
			b[i], b[i+1], b[i+2], b[i+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
		}
	default:
		for i := 0; i+width <= len(b); i += width {
			for l, r := i, i+width-1; l < r; l, r = l+1, r-1 {
				b[l], b[r] = b[r], b[l]
			}
		}
	}
}

// fortranToC returns the elem-byte elements of src, stored in column-major
// order for shape, in row-major order.
func fortranToC(src []byte, shape []uint64, elem int) []byte {
	if len(shape) < 2 || len(src) == 0 {
		return src
	}
	dst := make([]byte, len(src))
	// Column-major strides, in elements.
	stride := make([]uint64, len(shape))
	s := uint64(1)
	for k := range shape {
		stride[k] = s
		s *= shape[k]
	}
	idx := make([]uint64, len(shape))
	var off uint64 // source element of idx
	last := len(shape) - 1
	for d := 0; d < len(dst); d += elem {
		copy(dst[d:d+elem], src[off*uint64(elem):])
		// Advance idx in row-major order: the last axis fastest.
		for k := last; k >= 0; k-- {
			idx[k]++
			off += stride[k]
			if idx[k] < shape[k] {
				break
			}
			off -= stride[k] * idx[k]
			idx[k] = 0
		}
	}
	return dst
}
