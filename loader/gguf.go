package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/modelcache/modelcache/errs"
)

// GGUF files, as ggml's docs/gguf.md specifies them (versions 2 and 3,
// little-endian): a header, typed key-value metadata, tensor infos, padding
// to general.alignment, then the tensor data.

const ggufMagic = "GGUF"

// Limits on what a GGUF header may ask for. Every count is also bounded by
// the bytes left in the file, so allocation stays in proportion to its size.
const (
	ggufDefaultAlignment = 32
	ggufMaxDims          = 4  // GGML_MAX_DIMS
	ggufMaxName          = 64 // GGML_MAX_NAME, bytes of a tensor name
	ggufMaxArrayDepth    = 4  // arrays of arrays, nested at most this deep
)

// ggufType is the type of a metadata value.
type ggufType uint32

// The 13 metadata value types.
const (
	ggufUint8 ggufType = iota
	ggufInt8
	ggufUint16
	ggufInt16
	ggufUint32
	ggufInt32
	ggufFloat32
	ggufBool
	ggufString
	ggufArray
	ggufUint64
	ggufInt64
	ggufFloat64
)

var ggufTypeNames = [...]string{"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string", "array", "uint64", "int64", "float64"}

func (t ggufType) String() string {
	if int(t) < len(ggufTypeNames) {
		return ggufTypeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// fixed is the size of a scalar value, 0 for string and array.
func (t ggufType) fixed() int {
	switch t {
	case ggufUint8, ggufInt8, ggufBool:
		return 1
	case ggufUint16, ggufInt16:
		return 2
	case ggufUint32, ggufInt32, ggufFloat32:
		return 4
	case ggufUint64, ggufInt64, ggufFloat64:
		return 8
	}
	return 0
}

// ggufkv is one metadata pair. Value holds a uint8, int8, uint16, int16,
// uint32, int32, float32, bool, string, uint64, int64, float64, or a
// ggufArrayValue.
type ggufkv struct {
	key   string
	Type  ggufType
	value any
}

// ggufArrayValue is an array: Values is a []uint8, []int8, ..., []string,
// or a []ggufArrayValue for an array of arrays.
type ggufArrayValue struct {
	elem   ggufType
	values any
}

// Len is the number of elements.
func (a ggufArrayValue) Len() int {
	switch v := a.values.(type) {
	case []uint8:
		return len(v)
	case []int8:
		return len(v)
	case []uint16:
		return len(v)
	case []int16:
		return len(v)
	case []uint32:
		return len(v)
	case []int32:
		return len(v)
	case []float32:
		return len(v)
	case []bool:
		return len(v)
	case []string:
		return len(v)
	case []uint64:
		return len(v)
	case []int64:
		return len(v)
	case []float64:
		return len(v)
	case []ggufArrayValue:
		return len(v)
	}
	return 0
}

// ggmlType is the type of a tensor's elements; most are block-quantized.
type ggmlType uint32

type ggmlTraits struct {
	name             string
	block, blockSize uint64 // elements per block, bytes per block
}

// ggmlTypes holds every type ggml defines today; the gaps are types removed
// from ggml (Q4_2, Q4_3, the Q4_0_x_y and IQ4_NL_x_y repackings), which
// files must not hold.
var ggmlTypes = map[ggmlType]ggmlTraits{
	0: {"F32", 1, 4}, 1: {"F16", 1, 2}, 2: {"Q4_0", 32, 18}, 3: {"Q4_1", 32, 20},
	6: {"Q5_0", 32, 22}, 7: {"Q5_1", 32, 24}, 8: {"Q8_0", 32, 34}, 9: {"Q8_1", 32, 36},
	10: {"Q2_K", 256, 84}, 11: {"Q3_K", 256, 110}, 12: {"Q4_K", 256, 144}, 13: {"Q5_K", 256, 176},
	14: {"Q6_K", 256, 210}, 15: {"Q8_K", 256, 292}, 16: {"IQ2_XXS", 256, 66}, 17: {"IQ2_XS", 256, 74},
	18: {"IQ3_XXS", 256, 98}, 19: {"IQ1_S", 256, 50}, 20: {"IQ4_NL", 32, 18}, 21: {"IQ3_S", 256, 110},
	22: {"IQ2_S", 256, 82}, 23: {"IQ4_XS", 256, 136}, 24: {"I8", 1, 1}, 25: {"I16", 1, 2},
	26: {"I32", 1, 4}, 27: {"I64", 1, 8}, 28: {"F64", 1, 8}, 29: {"IQ1_M", 256, 56},
	30: {"BF16", 1, 2}, 34: {"TQ1_0", 256, 54}, 35: {"TQ2_0", 256, 66}, 39: {"MXFP4", 32, 17},
}

// String is ggml's name of the type, which is also the DType of its tensors.
func (t ggmlType) String() string {
	if tr, ok := ggmlTypes[t]; ok {
		return tr.name
	}
	return fmt.Sprintf("ggml_type(%d)", uint32(t))
}

// BlockSize is the number of elements per block and the bytes of one block
// (1 and the element size for the unquantized types); ok is false for a
// type ggml does not define.
func (t ggmlType) BlockSize() (elems, bytes uint64, ok bool) {
	tr, ok := ggmlTypes[t]
	return tr.block, tr.blockSize, ok
}

// ggufHeader is a parsed GGUF file.
type ggufHeader struct {
	version   uint32
	metadata  []ggufkv // in file order
	alignment uint64
	// Tensors are in file order. Shape is outermost first, as NumPy and
	// safetensors give it: GGUF's ne[] reversed. Offset is absolute.
	tensors    []TensorInfo
	types      []ggmlType // of Tensors[i]
	dataOffset uint64     // start of the tensor data section
}

// Lookup returns the metadata value of key.
func (h *ggufHeader) lookup(key string) (ggufkv, bool) {
	for _, kv := range h.metadata {
		if kv.key == key {
			return kv, true
		}
	}
	return ggufkv{}, false
}

// StringMetadata formats the metadata, arrays of more than 16 elements
// abbreviated to their type and length.
func (h *ggufHeader) stringMetadata() map[string]string {
	m := make(map[string]string, len(h.metadata))
	for _, kv := range h.metadata {
		if a, ok := kv.value.(ggufArrayValue); ok {
			if n := a.Len(); n > 16 {
				m[kv.key] = fmt.Sprintf("[%d × %s]", n, a.elem)
				continue
			}
			m[kv.key] = fmt.Sprint(a.values)
			continue
		}
		m[kv.key] = fmt.Sprint(kv.value)
	}
	return m
}

// parseGGUFBytes validates a whole GGUF file and parses its header. Errors
// describe the defect; they do not name a file.
func parseGGUFBytes(b []byte) (*ggufHeader, error) {
	return parseGGUF(&ggufReader{b: b, size: uint64(len(b))})
}

// ggufFrom parses the GGUF file fb holds, reading no further than its
// header goes: a header longer than fb's head is read on in steps that
// double.
func ggufFrom(fb *fileBytes) (*ggufHeader, error) {
	if fb.mapped != nil {
		return parseGGUFBytes(fb.mapped)
	}
	first, err := fb.read(0, min(fb.size, headRead))
	if err != nil {
		return nil, err
	}
	return parseGGUF(&ggufReader{b: first, size: fb.size, more: fb})
}

func parseGGUF(r *ggufReader) (*ggufHeader, error) {
	if r.size < 24 || len(r.b) < 24 || string(r.b[:4]) != ggufMagic {
		return nil, errors.New("not a GGUF file (no GGUF magic)")
	}
	r.off = 4
	h := &ggufHeader{alignment: ggufDefaultAlignment}
	h.version, _ = r.u32()
	switch {
	case h.version == 2 || h.version == 3:
	case h.version == 1:
		return nil, fmt.Errorf("GGUF version 1 (32-bit counts): %w; convert it to v3", errs.ErrUnsupported)
	case bits.ReverseBytes32(h.version) == 2 || bits.ReverseBytes32(h.version) == 3:
		return nil, fmt.Errorf("big-endian GGUF: %w", errs.ErrUnsupported)
	default:
		return nil, fmt.Errorf("GGUF version %d: %w (2 and 3 are read)", h.version, errs.ErrUnsupported)
	}
	nt, _ := r.u64()
	nkv, _ := r.u64()
	// The smallest tensor info is 8 (name length) + 4 + 8 + 4 + 8 bytes, the
	// smallest pair 8 + 4 + 1; counts that cannot fit are refused before
	// anything is allocated for them.
	if nt > r.left()/32 {
		return nil, fmt.Errorf("%d tensors cannot fit in %d bytes", nt, r.size)
	}
	if nkv > r.left()/13 {
		return nil, fmt.Errorf("%d metadata pairs cannot fit in %d bytes", nkv, r.size)
	}
	h.metadata = make([]ggufkv, 0, nkv)
	keys := make(map[string]bool, nkv)
	for i := range nkv {
		key, err := r.str()
		if err != nil {
			return nil, fmt.Errorf("metadata pair %d: key: %w", i, err)
		}
		if !utf8.ValidString(key) || key == "" {
			return nil, fmt.Errorf("metadata pair %d: key %.64q is empty or not UTF-8", i, key)
		}
		if keys[key] {
			return nil, fmt.Errorf("metadata key %.64q given twice", key)
		}
		keys[key] = true
		t, err := r.u32()
		if err != nil {
			return nil, fmt.Errorf("metadata %.64q: %w", key, err)
		}
		v, err := r.value(ggufType(t), 0)
		if err != nil {
			return nil, fmt.Errorf("metadata %.64q: %w", key, err)
		}
		h.metadata = append(h.metadata, ggufkv{key: key, Type: ggufType(t), value: v})
		if key == "general.alignment" {
			a, ok := v.(uint32)
			if !ok {
				return nil, fmt.Errorf("general.alignment is a %s, not a uint32", ggufType(t))
			}
			if a == 0 || a&(a-1) != 0 {
				return nil, fmt.Errorf("general.alignment %d is not a power of two", a)
			}
			h.alignment = uint64(a)
		}
	}
	h.tensors = make([]TensorInfo, 0, nt)
	h.types = make([]ggmlType, 0, nt)
	names := make(map[string]bool, nt)
	for i := range nt {
		ti, typ, err := r.tensorInfo(names)
		if err != nil {
			return nil, fmt.Errorf("tensor %d: %w", i, err)
		}
		h.tensors, h.types = append(h.tensors, ti), append(h.types, typ)
	}
	pad := (h.alignment - r.off%h.alignment) % h.alignment
	h.dataOffset = r.off + pad
	if nt == 0 {
		return h, nil
	}
	if h.dataOffset > r.size {
		return nil, fmt.Errorf("tensor data would start at %d, past the end of %d bytes", h.dataOffset, r.size)
	}
	dataLen := r.size - h.dataOffset
	order := make([]int, len(h.tensors))
	for i := range order {
		order[i] = i
	}
	for _, t := range h.tensors {
		if t.Offset%h.alignment != 0 {
			return nil, fmt.Errorf("tensor %.64q: offset %d is not a multiple of the alignment %d", t.Name, t.Offset, h.alignment)
		}
		if t.Offset > dataLen || t.Length > dataLen-t.Offset {
			return nil, fmt.Errorf("tensor %.64q: %d bytes at data offset %d run past the end of the %d byte data section", t.Name, t.Length, t.Offset, dataLen)
		}
	}
	slices.SortFunc(order, func(a, b int) int {
		return cmpUint(h.tensors[a].Offset, h.tensors[b].Offset)
	})
	for k := 1; k < len(order); k++ {
		p, q := h.tensors[order[k-1]], h.tensors[order[k]]
		if p.Offset+p.Length > q.Offset {
			return nil, fmt.Errorf("tensors %.64q and %.64q overlap", p.Name, q.Name)
		}
	}
	for i := range h.tensors {
		h.tensors[i].Offset += h.dataOffset
	}
	return h, nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ggufReader reads a GGUF header from b, the first bytes of a file of size
// bytes, reading more from more as it needs them (when b is not the whole
// file).
type ggufReader struct {
	b    []byte
	size uint64
	more *fileBytes
	off  uint64
}

var errShort = errors.New("unexpected end of file")

func (r *ggufReader) left() uint64 { return r.size - r.off }

func (r *ggufReader) take(n uint64) ([]byte, error) {
	if n > r.left() {
		return nil, errShort
	}
	if end := r.off + n; end > uint64(len(r.b)) {
		have := uint64(len(r.b))
		p, err := r.more.read(have, min(r.size, max(end, 2*have))-have)
		if err != nil {
			return nil, err
		}
		r.b = append(r.b, p...)
	}
	p := r.b[r.off : r.off+n]
	r.off += n
	return p, nil
}

func (r *ggufReader) u32() (uint32, error) {
	p, err := r.take(4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(p), nil
}

func (r *ggufReader) u64() (uint64, error) {
	p, err := r.take(8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(p), nil
}

func (r *ggufReader) str() (string, error) {
	n, err := r.u64()
	if err != nil {
		return "", err
	}
	if n > r.left() {
		return "", fmt.Errorf("string of %d bytes runs past the end of the file", n)
	}
	p, err := r.take(n)
	if err != nil {
		return "", err
	}
	return string(p), nil
}

// value reads one value of type t; depth counts enclosing arrays.
func (r *ggufReader) value(t ggufType, depth int) (any, error) {
	if sz := t.fixed(); sz > 0 {
		p, err := r.take(uint64(sz))
		if err != nil {
			return nil, err
		}
		return scalar(t, p)
	}
	switch t {
	case ggufString:
		return r.str()
	case ggufArray:
		if depth >= ggufMaxArrayDepth {
			return nil, fmt.Errorf("arrays nested more than %d deep", ggufMaxArrayDepth)
		}
		et, err := r.u32()
		if err != nil {
			return nil, err
		}
		n, err := r.u64()
		if err != nil {
			return nil, err
		}
		return r.array(ggufType(et), n, depth+1)
	}
	return nil, fmt.Errorf("unknown value type %d", uint32(t))
}

func scalar(t ggufType, p []byte) (any, error) {
	le := binary.LittleEndian
	switch t {
	case ggufUint8:
		return p[0], nil
	case ggufInt8:
		return int8(p[0]), nil
	case ggufBool:
		if p[0] > 1 {
			return nil, fmt.Errorf("bool value %d is neither 0 nor 1", p[0])
		}
		return p[0] == 1, nil
	case ggufUint16:
		return le.Uint16(p), nil
	case ggufInt16:
		return int16(le.Uint16(p)), nil
	case ggufUint32:
		return le.Uint32(p), nil
	case ggufInt32:
		return int32(le.Uint32(p)), nil
	case ggufFloat32:
		return math.Float32frombits(le.Uint32(p)), nil
	case ggufUint64:
		return le.Uint64(p), nil
	case ggufInt64:
		return int64(le.Uint64(p)), nil
	case ggufFloat64:
		return math.Float64frombits(le.Uint64(p)), nil
	}
	return nil, fmt.Errorf("unknown value type %d", uint32(t))
}

func (r *ggufReader) array(et ggufType, n uint64, depth int) (any, error) {
	// Check the count against the bytes left before allocating: each
	// element takes at least min bytes.
	min := uint64(et.fixed())
	switch et {
	case ggufString:
		min = 8
	case ggufArray:
		min = 12
	}
	if min == 0 {
		return nil, fmt.Errorf("array of unknown type %d", uint32(et))
	}
	if n > r.left()/min {
		return nil, fmt.Errorf("array of %d %s elements cannot fit in the %d bytes left", n, et, r.left())
	}
	a := ggufArrayValue{elem: et}
	switch et {
	case ggufString:
		v := make([]string, n)
		for i := range v {
			s, err := r.str()
			if err != nil {
				return nil, fmt.Errorf("element %d: %w", i, err)
			}
			v[i] = s
		}
		a.values = v
	case ggufArray:
		v := make([]ggufArrayValue, n)
		for i := range v {
			x, err := r.value(ggufArray, depth)
			if err != nil {
				return nil, fmt.Errorf("element %d: %w", i, err)
			}
			v[i] = x.(ggufArrayValue)
		}
		a.values = v
	default:
		p, err := r.take(n * min)
		if err != nil {
			return nil, err
		}
		if a.values, err = scalars(et, p, int(n)); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// scalars decodes n fixed-size values into a typed slice.
func scalars(t ggufType, p []byte, n int) (any, error) {
	le := binary.LittleEndian
	switch t {
	case ggufUint8:
		return slices.Clone(p), nil
	case ggufInt8:
		return decodeAll(p, n, 1, func(b []byte) int8 { return int8(b[0]) }), nil
	case ggufBool:
		for i, b := range p[:n] {
			if b > 1 {
				return nil, fmt.Errorf("element %d: bool value %d is neither 0 nor 1", i, b)
			}
		}
		return decodeAll(p, n, 1, func(b []byte) bool { return b[0] == 1 }), nil
	case ggufUint16:
		return decodeAll(p, n, 2, le.Uint16), nil
	case ggufInt16:
		return decodeAll(p, n, 2, func(b []byte) int16 { return int16(le.Uint16(b)) }), nil
	case ggufUint32:
		return decodeAll(p, n, 4, le.Uint32), nil
	case ggufInt32:
		return decodeAll(p, n, 4, func(b []byte) int32 { return int32(le.Uint32(b)) }), nil
	case ggufFloat32:
		return decodeAll(p, n, 4, func(b []byte) float32 { return math.Float32frombits(le.Uint32(b)) }), nil
	case ggufUint64:
		return decodeAll(p, n, 8, le.Uint64), nil
	case ggufInt64:
		return decodeAll(p, n, 8, func(b []byte) int64 { return int64(le.Uint64(b)) }), nil
	case ggufFloat64:
		return decodeAll(p, n, 8, func(b []byte) float64 { return math.Float64frombits(le.Uint64(b)) }), nil
	}
	return nil, fmt.Errorf("unknown value type %d", uint32(t))
}

// decodeAll decodes n values of size bytes each from p.
func decodeAll[T any](p []byte, n, size int, dec func([]byte) T) []T {
	v := make([]T, n)
	for i := range v {
		v[i] = dec(p[i*size:])
	}
	return v
}

func (r *ggufReader) tensorInfo(names map[string]bool) (TensorInfo, ggmlType, error) {
	var ti TensorInfo
	name, err := r.str()
	if err != nil {
		return ti, 0, fmt.Errorf("name: %w", err)
	}
	if name == "" || len(name) > ggufMaxName || !utf8.ValidString(name) || strings.IndexByte(name, 0) >= 0 {
		return ti, 0, fmt.Errorf("name %.80q is empty, longer than %d bytes, or not UTF-8", name, ggufMaxName)
	}
	if names[name] {
		return ti, 0, fmt.Errorf("tensor %s given twice", errs.Quote(name))
	}
	names[name] = true
	ti.Name = name
	nd, err := r.u32()
	if err != nil {
		return ti, 0, err
	}
	if nd == 0 || nd > ggufMaxDims {
		return ti, 0, fmt.Errorf("tensor %s: %d dimensions (1 to %d allowed)", errs.Quote(name), nd, ggufMaxDims)
	}
	ne := make([]uint64, nd)
	n := uint64(1)
	for i := range ne {
		if ne[i], err = r.u64(); err != nil {
			return ti, 0, err
		}
		if ne[i] == 0 || ne[i] > math.MaxInt64 {
			return ti, 0, fmt.Errorf("tensor %s: dimension %d is %d", errs.Quote(name), i, ne[i])
		}
		hi, lo := bits.Mul64(n, ne[i])
		if hi != 0 || lo > math.MaxInt64 {
			return ti, 0, fmt.Errorf("tensor %s: dimensions %v: element count overflows", errs.Quote(name), ne[:i+1])
		}
		n = lo
	}
	t, err := r.u32()
	if err != nil {
		return ti, 0, err
	}
	typ := ggmlType(t)
	block, bsize, ok := typ.BlockSize()
	if !ok {
		return ti, 0, fmt.Errorf("tensor %s: unknown ggml type %d", errs.Quote(name), t)
	}
	if ne[0]%block != 0 {
		return ti, 0, fmt.Errorf("tensor %s: first dimension %d is not a multiple of %s's block of %d", errs.Quote(name), ne[0], typ, block)
	}
	hi, length := bits.Mul64(n/block, bsize)
	if hi != 0 || length > math.MaxInt64 {
		return ti, 0, fmt.Errorf("tensor %s: byte size overflows", errs.Quote(name))
	}
	if ti.Offset, err = r.u64(); err != nil {
		return ti, 0, err
	}
	ti.DType, ti.Length = DType(typ.String()), length
	slices.Reverse(ne)
	ti.Shape = ne
	return ti, typ, nil
}
