package loader

import (
	"encoding/hex"
	"fmt"
	"io"

	"github.com/zeebo/blake3"
)

// Digest is the BLAKE3-256 hash of a file's content. BLAKE3 because a
// content-addressed cache shared between machines must not be poisonable
// by a crafted collision, so the hash must be cryptographic, and BLAKE3 is
// the fastest such hash in Go here (2.2 GB/s on a buffer where SHA-256
// does 1.0; docs/BENCHMARKS.md).
type Digest [32]byte

// String spells the digest with its algorithm: "blake3:" and 64 hex digits.
func (d Digest) String() string { return "blake3:" + hex.EncodeToString(d[:]) }

// ParseDigest reads what String wrote.
func ParseDigest(s string) (Digest, error) {
	var d Digest
	const p = "blake3:"
	if len(s) != len(p)+64 || s[:len(p)] != p {
		return d, fmt.Errorf("loader: digest %.80q: not blake3:<64 hex digits>", s)
	}
	if _, err := hex.Decode(d[:], []byte(s[len(p):])); err != nil {
		return d, fmt.Errorf("loader: digest %.80q: %w", s, err)
	}
	return d, nil
}

// digestFile hashes the file at path and returns the identity of the
// version it hashed. A file that changes while it is hashed is an error,
// so a digest never describes a mix of two versions.
func digestFile(path string) (Digest, Identity, error) {
	b, err := openLocal(path)
	if err != nil {
		return Digest{}, Identity{}, err
	}
	defer b.Close()
	d, err := DigestBlob(b)
	return d, b.id, err
}

// digestBuffer is the size of the reads DigestBlob issues.
const digestBuffer = 1 << 20

// DigestBlob hashes the bytes of b, the version b.Identity names. A local
// file (OpenLocal) changed while it is hashed is an error; any other Blob
// reports a change on read.
func DigestBlob(b Blob) (Digest, error) {
	var d Digest
	id := b.Identity()
	h := blake3.New()
	// Plain reads, not a mapping: a file truncated meanwhile is a short
	// read here, never a fault.
	n, err := io.CopyBuffer(h, io.NewSectionReader(b, 0, id.Size), make([]byte, digestBuffer))
	if err != nil {
		return d, fmt.Errorf("loader: %s: hashing: %w", id.Path, err)
	}
	changed := n != id.Size
	if lb, ok := b.(*localBlob); ok && !changed {
		after, err := lb.fd.Stat()
		if err != nil {
			return d, fmt.Errorf("loader: %s: %w", id.Path, err)
		}
		changed = identityOf(id.Path, after) != id
	}
	if changed {
		return d, fmt.Errorf("loader: %s: the file changed while it was hashed", id.Path)
	}
	h.Sum(d[:0])
	return d, nil
}
