package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/modelcache/modelcache/errs"
)

const npyMagic = "\x93NUMPY"

// maxNPYHeader bounds the header of a .npy file (NumPy's own reader stops
// at 10,000 bytes unless told otherwise).
const maxNPYHeader = 1 << 20

// npyArray is the parsed header of a .npy file (format versions 1.0, 2.0
// and 3.0).
type npyArray struct {
	// Tensor has DType and Shape; Offset is where the data starts within the
	// .npy bytes, Length its size. ReadTensor returns it little-endian and
	// row-major.
	tensor       TensorInfo
	major, minor byte
	descr        string // as written, e.g. "<f4"
	fortranOrder bool
	bigEndian    bool
}

func (a *npyArray) read() tensorRead {
	r := tensorRead{stored: a.tensor.Length, fortran: a.fortranOrder, elem: a.tensor.DType.Size()}
	if a.bigEndian {
		r.swap = r.elem
		if a.tensor.DType == C64 || a.tensor.DType == C128 {
			r.swap /= 2 // each part on its own
		}
	}
	return r
}

// parseNPY validates a whole .npy file: header and data length.
func parseNPY(b []byte) (*npyArray, error) {
	a, err := parseNPYHeader(b)
	if err != nil {
		return nil, err
	}
	if have := uint64(len(b)) - a.tensor.Offset; have != a.tensor.Length {
		return nil, fmt.Errorf("data is %d bytes, dtype %s and shape %v need %d", have, a.descr, a.tensor.Shape, a.tensor.Length)
	}
	return a, nil
}

// npyFrom parses the .npy file fb holds, reading its header only.
func npyFrom(fb *fileBytes) (*npyArray, error) {
	if fb.mapped != nil {
		return parseNPY(fb.mapped)
	}
	pre, err := fb.read(0, min(fb.size, 12))
	if err != nil {
		return nil, err
	}
	head := pre
	if n := npyHeadLen(pre); n > uint64(len(pre)) {
		if head, err = fb.read(0, min(n, fb.size)); err != nil {
			return nil, err
		}
	}
	a, err := parseNPYHeader(head)
	if err != nil {
		return nil, err
	}
	if have := fb.size - a.tensor.Offset; have != a.tensor.Length {
		return nil, fmt.Errorf("data is %d bytes, dtype %s and shape %v need %d", have, a.descr, a.tensor.Shape, a.tensor.Length)
	}
	return a, nil
}

// npyHeadLen is the length of the .npy header (magic, version, length and
// dict) whose first 12 bytes, or fewer, are pre; 0 when pre does not tell
// or the length is past what parseNPYHeader accepts (which it then says).
func npyHeadLen(pre []byte) uint64 {
	var n uint64
	switch {
	case len(pre) < 10 || string(pre[:6]) != npyMagic:
		return 0
	case pre[6] == 1:
		n = 10 + uint64(binary.LittleEndian.Uint16(pre[8:]))
	case len(pre) >= 12:
		n = 12 + uint64(binary.LittleEndian.Uint32(pre[8:]))
	}
	if n > 12+maxNPYHeader {
		return 0
	}
	return n
}

// parseNPYHeader parses the header at the start of b, which need not hold
// the data.
func parseNPYHeader(b []byte) (*npyArray, error) {
	if len(b) < 10 || string(b[:6]) != npyMagic {
		return nil, errors.New("not a .npy file (no \\x93NUMPY magic)")
	}
	a := &npyArray{major: b[6], minor: b[7]}
	var hlen, start uint64
	switch {
	case a.major == 1 && a.minor == 0:
		hlen, start = uint64(binary.LittleEndian.Uint16(b[8:])), 10
	case (a.major == 2 || a.major == 3) && a.minor == 0:
		if len(b) < 12 {
			return nil, errors.New("truncated header length")
		}
		hlen, start = uint64(binary.LittleEndian.Uint32(b[8:])), 12
	default:
		return nil, fmt.Errorf("format version %d.%d: %w", a.major, a.minor, errs.ErrUnsupported)
	}
	if hlen > maxNPYHeader {
		return nil, fmt.Errorf("header of %d bytes exceeds the %d byte limit", hlen, maxNPYHeader)
	}
	if start+hlen > uint64(len(b)) {
		return nil, fmt.Errorf("header of %d bytes runs past the end of %d bytes", hlen, len(b))
	}
	h := b[start : start+hlen]
	if a.major < 3 {
		for _, c := range h {
			if c >= 0x80 {
				return nil, fmt.Errorf("header of version %d.0 is not ASCII (3.0 allows UTF-8)", a.major)
			}
		}
	} else if !utf8.Valid(h) {
		return nil, errors.New("header is not valid UTF-8")
	}
	if len(h) == 0 || h[len(h)-1] != '\n' {
		return nil, errors.New("header does not end with a newline")
	}
	if err := a.parseDict(h); err != nil {
		return nil, err
	}
	a.tensor.Offset = start + hlen
	return a, nil
}

// parseDict parses the header, a Python dict literal such as
// {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }.
func (a *npyArray) parseDict(h []byte) error {
	p := &pyLexer{s: h}
	if err := p.expect('{'); err != nil {
		return err
	}
	seen := map[string]bool{}
	for {
		if p.peek() == '}' {
			p.i++
			break
		}
		key, err := p.str()
		if err != nil {
			return fmt.Errorf("header key: %w", err)
		}
		if seen[key] {
			return fmt.Errorf("header key %s given twice", errs.Quote(key))
		}
		seen[key] = true
		if err := p.expect(':'); err != nil {
			return err
		}
		switch key {
		case "descr":
			d, err := p.str()
			if err != nil {
				return fmt.Errorf("descr: %w", err)
			}
			if err := a.setDescr(d); err != nil {
				return err
			}
		case "fortran_order":
			w := p.word()
			switch w {
			case "True":
				a.fortranOrder = true
			case "False":
			default:
				return fmt.Errorf("fortran_order is %.20q, not True or False", w)
			}
		case "shape":
			if a.tensor.Shape, err = p.tuple(); err != nil {
				return fmt.Errorf("shape: %w", err)
			}
		default:
			return fmt.Errorf("unknown header key %.40q", key)
		}
		if p.peek() == ',' {
			p.i++
		} else if p.peek() != '}' {
			return fmt.Errorf("header: expected ',' or '}' at byte %d", p.i)
		}
	}
	if p.skipSpace(); p.i != len(p.s) {
		return fmt.Errorf("header: bytes after the dict at byte %d", p.i)
	}
	for _, k := range []string{"descr", "fortran_order", "shape"} {
		if !seen[k] {
			return fmt.Errorf("header has no %q", k)
		}
	}
	length, ok := byteSize(a.tensor.DType, a.tensor.Shape)
	if !ok || length > 1<<62 {
		return fmt.Errorf("shape %v of %s: byte size overflows", a.tensor.Shape, a.descr)
	}
	a.tensor.Length = length
	return nil
}

var npyKinds = map[string]DType{
	"b1": BOOL, "?": BOOL,
	"i1": I8, "i2": I16, "i4": I32, "i8": I64,
	"u1": U8, "u2": U16, "u4": U32, "u8": U64,
	"f2": F16, "f4": F32, "f8": F64,
	"c8": C64, "c16": C128,
}

func (a *npyArray) setDescr(d string) error {
	a.descr = d
	order, kind := byte('|'), d
	if len(d) > 0 && (d[0] == '<' || d[0] == '>' || d[0] == '|' || d[0] == '=') {
		order, kind = d[0], d[1:]
	}
	dt, ok := npyKinds[kind]
	if !ok {
		return fmt.Errorf("dtype %.40q: %w (numeric, boolean and complex dtypes are read; structured, string and object arrays are not)", d, errs.ErrUnsupported)
	}
	a.tensor.DType = dt
	switch order {
	case '>':
		a.bigEndian = dt.Size() > 1
	case '=':
		if dt.Size() > 1 {
			return fmt.Errorf("dtype %q: native byte order '=' does not say which order the file holds", d)
		}
	case '|':
		if dt.Size() > 1 {
			return fmt.Errorf("dtype %q: '|' (not applicable) on a multi-byte type", d)
		}
	}
	return nil
}

// pyLexer reads the few Python literals a .npy header holds.
type pyLexer struct {
	s []byte
	i int
}

func (p *pyLexer) skipSpace() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\n' || p.s[p.i] == '\t' || p.s[p.i] == '\r') {
		p.i++
	}
}

func (p *pyLexer) peek() byte {
	p.skipSpace()
	if p.i >= len(p.s) {
		return 0
	}
	return p.s[p.i]
}

func (p *pyLexer) expect(c byte) error {
	if p.peek() != c {
		return fmt.Errorf("header: expected %q at byte %d", c, p.i)
	}
	p.i++
	return nil
}

// str reads a quoted string without escapes.
func (p *pyLexer) str() (string, error) {
	q := p.peek()
	if q != '\'' && q != '"' {
		return "", fmt.Errorf("expected a quoted string at byte %d", p.i)
	}
	for j := p.i + 1; j < len(p.s); j++ {
		switch p.s[j] {
		case q:
			v := string(p.s[p.i+1 : j])
			p.i = j + 1
			return v, nil
		case '\\', '\n':
			return "", fmt.Errorf("escape or newline in a string at byte %d", j)
		}
	}
	return "", errors.New("unterminated string")
}

func (p *pyLexer) word() string {
	p.skipSpace()
	j := p.i
	for j < len(p.s) && (p.s[j] >= 'a' && p.s[j] <= 'z' || p.s[j] >= 'A' && p.s[j] <= 'Z') {
		j++
	}
	w := string(p.s[p.i:j])
	p.i = j
	return w
}

// tuple reads a tuple of non-negative integers: (), (3,), (3, 4).
func (p *pyLexer) tuple() ([]uint64, error) {
	if err := p.expect('('); err != nil {
		return nil, err
	}
	shape := []uint64{}
	for {
		if p.peek() == ')' {
			p.i++
			return shape, nil
		}
		if len(shape) == maxDims {
			return nil, fmt.Errorf("more than %d dimensions", maxDims)
		}
		j := p.i
		for j < len(p.s) && p.s[j] >= '0' && p.s[j] <= '9' {
			j++
		}
		if j == p.i {
			return nil, fmt.Errorf("expected a non-negative integer at byte %d", p.i)
		}
		d, err := strconv.ParseUint(string(p.s[p.i:j]), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("dimension %s: %w", p.s[p.i:j], err)
		}
		p.i = j
		if p.i < len(p.s) && p.s[p.i] == 'L' { // Python 2 long
			p.i++
		}
		shape = append(shape, d)
		switch p.peek() {
		case ',':
			p.i++
		case ')':
		default:
			return nil, fmt.Errorf("expected ',' or ')' at byte %d", p.i)
		}
	}
}
