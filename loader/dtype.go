package loader

// DType is an element type, spelled as safetensors spells it.
type DType string

// The element types of safetensors.
const (
	BOOL   DType = "BOOL"
	U8     DType = "U8"
	I8     DType = "I8"
	U16    DType = "U16"
	I16    DType = "I16"
	F16    DType = "F16"
	BF16   DType = "BF16"
	U32    DType = "U32"
	I32    DType = "I32"
	F32    DType = "F32"
	U64    DType = "U64"
	I64    DType = "I64"
	F64    DType = "F64"
	F8E4M3 DType = "F8_E4M3"
	F8E5M2 DType = "F8_E5M2"
)

// Complex types, from .npy files: pairs of F32 or F64, real part first.
const (
	C64  DType = "C64"
	C128 DType = "C128"
)

var dtypeSizes = map[DType]int{
	BOOL: 1, U8: 1, I8: 1, F8E4M3: 1, F8E5M2: 1,
	U16: 2, I16: 2, F16: 2, BF16: 2,
	U32: 4, I32: 4, F32: 4,
	U64: 8, I64: 8, F64: 8,
}

var complexSizes = map[DType]int{C64: 8, C128: 16}

// safetensorsDType reports whether d is one of safetensors' own dtypes.
func safetensorsDType(d DType) bool { return dtypeSizes[d] > 0 }

// Size is the size of one element in bytes, or 0 for a dtype that has no
// whole-byte elements (GGUF's block-quantized types, see ggmlType) or is
// unknown.
func (d DType) Size() int {
	if n := dtypeSizes[d]; n > 0 {
		return n
	}
	return complexSizes[d]
}
