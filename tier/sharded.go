package tier

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
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
		if id.IsDir && errors.Is(err, fs.ErrNotExist) {
			return nil, "", c.notACheckpoint(id.Path)
		}
		return nil, "", err
	}
	if v, ok := c.indexes.Load(ip); ok && v.(*shardIndex).id == iid {
		return v.(*shardIndex).idx, ip, nil
	}
	b, err := c.origin.OpenBlob(ip)
	if err != nil {
		return nil, "", err
	}
	defer closeBlob(b)
	idx, err := loader.ReadShardIndexBlob(b)
	if err != nil {
		return nil, "", err
	}
	// Under the version read, which may be newer than the one stat'ed.
	c.indexes.Store(ip, &shardIndex{id: b.Identity(), idx: idx})
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

// notACheckpoint is the error of a directory asked for as a model that is
// no sharded checkpoint: it names the models it holds, to choose from.
func (c *Cache) notACheckpoint(dir string) error {
	var models []string
	ents, _ := c.origin.List(dir) // for the message only
	for _, e := range ents {
		name := filepath.Base(e.Path)
		switch {
		case !e.IsDir && slices.Contains([]string{".safetensors", ".gguf", ".npy", ".npz"}, strings.ToLower(filepath.Ext(name))):
			models = append(models, name)
		case e.IsDir:
			if id, err := c.origin.Stat(filepath.Join(e.Path, loader.ShardIndexName)); err == nil && !id.IsDir {
				models = append(models, name+"/")
			}
		}
	}
	const shown = 8
	list := strings.Join(models[:min(len(models), shown)], ", ")
	if len(models) > shown {
		list += fmt.Sprintf(" and %d more", len(models)-shown)
	}
	switch len(models) {
	case 0:
		return fmt.Errorf("tier: %s: %w: a directory holding no model file and no %s", dir, errs.ErrInvalidModel, loader.ShardIndexName)
	case 1:
		return fmt.Errorf("tier: %s: %w: a directory, not a sharded checkpoint (no %s); it holds one model: name it (%s)", dir, errs.ErrInvalidModel, loader.ShardIndexName, filepath.Join(dir, list))
	}
	return fmt.Errorf("tier: %s: %w: a directory of %d models, not one sharded checkpoint (no %s): name one of them: %s", dir, errs.ErrInvalidModel, len(models), loader.ShardIndexName, list)
}
