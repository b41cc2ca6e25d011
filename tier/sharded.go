package tier

import (
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
	iid, err := c.origin.Stat(ip)
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
	id, err := c.origin.Stat(path)
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
