// Package serialize defines the modelcache entry format: how one cached value
// (a tensor, or any byte string) is split into chunks, compressed and
// checksummed, on disk (L2) and on the wire (L3).
//
// # Layout
//
// An entry is a Header followed by its chunks. The header records the format
// version, the dtype and shape of the tensor, the logical (uncompressed)
// length, the chunk size and, for each chunk, the codec that encoded it, its
// stored length and a CRC-32C of its uncompressed bytes. The header ends with
// a CRC-32C of itself. All integers are little-endian.
//
//	magic "MCEN" | version u16 | dtype len u8 | dtype | ndims u8 | dims u64... |
//	length u64 | chunk size u32 | nchunks u32 |
//	nchunks × (codec u8 | stored len u32 | crc32c u32) | header crc32c u32
//
// Every chunk but the last holds exactly ChunkSize logical bytes. Chunks are
// encoded and decoded independently, so large values are processed in
// parallel and a store may keep each chunk under its own key.
//
// # Codecs
//
// The codec is chosen per chunk and recorded, so a reader needs no hint:
//
//   - ByteGroup, for float dtypes (BF16, F16, F32, F64): the bytes of each
//     element are regrouped by position (all high bytes, then all next
//     bytes, ...). Trained weights have a low-entropy exponent byte and
//     near-random mantissa bytes; each group is Huffman-coded (huff0),
//     zstd-compressed or kept raw, whichever is smallest.
//   - Zstd, for other data.
//   - Raw, when neither saves 1/32 of the chunk.
//
// Codec ids are a byte; ids this build does not know are reported as
// errs.ErrUnsupported rather than guessed at.
//
// # Trust
//
// Parsing never trusts the bytes: every length is checked against the input
// and against fixed limits before anything is allocated, and a checksum
// mismatch is errs.ErrCorrupt. Decoded bytes are returned only after their
// checksum matched.
package serialize
