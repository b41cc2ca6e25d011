package loader

import (
	"archive/zip"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/modelcache/modelcache/errs"
)

// maxNPZMembers bounds the arrays of one .npz file.
const maxNPZMembers = 1 << 20

// deflateMaxRatio is the most DEFLATE can expand: 258 bytes from a
// 2-bit code, about 1032:1. A member that declares more is refused before
// anything is inflated.
const deflateMaxRatio = 1032

// parseNPZBytes validates a whole .npz file (a zip of .npy files, stored or
// deflated, as numpy.savez and savez_compressed write them) and lists its
// arrays; each is named as its member without ".npy".
func parseNPZBytes(b []byte) ([]TensorInfo, error) {
	ts, _, err := parseNPZ(&fileBytes{size: uint64(len(b)), mapped: b})
	return ts, err
}

// parseNPZ parses the .npz file b holds, reading its directory and the
// .npy header of each member.
func parseNPZ(b *fileBytes) ([]TensorInfo, []tensorRead, error) {
	if b.size > math.MaxInt64 {
		return nil, nil, fmt.Errorf("%d bytes: too large", b.size)
	}
	zr, err := zip.NewReader(b, int64(b.size))
	if err != nil {
		return nil, nil, fmt.Errorf("not a valid zip archive: %w", err)
	}
	if len(zr.File) > maxNPZMembers {
		return nil, nil, fmt.Errorf("%d members, more than the %d allowed", len(zr.File), maxNPZMembers)
	}
	ts := make([]TensorInfo, 0, len(zr.File))
	rs := make([]tensorRead, 0, len(zr.File))
	seen := make(map[string]bool, len(zr.File))
	for _, f := range zr.File {
		t, r, err := npzMember(b, f)
		if err != nil {
			return nil, nil, fmt.Errorf("member %.100q: %w", f.Name, err)
		}
		if seen[t.Name] {
			return nil, nil, fmt.Errorf("member %.100q: array %s given twice", f.Name, errs.Quote(t.Name))
		}
		seen[t.Name] = true
		ts, rs = append(ts, t), append(rs, r)
	}
	return ts, rs, nil
}

func npzMember(b *fileBytes, f *zip.File) (TensorInfo, tensorRead, error) {
	var t TensorInfo
	var r tensorRead
	name, ok := strings.CutSuffix(f.Name, ".npy")
	if !ok || name == "" {
		return t, r, errors.New("not a .npy member")
	}
	if f.Flags&1 != 0 {
		return t, r, fmt.Errorf("encrypted: %w", errs.ErrUnsupported)
	}
	off, err := f.DataOffset()
	if err != nil {
		return t, r, err
	}
	csize, usize := f.CompressedSize64, f.UncompressedSize64
	if uint64(off) > b.size || csize > b.size-uint64(off) {
		return t, r, fmt.Errorf("%d compressed bytes at offset %d run past the end of the archive", csize, off)
	}
	var head []byte
	switch f.Method {
	case zip.Store:
		if csize != usize {
			return t, r, fmt.Errorf("stored member of %d bytes declares %d uncompressed", csize, usize)
		}
		if head, err = readNPYHead(io.NewSectionReader(b, off, int64(csize))); err != nil {
			return t, r, err
		}
	case zip.Deflate:
		if usize/deflateMaxRatio > csize+1 {
			return t, r, fmt.Errorf("declares %d bytes from %d compressed, more than DEFLATE can produce", usize, csize)
		}
		// Inflate only as far as the .npy header goes.
		rc, err := f.Open()
		if err != nil {
			return t, r, err
		}
		head, err = readNPYHead(rc)
		rc.Close()
		if err != nil {
			return t, r, err
		}
	default:
		return t, r, fmt.Errorf("compression method %d: %w (stored and deflated are read)", f.Method, errs.ErrUnsupported)
	}
	a, err := parseNPYHeader(head)
	if err != nil {
		return t, r, err
	}
	if usize < a.tensor.Offset || usize-a.tensor.Offset != a.tensor.Length {
		return t, r, fmt.Errorf("data is %d bytes, dtype %s and shape %v need %d", usize-min(usize, a.tensor.Offset), a.descr, a.tensor.Shape, a.tensor.Length)
	}
	t = a.tensor
	t.Name = name
	r = a.read()
	r.member, r.deflate, r.crc = true, f.Method == zip.Deflate, f.CRC32
	r.skip, r.stored = t.Offset, csize
	t.Offset = uint64(off)
	return t, r, nil
}

// readNPYHead reads a .npy header from the start of a member.
func readNPYHead(rd io.Reader) ([]byte, error) {
	pre := make([]byte, 12)
	n, err := io.ReadFull(rd, pre)
	if err != nil && err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, fmt.Errorf("reading the member: %w", err)
	}
	pre = pre[:n]
	if n < 10 || string(pre[:6]) != npyMagic {
		return nil, errors.New("not a .npy file (no \\x93NUMPY magic)")
	}
	total := npyHeadLen(pre)
	if total <= uint64(n) {
		return pre, nil // whole, or parseNPYHeader says what is wrong
	}
	rest := make([]byte, total-uint64(n))
	m, err := io.ReadFull(rd, rest)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, fmt.Errorf("reading the member: %w", err)
	}
	return append(pre, rest[:m]...), nil
}
