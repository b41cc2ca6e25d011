// Package sim replays cache access traces against eviction policies and
// generates traces of model serving, to choose a policy and size L1.
//
// # Traces
//
// Read accepts, compressed with gzip or xz or not:
//   - text, one request per line: a key (an integer or any string), or a key
//     and a size in bytes separated by white space, for weighted traces;
//   - the cache2k binary format: a sequence of big-endian uint32 keys.
//
// The format is recognized from the bytes: text is printable ASCII.
//
// # Serving traces
//
// GenerateServing writes the accesses of an inference service: many models of
// different sizes, chosen with Zipf popularity; swapping a model in reads all
// its tensors in file order (a scan), serving it reads a hot subset again and
// again.
package sim
