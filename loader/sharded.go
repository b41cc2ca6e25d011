package loader

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/modelcache/modelcache/errs"
)

// ShardIndexName is the index of a sharded safetensors checkpoint, as
// Hugging Face writes it.
const ShardIndexName = "model.safetensors.index.json"

// ShardedFormat is the Format of a sharded checkpoint.
const ShardedFormat Format = "safetensors-sharded"

// MaxShardIndex bounds the size of an index file.
const MaxShardIndex = 64 << 20

// ShardIndex is a parsed model.safetensors.index.json.
type ShardIndex struct {
	metadata  map[string]any    // "metadata", as JSON decodes it; may be nil
	WeightMap map[string]string // tensor name -> shard file name
	Shards    []string          // the distinct shard file names, sorted
}

// ShardIndexPath returns the index file of a sharded checkpoint at path: path
// itself if it names an index (*.safetensors.index.json), the index inside it
// if path is a directory holding one; ok is false otherwise.
func ShardIndexPath(path string) (string, bool) {
	if strings.HasSuffix(path, ".safetensors.index.json") {
		return path, true
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		p := filepath.Join(path, ShardIndexName)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, true
		}
	}
	return "", false
}

// ParseShardIndex validates an index: a JSON object whose "weight_map" maps
// each tensor name once to a shard file in the index's own directory.
func ParseShardIndex(b []byte) (*ShardIndex, error) {
	if len(b) > MaxShardIndex {
		return nil, fmt.Errorf("index of %d bytes exceeds the %d byte limit", len(b), MaxShardIndex)
	}
	if !utf8.Valid(b) {
		return nil, errors.New("index is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := expectDelim(dec, '{', "index"); err != nil {
		return nil, err
	}
	idx := &ShardIndex{}
	seen := map[string]bool{}
	for dec.More() {
		k, err := stringToken(dec, "index key")
		if err != nil {
			return nil, err
		}
		if seen[k] {
			return nil, fmt.Errorf("index key %.40q given twice", k)
		}
		seen[k] = true
		switch k {
		case "weight_map":
			if idx.WeightMap, err = weightMap(dec); err != nil {
				return nil, err
			}
		case "metadata":
			if err := dec.Decode(&idx.metadata); err != nil {
				return nil, fmt.Errorf("metadata: %w", err)
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return nil, fmt.Errorf("%.40q: %w", k, err)
			}
		}
	}
	if err := expectDelim(dec, '}', "index"); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("bytes after the index object")
	}
	if idx.WeightMap == nil {
		return nil, errors.New(`index has no "weight_map"`)
	}
	set := map[string]bool{}
	for _, s := range idx.WeightMap {
		set[s] = true
	}
	for s := range set {
		idx.Shards = append(idx.Shards, s)
	}
	slices.Sort(idx.Shards)
	return idx, nil
}

func weightMap(dec *json.Decoder) (map[string]string, error) {
	if err := expectDelim(dec, '{', "weight_map"); err != nil {
		return nil, err
	}
	m := map[string]string{}
	for dec.More() {
		name, err := stringToken(dec, "weight_map key")
		if err != nil {
			return nil, err
		}
		if _, dup := m[name]; dup {
			return nil, fmt.Errorf("tensor %.80q listed twice in weight_map", name)
		}
		shard, err := stringToken(dec, fmt.Sprintf("shard of %.80q", name))
		if err != nil {
			return nil, err
		}
		// A shard is a file next to the index, never a path elsewhere.
		if shard == "" || shard != filepath.Base(shard) || shard == "." || shard == ".." || strings.ContainsAny(shard, "/\\\x00") {
			return nil, fmt.Errorf("tensor %.80q: shard %.80q is not a file name in the index's directory", name, shard)
		}
		m[name] = shard
	}
	return m, expectDelim(dec, '}', "weight_map")
}

func expectDelim(dec *json.Decoder, want json.Delim, what string) error {
	t, err := dec.Token()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if d, ok := t.(json.Delim); !ok || d != want {
		return fmt.Errorf("%s: expected %q, found %v", what, want, t)
	}
	return nil
}

func stringToken(dec *json.Decoder, what string) (string, error) {
	t, err := dec.Token()
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	s, ok := t.(string)
	if !ok {
		return "", fmt.Errorf("%s: expected a string, found %v", what, t)
	}
	return s, nil
}

// readShardIndex reads and validates the index file at path.
func readShardIndex(path string) (*ShardIndex, error) {
	b, err := openLocal(path)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	return ReadShardIndexBlob(b)
}

// ReadShardIndexBlob reads and validates the index file b holds.
func ReadShardIndexBlob(b Blob) (*ShardIndex, error) {
	id := b.Identity()
	if id.Size < 0 || id.Size > MaxShardIndex {
		return nil, invalid(id.Path, "index of %d bytes exceeds the %d byte limit", id.Size, MaxShardIndex)
	}
	buf := make([]byte, id.Size)
	if err := readFull(b, buf, 0); err != nil {
		return nil, fmt.Errorf("loader: %s: %w", id.Path, err)
	}
	idx, err := ParseShardIndex(buf)
	if err != nil {
		return nil, invalid(id.Path, "%w", err)
	}
	return idx, nil
}

// Sharded is an open sharded safetensors checkpoint: every shard opened and
// checked against the index. Safe for concurrent use.
type Sharded struct {
	path   string // the index
	index  *ShardIndex
	shards map[string]*File
	// tensors in shard order, then file order; where: name -> its shard.
	tensors []TensorInfo
	where   map[string]*File
}

// OpenSharded opens the checkpoint whose index is at path, or in the
// directory path. Every shard must exist and hold exactly the tensors the
// index assigns to it.
func OpenSharded(path string) (*Sharded, error) {
	ip, ok := ShardIndexPath(path)
	if !ok {
		return nil, fmt.Errorf("loader: %s: no %s: %w", path, ShardIndexName, errs.ErrNotFound)
	}
	b, err := openLocal(ip)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	return openSharded(b, func(p string) (Blob, error) { return OpenLocal(p) })
}

// openSharded opens the checkpoint whose index index holds, opening each
// shard, by its path beside the index, with open.
func openSharded(index Blob, open func(path string) (Blob, error)) (*Sharded, error) {
	idx, err := ReadShardIndexBlob(index)
	if err != nil {
		return nil, err
	}
	s := &Sharded{path: index.Identity().Path, index: idx, shards: map[string]*File{}, where: map[string]*File{}}
	if err := s.openShards(open); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// openShards opens every shard and checks it against the index.
func (s *Sharded) openShards(open func(path string) (Blob, error)) error {
	ip, idx := s.path, s.index
	for _, name := range idx.Shards {
		b, err := open(filepath.Join(filepath.Dir(ip), name))
		var f *File
		if err == nil {
			f, err = OpenBlob(b, "")
		}
		if err != nil {
			return fmt.Errorf("loader: %s: shard %s: %w", ip, name, err)
		}
		s.shards[name] = f
		if f.Format() != Safetensors {
			return invalid(ip, "shard %s is %s, not safetensors", name, f.Format())
		}
		for _, t := range f.Tensors() {
			if other, dup := s.where[t.Name]; dup {
				return invalid(ip, "tensor %s is in both %s and %s", errs.Quote(t.Name), filepath.Base(other.Path()), name)
			}
			if idx.WeightMap[t.Name] != name {
				return invalid(ip, "shard %s holds tensor %s, which the index places in %s", name, errs.Quote(t.Name), errs.Quote(idx.WeightMap[t.Name]))
			}
			s.where[t.Name] = f
			s.tensors = append(s.tensors, t)
		}
	}
	for name, shard := range idx.WeightMap {
		if _, ok := s.where[name]; !ok {
			return invalid(ip, "tensor %s is not in its shard %s", errs.Quote(name), shard)
		}
	}
	return nil
}

// Path is the index file's absolute path.
func (s *Sharded) Path() string { return s.path }

// Format is ShardedFormat.
func (s *Sharded) Format() Format { return ShardedFormat }

// Index is the parsed index.
func (s *Sharded) Index() *ShardIndex { return s.index }

// Shards are the open shard files, in name order.
func (s *Sharded) Shards() []*File {
	out := make([]*File, 0, len(s.shards))
	for _, name := range s.index.Shards {
		out = append(out, s.shards[name])
	}
	return out
}

// Tensors lists every tensor, shard by shard. Offsets are within the
// tensor's own shard (see Shard).
func (s *Sharded) Tensors() []TensorInfo { return s.tensors }

// Tensor looks up one tensor.
func (s *Sharded) Tensor(name string) (TensorInfo, bool) {
	f, ok := s.where[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.Tensor(name)
}

// Shard is the file holding the named tensor.
func (s *Sharded) Shard(name string) (*File, bool) {
	f, ok := s.where[name]
	return f, ok
}

// ReadTensor reads the named tensor from its shard.
func (s *Sharded) ReadTensor(name string) ([]byte, error) {
	f, ok := s.where[name]
	if !ok {
		return nil, fmt.Errorf("loader: %s: tensor %s: %w", s.path, errs.Quote(name), errs.ErrNotFound)
	}
	return f.ReadTensor(name)
}

// Close closes every shard.
func (s *Sharded) Close() error {
	var first error
	for _, f := range s.shards {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// OpenSource opens a sharded checkpoint (an index, or a directory holding
// one) or a single file of any format.
func OpenSource(path string) (Source, error) {
	if _, ok := ShardIndexPath(path); ok {
		return OpenSharded(path)
	}
	return Open(path)
}
