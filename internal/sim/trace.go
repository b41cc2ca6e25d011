package sim

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"strconv"

	"github.com/ulikunitz/xz"
)

// Trace is a sequence of requests. Keys are 64-bit: integer keys as they
// are, string keys hashed (FNV-1a). Sizes is nil for unweighted traces.
type Trace struct {
	Name  string
	Keys  []uint64
	Sizes []uint32
}

// MaxRequests bounds what Read loads, so that a huge or hostile file cannot
// exhaust memory: 200 million requests (1.6 GB of keys).
const MaxRequests = 200_000_000

// Read loads the trace in the named file.
func Read(path string) (*Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	defer f.Close()
	t, err := Decode(f)
	if err != nil {
		return nil, fmt.Errorf("sim: %s: %w", path, err)
	}
	t.Name = path
	return t, nil
}

// Decode reads a trace from r (see the package doc for formats).
func Decode(r io.Reader) (*Trace, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	magic, _ := br.Peek(6)
	var in io.Reader = br
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		in = zr
	case bytes.HasPrefix(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		xr, err := xz.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		in = xr
	}
	body := bufio.NewReaderSize(in, 1<<16)
	head, err := body.Peek(4096)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return nil, err
	}
	if isText(head) {
		return decodeText(body)
	}
	return decodeCache2k(body)
}

func isText(b []byte) bool {
	for _, c := range b {
		if c != '\n' && c != '\r' && c != '\t' && (c < 0x20 || c > 0x7e) {
			return false
		}
	}
	return true
}

func decodeText(r *bufio.Reader) (*Trace, error) {
	t := &Trace{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	line := 0
	for sc.Scan() {
		line++
		f := bytes.Fields(sc.Bytes())
		if len(f) == 0 {
			continue
		}
		if len(f) > 2 {
			return nil, fmt.Errorf("line %d: want a key and at most a size, found %d fields", line, len(f))
		}
		if len(t.Keys) >= MaxRequests {
			return nil, fmt.Errorf("more than %d requests", MaxRequests)
		}
		t.Keys = append(t.Keys, key(f[0]))
		if len(f) == 2 {
			n, err := strconv.ParseUint(string(f[1]), 10, 32)
			if err != nil {
				return nil, fmt.Errorf("line %d: size %q: not a 32-bit count of bytes", line, f[1])
			}
			if t.Sizes == nil {
				if len(t.Keys) > 1 {
					return nil, fmt.Errorf("line %d: a size, but earlier lines had none", line)
				}
				t.Sizes = []uint32{}
			}
			t.Sizes = append(t.Sizes, uint32(n))
		} else if t.Sizes != nil {
			return nil, fmt.Errorf("line %d: no size, but earlier lines had one", line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return t, nil
}

func key(b []byte) uint64 {
	if n, err := strconv.ParseUint(string(b), 10, 64); err == nil {
		return n
	}
	h := fnv.New64a()
	h.Write(b)
	return h.Sum64()
}

func decodeCache2k(r io.Reader) (*Trace, error) {
	t := &Trace{}
	var buf [4096]byte
	var carry int
	for {
		n, err := io.ReadFull(r, buf[carry:])
		n += carry
		whole := n &^ 3
		for i := 0; i < whole; i += 4 {
			if len(t.Keys) >= MaxRequests {
				return nil, fmt.Errorf("more than %d requests", MaxRequests)
			}
			t.Keys = append(t.Keys, uint64(binary.BigEndian.Uint32(buf[i:])))
		}
		carry = copy(buf[:], buf[whole:n])
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			if carry != 0 {
				return nil, fmt.Errorf("cache2k trace: %d trailing bytes, not a whole 4-byte key", carry)
			}
			return t, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// Footprint is the number of distinct keys and their bytes (each key's
// first size, or 1 per key for unweighted traces).
func (t *Trace) Footprint() (keys int, bytes uint64) {
	seen := make(map[uint64]struct{}, len(t.Keys)/4)
	for i, k := range t.Keys {
		if _, ok := seen[k]; ok {
			continue
		}
		seen[k] = struct{}{}
		if t.Sizes != nil {
			bytes += uint64(t.Sizes[i])
		} else {
			bytes++
		}
	}
	return len(seen), bytes
}

// RequestBytes is the bytes of all requests (1 per request for unweighted
// traces).
func (t *Trace) RequestBytes() uint64 {
	if t.Sizes == nil {
		return uint64(len(t.Keys))
	}
	var n uint64
	for _, s := range t.Sizes {
		n += uint64(s)
	}
	return n
}
