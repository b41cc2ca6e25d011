package server

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/loader"
	"github.com/modelcache/modelcache/resolve"
)

// Who may read what. A client names a model by an absolute path or by a
// name (hf:, ollama:); the daemon reads it with its own rights, so it
// reads only what lies in the trees it was told to serve (Options.Roots,
// warm serve --root), and for names in the cache the name belongs to.
// Paths are resolved as the kernel resolves them (symlinks, "..", /proc
// indirections) before they are compared, and what the cache is then given
// to open is a path whose directories were resolved, so that a symlink
// outside the roots cannot be turned elsewhere between the check and the
// open.

// maxPath bounds what a client may name (PATH_MAX): resolving costs
// system calls by the component, and nothing longer can be opened anyway.
const maxPath = 4096

// maxHops bounds the dangling symlinks followed by hand (the kernel's
// ELOOP bound).
const maxHops = 40

// realPath is p (absolute, clean) with every symlink resolved. A tail
// that does not exist (a model file deleted, kept in the cache) is kept as
// it is under its resolved parent, and a dangling symlink counts as the
// path it points to: a file created there later is what an open would
// reach.
func realPath(p string) (string, error) { return realPathHops(p, 0) }

func realPathHops(p string, hops int) (string, error) {
	var tail []string // missing components, last first
	for {
		real, err := filepath.EvalSymlinks(p)
		if err == nil {
			return joinTail(real, tail), nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		if fi, lerr := os.Lstat(p); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
			if hops >= maxHops {
				return "", fmt.Errorf("%s: too many levels of symbolic links", p)
			}
			to, err := os.Readlink(p)
			if err != nil {
				return "", err
			}
			if !filepath.IsAbs(to) {
				dir, err := realPathHops(filepath.Dir(p), hops+1)
				if err != nil {
					return "", err
				}
				to = filepath.Join(dir, to)
			}
			real, err := realPathHops(filepath.Clean(to), hops+1)
			if err != nil {
				return "", err
			}
			return joinTail(real, tail), nil
		}
		dir := filepath.Dir(p)
		if dir == p {
			return "", err
		}
		tail = append(tail, filepath.Base(p))
		p = dir
	}
}

// joinTail is dir with the components of tail (last first) below it.
func joinTail(dir string, tail []string) string {
	if len(tail) == 0 {
		return dir
	}
	parts := make([]string, 0, len(tail)+1)
	parts = append(parts, dir)
	for i := len(tail) - 1; i >= 0; i-- {
		parts = append(parts, tail[i])
	}
	return filepath.Join(parts...)
}

// resolveRoots resolves the roots once; one that cannot be resolved (not
// there yet) is kept clean, and matches only what resolves into it.
func resolveRoots(roots []string) []string {
	var out []string
	for _, r := range roots {
		if r == "" {
			continue
		}
		abs, err := filepath.Abs(r)
		if err != nil {
			continue
		}
		if real, err := realPath(abs); err == nil {
			abs = real
		}
		out = append(out, abs)
	}
	return out
}

// inside reports whether p (resolved) is one of roots or under one.
func inside(p string, roots []string) bool {
	for _, r := range roots {
		if r == "/" || p == r || strings.HasPrefix(p, r+"/") {
			return true
		}
	}
	return false
}

// forbidden is the error of a path outside the roots. It names what the
// client named, not where it resolves to (a symlink's target may be
// something the client cannot see).
func forbidden(name, why string) error {
	return fmt.Errorf("server: %s: %w: %s", errs.Quote(name), errs.ErrForbidden, why)
}

// allow checks what a client named (an absolute path, or an hf: or
// ollama: name) against the roots and returns the path the cache is to
// open: ErrInvalidArgument for a relative path, ErrForbidden for one
// outside the roots. Nothing is opened but directories (to resolve
// symlinks) and, for a sharded checkpoint, its index.
func (h *Handler) allow(name string) (string, error) {
	if len(name) > maxPath {
		return "", fmt.Errorf("server: a path of %d bytes: %w: at most %d", len(name), errs.ErrInvalidArgument, maxPath)
	}
	roots := h.roots
	var p string
	switch {
	case resolve.IsName(name):
		var err error
		if p, err = resolve.Name(name); err != nil {
			return "", err
		}
		cache := resolve.HFCache()
		if strings.HasPrefix(name, resolve.Ollama) {
			cache = resolve.OllamaModels()
		}
		roots = append(resolveRoots([]string{cache}), roots...)
		p = filepath.Clean(p)
		if !filepath.IsAbs(p) {
			if p, err = filepath.Abs(p); err != nil {
				return "", err
			}
		}
	case !filepath.IsAbs(name):
		return "", fmt.Errorf("server: %s: %w: a relative path (the daemon's working directory is not the client's): give an absolute path, or a name (hf:ORG/NAME, ollama:NAME)", errs.Quote(name), errs.ErrInvalidArgument)
	case len(roots) == 0:
		return "", forbidden(name, "this daemon serves no file by path (start it with --root DIR; Options.Roots)")
	default:
		p = filepath.Clean(name)
	}
	open, err := h.allowed(name, p, roots)
	if err != nil {
		return "", err
	}
	if idx, ok := loader.ShardIndexPath(open); ok {
		// Each shard the index names must lie in a root too (a shard may
		// be a symlink).
		if _, err := h.allowed(name, idx, roots); err != nil {
			return "", err
		}
		b, err := resolve.ReadRegular(idx, loader.MaxShardIndex)
		if err != nil {
			return open, nil // the cache answers the error, as without roots
		}
		si, err := loader.ParseShardIndex(b)
		if err != nil {
			return open, nil
		}
		for _, s := range si.Shards {
			if _, err := h.allowed(name, filepath.Join(filepath.Dir(idx), s), roots); err != nil {
				return "", err
			}
		}
	}
	return open, nil
}

// allowed checks p (absolute, clean) against roots and returns what to
// open: p with its directories resolved when those lie in a root (so that
// a snapshot's symlink keeps the name its format is told by), else p
// resolved whole.
func (h *Handler) allowed(name, p string, roots []string) (string, error) {
	real, err := realPath(p)
	if err != nil {
		// The reason may name a symlink's target: not shown.
		return "", forbidden(name, "its path cannot be resolved")
	}
	if !inside(real, roots) {
		return "", forbidden(name, "outside every root this daemon serves (--root; symlinks and .. resolved)")
	}
	if real == p {
		return p, nil
	}
	dir := filepath.Dir(p)
	if dir == p {
		return real, nil
	}
	rd, err := realPath(dir)
	if err != nil || !inside(rd, roots) {
		return real, nil
	}
	return filepath.Join(rd, filepath.Base(p)), nil
}
