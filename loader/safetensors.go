package loader

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"strconv"
	"unicode/utf8"
)

// maxSafetensorsHeader is the largest safetensors JSON header accepted, as in
// the reference implementation.
const maxSafetensorsHeader = 100_000_000

// maxDims bounds the rank of a tensor.
const maxDims = 64

// TensorInfo locates one tensor in a model file.
type TensorInfo struct {
	Name   string
	DType  DType
	Shape  []uint64
	Offset uint64 // absolute offset of the first byte in the file
	Length uint64 // bytes
}

// safetensorsHeader is the parsed index of a safetensors file.
type safetensorsHeader struct {
	tensors  []TensorInfo // in the order of their offsets
	metadata map[string]string
	dataOff  uint64 // where the data section starts: 8 + header length
}

// parseSafetensors validates and parses a safetensors header. head is the
// JSON header (without its 8-byte length prefix) and fileSize the size of
// the whole file. It allocates in proportion to len(head) only. Errors
// describe the defect; they do not name a file.
func parseSafetensors(head []byte, fileSize uint64) (*safetensorsHeader, error) {
	if len(head) == 0 {
		return nil, errors.New("empty header")
	}
	if len(head) > maxSafetensorsHeader {
		return nil, fmt.Errorf("header of %d bytes exceeds the %d byte limit", len(head), maxSafetensorsHeader)
	}
	dataOff := 8 + uint64(len(head))
	if dataOff > fileSize {
		return nil, fmt.Errorf("header of %d bytes runs past the end of a %d byte file", len(head), fileSize)
	}
	if head[0] != '{' {
		return nil, errors.New("header does not start with '{'")
	}
	if !utf8.Valid(head) {
		return nil, errors.New("header is not valid UTF-8")
	}
	p := &stParser{dec: json.NewDecoder(bytes.NewReader(head))}
	p.dec.UseNumber()
	h, err := p.parse()
	if err != nil {
		return nil, err
	}
	h.dataOff = dataOff
	if err := checkLayout(h.tensors, fileSize-dataOff); err != nil {
		return nil, err
	}
	for i := range h.tensors {
		h.tensors[i].Offset += dataOff
	}
	return h, nil
}

type stParser struct {
	dec *json.Decoder
}

func (p *stParser) token() (json.Token, error) {
	t, err := p.dec.Token()
	if err == io.EOF {
		return nil, errors.New("header JSON ends early")
	}
	if err != nil {
		return nil, fmt.Errorf("header JSON: %w", err)
	}
	return t, nil
}

func (p *stParser) delim(want json.Delim, what string) error {
	t, err := p.token()
	if err != nil {
		return err
	}
	if d, ok := t.(json.Delim); !ok || d != want {
		return fmt.Errorf("%s: want %q, found %s", what, want, describe(t))
	}
	return nil
}

func (p *stParser) str(what string) (string, error) {
	t, err := p.token()
	if err != nil {
		return "", err
	}
	s, ok := t.(string)
	if !ok {
		return "", fmt.Errorf("%s: want a string, found %s", what, describe(t))
	}
	return s, nil
}

func (p *stParser) uint(what string) (uint64, error) {
	t, err := p.token()
	if err != nil {
		return 0, err
	}
	n, ok := t.(json.Number)
	if !ok {
		return 0, fmt.Errorf("%s: want a non-negative integer, found %s", what, describe(t))
	}
	v, err := strconv.ParseUint(string(n), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a non-negative 64-bit integer", what, string(n))
	}
	return v, nil
}

func describe(t json.Token) string {
	switch v := t.(type) {
	case json.Delim:
		return fmt.Sprintf("%q", string(v))
	case string:
		return fmt.Sprintf("string %.40q", v)
	case json.Number:
		return "number " + string(v)
	case bool:
		return fmt.Sprintf("boolean %v", v)
	case nil:
		return "null"
	}
	return fmt.Sprintf("%v", t)
}

func (p *stParser) parse() (*safetensorsHeader, error) {
	if err := p.delim('{', "header"); err != nil {
		return nil, err
	}
	h := &safetensorsHeader{}
	seen := make(map[string]bool)
	for p.dec.More() {
		name, err := p.str("tensor name")
		if err != nil {
			return nil, err
		}
		if seen[name] {
			return nil, fmt.Errorf("%.80q appears twice", name)
		}
		seen[name] = true
		if name == "__metadata__" {
			if h.metadata, err = p.metadata(); err != nil {
				return nil, err
			}
			continue
		}
		ti, err := p.tensor(name)
		if err != nil {
			return nil, err
		}
		h.tensors = append(h.tensors, ti)
	}
	if err := p.delim('}', "header"); err != nil {
		return nil, err
	}
	// Only the padding the format allows may follow the object.
	if _, err := p.dec.Token(); err != io.EOF {
		return nil, errors.New("header has data after its JSON object")
	}
	return h, nil
}

func (p *stParser) metadata() (map[string]string, error) {
	t, err := p.token()
	if err != nil {
		return nil, err
	}
	if t == nil {
		return nil, nil
	}
	if d, ok := t.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("__metadata__: want an object, found %s", describe(t))
	}
	m := make(map[string]string)
	for p.dec.More() {
		k, err := p.str("__metadata__ key")
		if err != nil {
			return nil, err
		}
		if _, dup := m[k]; dup {
			return nil, fmt.Errorf("__metadata__: key %.80q appears twice", k)
		}
		if m[k], err = p.str(fmt.Sprintf("__metadata__[%.80q]", k)); err != nil {
			return nil, err
		}
	}
	return m, p.delim('}', "__metadata__")
}

func (p *stParser) tensor(name string) (TensorInfo, error) {
	ti := TensorInfo{Name: name}
	what := fmt.Sprintf("tensor %.80q", name)
	if err := p.delim('{', what); err != nil {
		return ti, err
	}
	var haveDType, haveShape, haveOffsets bool
	var offsets [2]uint64
	for p.dec.More() {
		field, err := p.str(what + " field")
		if err != nil {
			return ti, err
		}
		switch field {
		case "dtype":
			if haveDType {
				return ti, fmt.Errorf("%s: dtype given twice", what)
			}
			haveDType = true
			s, err := p.str(what + " dtype")
			if err != nil {
				return ti, err
			}
			ti.DType = DType(s)
			if !safetensorsDType(ti.DType) {
				return ti, fmt.Errorf("%s: unknown dtype %.40q", what, s)
			}
		case "shape":
			if haveShape {
				return ti, fmt.Errorf("%s: shape given twice", what)
			}
			haveShape = true
			if ti.Shape, err = p.shape(what); err != nil {
				return ti, err
			}
		case "data_offsets":
			if haveOffsets {
				return ti, fmt.Errorf("%s: data_offsets given twice", what)
			}
			haveOffsets = true
			if err := p.delim('[', what+" data_offsets"); err != nil {
				return ti, err
			}
			for i := range offsets {
				if offsets[i], err = p.uint(what + " data_offsets"); err != nil {
					return ti, err
				}
			}
			if err := p.delim(']', what+" data_offsets (exactly two numbers)"); err != nil {
				return ti, err
			}
		default:
			return ti, fmt.Errorf("%s: unknown field %.40q", what, field)
		}
	}
	if err := p.delim('}', what); err != nil {
		return ti, err
	}
	switch {
	case !haveDType:
		return ti, fmt.Errorf("%s: no dtype", what)
	case !haveShape:
		return ti, fmt.Errorf("%s: no shape", what)
	case !haveOffsets:
		return ti, fmt.Errorf("%s: no data_offsets", what)
	}
	if offsets[1] < offsets[0] {
		return ti, fmt.Errorf("%s: data_offsets [%d, %d] end before they begin", what, offsets[0], offsets[1])
	}
	ti.Offset, ti.Length = offsets[0], offsets[1]-offsets[0]
	want, ok := byteSize(ti.DType, ti.Shape)
	if !ok {
		return ti, fmt.Errorf("%s: shape %v of %s overflows 64 bits", what, ti.Shape, ti.DType)
	}
	if want != ti.Length {
		return ti, fmt.Errorf("%s: shape %v of %s is %d bytes, data_offsets span %d", what, ti.Shape, ti.DType, want, ti.Length)
	}
	return ti, nil
}

func (p *stParser) shape(what string) ([]uint64, error) {
	if err := p.delim('[', what+" shape"); err != nil {
		return nil, err
	}
	shape := []uint64{}
	for p.dec.More() {
		if len(shape) == maxDims {
			return nil, fmt.Errorf("%s: more than %d dims", what, maxDims)
		}
		d, err := p.uint(what + " shape")
		if err != nil {
			return nil, err
		}
		shape = append(shape, d)
	}
	return shape, p.delim(']', what+" shape")
}

// byteSize is the product of shape and the dtype's size; ok is false on
// overflow.
func byteSize(dt DType, shape []uint64) (uint64, bool) {
	n := uint64(dt.Size())
	for _, d := range shape {
		hi, lo := bits.Mul64(n, d)
		if hi != 0 {
			return 0, false
		}
		n = lo
	}
	return n, true
}

// checkLayout requires the tensors to tile [0, dataLen) exactly: sorted by
// offset, each starts where the previous ended and the last ends at dataLen.
func checkLayout(ts []TensorInfo, dataLen uint64) error {
	slices.SortStableFunc(ts, func(a, b TensorInfo) int {
		if a.Offset != b.Offset {
			if a.Offset < b.Offset {
				return -1
			}
			return 1
		}
		// Zero-length tensors first, so they may share an offset with the
		// tensor that follows them.
		switch {
		case a.Length < b.Length:
			return -1
		case a.Length > b.Length:
			return 1
		}
		return 0
	})
	var end uint64
	for i, t := range ts {
		if t.Offset != end {
			if t.Offset < end {
				return fmt.Errorf("tensor %.80q at [%d, %d) overlaps tensor %.80q ending at %d", t.Name, t.Offset, t.Offset+t.Length, ts[i-1].Name, end)
			}
			return fmt.Errorf("gap in data: tensor %.80q starts at %d, the data before it ends at %d", t.Name, t.Offset, end)
		}
		end = t.Offset + t.Length // no overflow: Length was checked against offsets
	}
	if end != dataLen {
		if end > dataLen {
			return fmt.Errorf("tensor data ends at %d, past the %d bytes of the data section", end, dataLen)
		}
		return fmt.Errorf("tensor data ends at %d, but the data section holds %d bytes", end, dataLen)
	}
	return nil
}
