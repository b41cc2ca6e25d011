// Package resolve turns model names into paths in the local caches of the
// tools that download models:
//
//	hf:ORG/NAME[@REV][/FILE]   a Hugging Face hub snapshot
//	ollama:NAME[:TAG]          an Ollama model's GGUF blob
//
// Anything else is a path and is returned as it is. Nothing is downloaded:
// a model that is not in the local cache is errs.ErrNotFound, naming where
// it was looked for.
package resolve

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"

	"github.com/modelcache/modelcache/errs"
)

// Prefixes of the names Name resolves.
const (
	HF     = "hf:"
	Ollama = "ollama:"
)

// IsName reports whether s is a model name rather than a path.
func IsName(s string) bool {
	return strings.HasPrefix(s, HF) || strings.HasPrefix(s, Ollama)
}

// Name returns the path that s names: for hf: the snapshot's sharded
// checkpoint (its directory) or its one weights file, or FILE in it; for
// ollama: the model's GGUF blob. Other strings are returned unchanged.
func Name(s string) (string, error) {
	switch {
	case strings.HasPrefix(s, HF):
		return hfPath(strings.TrimPrefix(s, HF))
	case strings.HasPrefix(s, Ollama):
		return ollamaPath(strings.TrimPrefix(s, Ollama))
	}
	return s, nil
}

// Dir returns the directory s names, for walking: an hf: snapshot
// directory, or what Name returns for anything else.
func Dir(s string) (string, error) {
	if !strings.HasPrefix(s, HF) {
		return Name(s)
	}
	ref, err := parseHF(strings.TrimPrefix(s, HF))
	if err != nil {
		return "", err
	}
	if ref.file != "" {
		return hfPath(strings.TrimPrefix(s, HF))
	}
	return ref.snapshot()
}

// HFCache is the Hugging Face hub cache directory: $HF_HUB_CACHE, else
// $HF_HOME/hub, else ~/.cache/huggingface/hub (as huggingface_hub finds it).
func HFCache() string {
	if d := os.Getenv("HF_HUB_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("HF_HOME"); d != "" {
		return filepath.Join(d, "hub")
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "huggingface", "hub")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "huggingface", "hub")
}

// OllamaModels is Ollama's model directory: $OLLAMA_MODELS, else
// ~/.ollama/models.
func OllamaModels() string {
	if d := os.Getenv("OLLAMA_MODELS"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".ollama", "models")
}

var (
	// Hub repo and revision names: letters, digits, '-', '_', '.'; never
	// "." or "..".
	hfPart  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	hfRev   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	commit  = regexp.MustCompile(`^[0-9a-f]{40}$`)
	olPart  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	sha256s = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

type hfRef struct {
	org, name, rev, file string
}

func (r hfRef) String() string { return HF + r.org + "/" + r.name + "@" + r.rev }

// parseHF parses ORG/NAME[@REV][/FILE].
func parseHF(s string) (hfRef, error) {
	bad := func(why string) (hfRef, error) {
		return hfRef{}, fmt.Errorf("resolve: %s%s: %w: %s (want hf:ORG/NAME[@REVISION][/FILE])", HF, s, errs.ErrInvalidArgument, why)
	}
	org, rest, ok := strings.Cut(s, "/")
	if !ok {
		return bad("no organization")
	}
	r := hfRef{org: org, rev: "main"}
	r.name, r.file, _ = strings.Cut(rest, "/")
	if name, rev, ok := strings.Cut(r.name, "@"); ok {
		r.name, r.rev = name, rev
	}
	if !hfPart.MatchString(r.org) || !hfPart.MatchString(r.name) || strings.Contains(r.org+r.name, "..") {
		return bad("organization and name are letters, digits, '-', '_' and '.'")
	}
	if !hfRev.MatchString(r.rev) || strings.Contains(r.rev, "..") {
		return bad("bad revision")
	}
	if r.file != "" {
		clean := filepath.Clean(r.file)
		if filepath.IsAbs(clean) || clean == "." || clean == ".." || strings.HasPrefix(clean, "../") {
			return bad("the file must be a path inside the snapshot")
		}
		r.file = clean
	}
	return r, nil
}

// snapshot is the directory of the revision's snapshot.
func (r hfRef) snapshot() (string, error) {
	repo := filepath.Join(HFCache(), "models--"+r.org+"--"+r.name)
	if fi, err := os.Stat(repo); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("resolve: %s: not in the Hugging Face cache (%s): %w", r, repo, errs.ErrNotFound)
	}
	sha, named := r.rev, "snapshot "+r.rev
	if !commit.MatchString(sha) {
		ref := filepath.Join(repo, "refs", r.rev)
		b, err := readSmall(ref)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return "", fmt.Errorf("resolve: %s: no revision %s in %s: %w", r, errs.Quote(r.rev), filepath.Join(repo, "refs"), errs.ErrNotFound)
		case err != nil:
			return "", fmt.Errorf("resolve: %s: revision %s: %w", r, errs.Quote(r.rev), err)
		}
		// What the ref holds is never quoted: it may be any file (a
		// symlink to /etc/shadow), and a message must not show it.
		sha = strings.TrimSpace(string(b))
		if !commit.MatchString(sha) {
			return "", fmt.Errorf("resolve: %s: %s does not hold a commit hash (40 hex digits): %w", r, ref, errs.ErrInvalidModel)
		}
		named = "the snapshot " + ref + " names"
	}
	dir := filepath.Join(repo, "snapshots", sha)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("resolve: %s: %s is not downloaded (in %s): %w", r, named, filepath.Join(repo, "snapshots"), errs.ErrNotFound)
	}
	return dir, nil
}

// weightExts are the files a snapshot's weights are in, by preference.
var weightExts = []string{".safetensors", ".gguf"}

func hfPath(s string) (string, error) {
	r, err := parseHF(s)
	if err != nil {
		return "", err
	}
	dir, err := r.snapshot()
	if err != nil {
		return "", err
	}
	if r.file != "" {
		p := filepath.Join(dir, r.file)
		fi, err := os.Stat(p)
		if err != nil {
			return "", fmt.Errorf("resolve: %s: no %s in the snapshot: %w", r, r.file, errs.ErrNotFound)
		}
		if !fi.IsDir() {
			if err := regular(p, fi); err != nil {
				return "", fmt.Errorf("resolve: %s: %w", r, err)
			}
		}
		return p, nil
	}
	if _, err := os.Stat(filepath.Join(dir, "model.safetensors.index.json")); err == nil {
		return dir, nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("resolve: %s: %w", r, err)
	}
	for _, ext := range weightExts {
		var found []string
		for _, e := range ents {
			if strings.EqualFold(filepath.Ext(e.Name()), ext) {
				found = append(found, e.Name())
			}
		}
		switch {
		case slices.Contains(found, "model"+ext):
			return weightsFile(r, filepath.Join(dir, "model"+ext))
		case len(found) == 1:
			return weightsFile(r, filepath.Join(dir, found[0]))
		case len(found) > 1:
			return "", fmt.Errorf("resolve: %s: %d %s files and no index (%s); name one: %s/%s", r, len(found), ext,
				strings.Join(found, ", "), strings.TrimSuffix(r.String(), "@main"), found[0])
		}
	}
	return "", fmt.Errorf("resolve: %s: no weights (%s) in %s: %w", r, strings.Join(weightExts, ", "), dir, errs.ErrNotFound)
}

// weightsFile is p, the one weights file of r's snapshot, if it is a
// regular file (through its symlink into the blobs).
func weightsFile(r hfRef, p string) (string, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return "", fmt.Errorf("resolve: %s: %s: %w", r, p, errs.ErrNotFound)
	}
	if err := regular(p, fi); err != nil {
		return "", fmt.Errorf("resolve: %s: %w", r, err)
	}
	return p, nil
}

// regular refuses what is not a regular file (a FIFO, a device): opening
// one may block forever, or read without end.
func regular(p string, fi os.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file (%s): %w", p, fi.Mode().Type(), errs.ErrInvalidModel)
	}
	return nil
}

// ollamaManifest is the part of an Ollama manifest that locates the model.
type ollamaManifest struct {
	Layers []struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
	} `json:"layers"`
}

const ollamaModelLayer = "application/vnd.ollama.image.model"

// ollamaPath resolves [HOST/][NAMESPACE/]MODEL[:TAG] as Ollama does:
// registry.ollama.ai, library and latest by default.
func ollamaPath(s string) (string, error) {
	name, tag, ok := strings.Cut(s, ":")
	if !ok {
		tag = "latest"
	}
	parts := strings.Split(name, "/")
	switch len(parts) {
	case 1:
		parts = []string{"registry.ollama.ai", "library", parts[0]}
	case 2:
		parts = []string{"registry.ollama.ai", parts[0], parts[1]}
	case 3:
	default:
		return "", fmt.Errorf("resolve: %s%s: %w: want ollama:[HOST/][NAMESPACE/]MODEL[:TAG]", Ollama, s, errs.ErrInvalidArgument)
	}
	for _, p := range append(parts, tag) {
		if !olPart.MatchString(p) || strings.Contains(p, "..") {
			return "", fmt.Errorf("resolve: %s%s: %w: %q is not a valid name part", Ollama, s, errs.ErrInvalidArgument, p)
		}
	}
	root := OllamaModels()
	mpath := filepath.Join(append([]string{root, "manifests"}, append(parts, tag)...)...)
	b, err := readSmall(mpath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("resolve: %s%s: not in Ollama's models (%s): %w", Ollama, s, mpath, errs.ErrNotFound)
	case err != nil:
		return "", fmt.Errorf("resolve: %s%s: manifest: %w", Ollama, s, err)
	}
	// Neither the manifest's bytes nor the JSON decoder's message (which
	// quotes them) go into an error: the manifest may be any file.
	var m ollamaManifest
	if err := json.Unmarshal(b, &m); err != nil {
		return "", fmt.Errorf("resolve: %s%s: manifest %s is not an Ollama manifest (JSON): %w", Ollama, s, mpath, errs.ErrInvalidModel)
	}
	for _, l := range m.Layers {
		if l.MediaType != ollamaModelLayer {
			continue
		}
		if !sha256s.MatchString(l.Digest) {
			return "", fmt.Errorf("resolve: %s%s: manifest %s: the model layer's digest is not sha256:(64 hex digits): %w", Ollama, s, mpath, errs.ErrInvalidModel)
		}
		blob := filepath.Join(root, "blobs", strings.Replace(l.Digest, ":", "-", 1))
		fi, err := os.Stat(blob)
		if err != nil {
			return "", fmt.Errorf("resolve: %s%s: blob %s is missing: %w", Ollama, s, blob, errs.ErrNotFound)
		}
		if err := regular(blob, fi); err != nil {
			return "", fmt.Errorf("resolve: %s%s: %w", Ollama, s, err)
		}
		return blob, nil
	}
	return "", fmt.Errorf("resolve: %s%s: manifest %s has no model layer: %w", Ollama, s, mpath, errs.ErrInvalidModel)
}

// maxSmall bounds what readSmall reads: refs and manifests are small, and
// a name must not make us read a huge file.
const maxSmall = 1 << 20

func readSmall(path string) ([]byte, error) { return ReadRegular(path, maxSmall) }

// ReadRegular reads the regular file at path, of at most max bytes. It is
// opened non-blocking and checked before it is read: opening a FIFO for
// reading waits for a writer, forever, and a device reads without end.
// Errors name the file, never what it holds.
func ReadRegular(path string, max int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if err := regular(path, fi); err != nil {
		return nil, err
	}
	tooLarge := fmt.Errorf("%s: larger than %d bytes: %w", path, max, errs.ErrInvalidModel)
	if fi.Size() > max {
		return nil, tooLarge
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if int64(len(b)) > max {
		return nil, tooLarge
	}
	return b, nil
}
