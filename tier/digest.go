package tier

import (
	"fmt"
	"strings"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/internal/key"
	"github.com/modelcache/modelcache/loader"
)

// Tensors are keyed by their file's path and version by default, and by
// their file's content digest with Options.ContentDigest (package key).

const digestAuxPrefix = "digest\x00" // L2 aux records: identity -> digest

// groupOf is the key group of the tensors of version id.
func (c *Cache) groupOf(id loader.Identity) (key.Group, error) {
	if !c.digest {
		return key.File(id), nil
	}
	d, err := c.digestOf(id)
	if err != nil {
		return key.Group{}, err
	}
	return key.Digest(d.String()), nil
}

func (c *Cache) keyOf(id loader.Identity, name string) (string, error) {
	g, err := c.groupOf(id)
	return g.Key(name), err
}

// keyModeAux records in L2 how its keys are made: "path" or "content".
const keyModeAux = "keymode"

// checkKeyMode makes the cache key the way its directory was first keyed:
// keyed the other way, every entry would miss and be cached a second time
// beside itself. A directory without the record but with entries predates
// it and is keyed by path. A difference from Options is logged.
func (c *Cache) checkKeyMode(dir string) error {
	mode := func(digest bool) string {
		if digest {
			return "content"
		}
		return "path"
	}
	recs, err := c.rec.Get(keyModeAux)
	if err != nil {
		return err
	}
	have, ok := recs[keyModeAux]
	if !ok && c.l2.Stats().Entries > 0 {
		have, ok = []byte("path"), true
	}
	if !ok {
		return c.rec.Set(keyModeAux, []byte(mode(c.digest)))
	}
	switch string(have) {
	case mode(c.digest):
	case "path", "content":
		c.log.Warn("tier: the cache directory keys by "+string(have)+", as it was created; ContentDigest is set accordingly", "dir", dir)
		c.digest = string(have) == "content"
	default:
		return fmt.Errorf("tier: %s: %w: key mode %.20q", dir, errs.ErrCorrupt, have)
	}
	return nil
}

// digestBlob is loader.DigestBlob; tests count its calls.
var digestBlob = loader.DigestBlob

// digestOf returns the digest of version id: remembered, kept in L2, or
// hashed now (once, however many callers ask).
func (c *Cache) digestOf(id loader.Identity) (loader.Digest, error) {
	ids := id.String()
	if d, ok := c.digests.Load(ids); ok {
		return d.(loader.Digest), nil
	}
	v, err, _ := c.hashing.Do(ids, func() (any, error) {
		if d, ok := c.digests.Load(ids); ok {
			return d, nil
		}
		if c.l2 != nil {
			if recs, err := c.rec.Get(digestAuxPrefix + ids); err == nil {
				if raw, ok := recs[digestAuxPrefix+ids]; ok {
					if d, err := loader.ParseDigest(string(raw)); err == nil {
						c.digests.Store(ids, d)
						return d, nil
					}
				}
			}
		}
		b, err := c.origin.OpenBlob(id.Path)
		if err != nil {
			return nil, err
		}
		defer closeBlob(b)
		if b.Identity() != id {
			return nil, fmt.Errorf("tier: %s: changed between stat and hashing; read it again", id.Path)
		}
		d, err := digestBlob(b)
		if err != nil {
			return nil, err
		}
		c.digests.Store(ids, d)
		if c.l2 != nil {
			if err := c.rec.Set(digestAuxPrefix+ids, []byte(d.String())); err != nil {
				c.log.Warn("tier: keeping a digest failed", "path", id.Path, "err", err)
			}
		}
		return d, nil
	})
	if err != nil {
		return loader.Digest{}, err
	}
	return v.(loader.Digest), nil
}

// gcDigests forgets the digests of versions that are no longer current.
func (c *Cache) gcDigests() error {
	recs, err := c.rec.Get(digestAuxPrefix)
	if err != nil {
		return err
	}
	for name := range recs {
		ids := strings.TrimPrefix(name, digestAuxPrefix)
		path, _, _ := strings.Cut(ids, "\x00")
		if id, err := c.origin.Stat(path); err == nil && id.String() == ids {
			continue
		}
		c.digests.Delete(ids)
		if err := c.rec.Set(name, nil); err != nil {
			return err
		}
	}
	return nil
}
