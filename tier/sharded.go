package tier

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/loader"
)

// A sharded checkpoint is a router: each tensor is cached under the identity
// of the shard file that holds it, exactly as if that file were asked for,
// so a changed shard invalidates its own tensors only.

type shardIndex struct {
	id  loader.Identity // of the index file when parsed
	idx *loader.ShardIndex
}

// sharded reports whether id is a sharded checkpoint: an index file or a
// directory (holding one).
func sharded(id loader.Identity) bool {
	return id.IsDir || strings.HasSuffix(id.Path, ".safetensors.index.json")
}

func indexPath(id loader.Identity) string {
	if id.IsDir {
		return filepath.Join(id.Path, loader.ShardIndexName)
	}
	return id.Path
}

// shardIndexOf returns the index of the checkpoint id names, parsed at the
// index file's current identity (re-read when it changes), and its path.
func (c *Cache) shardIndexOf(id loader.Identity) (*loader.ShardIndex, string, error) {
	ip := indexPath(id)
	iid, err := loader.Stat(ip)
	if err != nil {
		return nil, "", err
	}
	if v, ok := c.indexes.Load(ip); ok && v.(*shardIndex).id == iid {
		return v.(*shardIndex).idx, ip, nil
	}
	idx, err := loader.ReadShardIndex(ip)
	if err != nil {
		return nil, "", err
	}
	c.indexes.Store(ip, &shardIndex{id: iid, idx: idx})
	return idx, ip, nil
}

// shardOf returns the path of the shard holding name.
func (c *Cache) shardOf(id loader.Identity, name string) (string, error) {
	idx, ip, err := c.shardIndexOf(id)
	if err != nil {
		return "", err
	}
	shard, ok := idx.WeightMap[name]
	if !ok {
		return "", fmt.Errorf("tier: %s: tensor %s: %w", ip, errs.Quote(name), errs.ErrNotFound)
	}
	return filepath.Join(filepath.Dir(ip), shard), nil
}

// modelFiles lists the files of the model at path: its shards if it is a
// sharded checkpoint, else path itself.
func (c *Cache) modelFiles(path string) ([]string, error) {
	id, err := loader.Stat(path)
	if err != nil {
		return nil, err
	}
	if !sharded(id) {
		return []string{path}, nil
	}
	idx, ip, err := c.shardIndexOf(id)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(idx.Shards))
	for i, s := range idx.Shards {
		out[i] = filepath.Join(filepath.Dir(ip), s)
	}
	return out, nil
}

// warmSharded validates the whole checkpoint, then warms shard by shard.
func (c *Cache) warmSharded(ctx context.Context, path string, progress func(uint64)) (*WarmResult, error) {
	s, err := loader.OpenSharded(path)
	if err != nil {
		return nil, err
	}
	shards := make([]string, 0, len(s.Shards()))
	for _, f := range s.Shards() {
		shards = append(shards, f.Path())
	}
	res := &WarmResult{Path: s.Path()}
	s.Close()
	for _, p := range shards {
		r, err := c.WarmFunc(ctx, p, progress)
		if r != nil {
			res.Tensors += r.Tensors
			res.Written += r.Written
			res.Skipped += r.Skipped
			res.LogicalBytes += r.LogicalBytes
			res.WrittenBytes += r.WrittenBytes
		}
		if err != nil {
			return res, err
		}
	}
	return res, nil
}
