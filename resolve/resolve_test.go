package resolve

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
)

const commitA = "0123456789abcdef0123456789abcdef01234567"
const commitB = "89abcdef0123456789abcdef0123456789abcdef"

// hfLayout builds a hub cache as huggingface_hub leaves it: blobs named by
// hash, snapshots of symlinks into them, refs naming commits.
func hfLayout(t *testing.T, repo string, snapshots map[string][]string, refs map[string]string) string {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, repo)
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "blobs"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "refs"), 0o755))
	for sha, files := range snapshots {
		for i, f := range files {
			blob := filepath.Join(dir, "blobs", sha[:8]+string(rune('a'+i)))
			require.NoError(t, os.WriteFile(blob, []byte(f), 0o644))
			link := filepath.Join(dir, "snapshots", sha, f)
			require.NoError(t, os.MkdirAll(filepath.Dir(link), 0o755))
			rel, err := filepath.Rel(filepath.Dir(link), blob)
			require.NoError(t, err)
			require.NoError(t, os.Symlink(rel, link))
		}
	}
	for ref, sha := range refs {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "refs", ref), []byte(sha), 0o644))
	}
	return root
}

func TestHF(t *testing.T) {
	root := hfLayout(t, "models--org--tiny", map[string][]string{
		commitA: {"model.safetensors", "config.json"},
		commitB: {"model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"},
	}, map[string]string{"main": commitA, "v2": commitB + "\n"})
	t.Setenv("HF_HUB_CACHE", root)
	snap := filepath.Join(root, "models--org--tiny", "snapshots")

	p, err := Name("hf:org/tiny")
	require.NoError(t, err)
	require.Equal(t, filepath.Join(snap, commitA, "model.safetensors"), p)
	p, err = Name("hf:org/tiny@v2")
	require.NoError(t, err)
	require.Equal(t, filepath.Join(snap, commitB), p, "a sharded snapshot is its directory")
	p, err = Name("hf:org/tiny@" + commitB + "/model-00002-of-00002.safetensors")
	require.NoError(t, err)
	require.Equal(t, filepath.Join(snap, commitB, "model-00002-of-00002.safetensors"), p)
	d, err := Dir("hf:org/tiny")
	require.NoError(t, err)
	require.Equal(t, filepath.Join(snap, commitA), d)

	for name, want := range map[string]string{
		"hf:org/other":                           "not in the Hugging Face cache",
		"hf:org/tiny@v9":                         `no revision "v9"`,
		"hf:org/tiny@" + strings.Repeat("f", 40): "is not downloaded",
		"hf:org/tiny/nope.bin":                   "no nope.bin",
		"hf:tiny":                                "no organization",
		"hf:org/../x":                            "organization and name",
		"hf:org/tiny/../../etc/passwd":           "inside the snapshot",
	} {
		_, err := Name(name)
		require.ErrorContains(t, err, want, name)
	}
	_, err = Name("hf:org/other")
	require.ErrorIs(t, err, errs.ErrNotFound)

	// Where the variables point.
	t.Setenv("HF_HUB_CACHE", "")
	t.Setenv("HF_HOME", "/x/hf")
	require.Equal(t, "/x/hf/hub", HFCache())
	t.Setenv("HF_HOME", "")
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HOME", "/home/u")
	require.Equal(t, "/home/u/.cache/huggingface/hub", HFCache())
}

func TestHF_SeveralWeightFiles(t *testing.T) {
	root := hfLayout(t, "models--org--two", map[string][]string{commitA: {"a.gguf", "b.gguf"}}, map[string]string{"main": commitA})
	t.Setenv("HF_HUB_CACHE", root)
	_, err := Name("hf:org/two")
	require.ErrorContains(t, err, "2 .gguf files and no index (a.gguf, b.gguf); name one: hf:org/two/a.gguf")
	p, err := Name("hf:org/two/b.gguf")
	require.NoError(t, err)
	require.Equal(t, "b.gguf", filepath.Base(p))
}

// ollamaLayout writes a manifest for name/tag pointing at a blob.
func ollamaLayout(t *testing.T, root string, parts []string, manifest string, blob string) {
	t.Helper()
	mp := filepath.Join(append([]string{root, "manifests"}, parts...)...)
	require.NoError(t, os.MkdirAll(filepath.Dir(mp), 0o755))
	require.NoError(t, os.WriteFile(mp, []byte(manifest), 0o644))
	if blob != "" {
		require.NoError(t, os.MkdirAll(filepath.Join(root, "blobs"), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(root, "blobs", blob), []byte("GGUF"), 0o644))
	}
}

func TestOllama(t *testing.T) {
	root := t.TempDir()
	t.Setenv("OLLAMA_MODELS", root)
	h := strings.Repeat("ab", 32)
	manifest := `{"schemaVersion":2,"config":{"digest":"sha256:` + strings.Repeat("cd", 32) + `"},"layers":[
		{"mediaType":"application/vnd.ollama.image.license","digest":"sha256:` + strings.Repeat("ef", 32) + `"},
		{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:` + h + `","size":4}]}`
	ollamaLayout(t, root, []string{"registry.ollama.ai", "library", "tiny", "latest"}, manifest, "sha256-"+h)
	ollamaLayout(t, root, []string{"registry.ollama.ai", "me", "tiny", "q4"}, manifest, "")
	ollamaLayout(t, root, []string{"registry.ollama.ai", "library", "bad", "latest"}, `{"layers":[{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:../../etc"}]}`, "")
	ollamaLayout(t, root, []string{"registry.ollama.ai", "library", "nomodel", "latest"}, `{"layers":[]}`, "")

	want := filepath.Join(root, "blobs", "sha256-"+h)
	for _, name := range []string{"ollama:tiny", "ollama:tiny:latest", "ollama:library/tiny", "ollama:registry.ollama.ai/library/tiny:latest", "ollama:me/tiny:q4"} {
		p, err := Name(name)
		require.NoError(t, err, name)
		require.Equal(t, want, p, name)
	}
	for name, wantErr := range map[string]string{
		"ollama:absent":    "not in Ollama's models",
		"ollama:bad":       "digest is not sha256:",
		"ollama:nomodel":   "no model layer",
		"ollama:../x":      "not a valid name part",
		"ollama:a/b/c/d":   "want ollama:",
		"ollama:tiny:../x": "not a valid name part",
	} {
		_, err := Name(name)
		require.ErrorContains(t, err, wantErr, name)
	}
	p, err := Name("/plain/path.gguf")
	require.NoError(t, err)
	require.Equal(t, "/plain/path.gguf", p)
}

// A ref or a manifest may be any file (a symlink to /etc/passwd): what it
// holds is never in the error, only its name.
func TestName_ErrorsNeverShowFileContents(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "passwd")
	const content = "root:x:0:0:SECRET-LINE:/root:/bin/bash\n"
	require.NoError(t, os.WriteFile(secret, []byte(content), 0o600))

	hf := hfLayout(t, "models--org--tiny", map[string][]string{commitA: {"model.safetensors"}}, nil)
	t.Setenv("HF_HUB_CACHE", hf)
	ref := filepath.Join(hf, "models--org--tiny", "refs", "main")
	require.NoError(t, os.Symlink(secret, ref))
	_, err := Name("hf:org/tiny")
	require.ErrorIs(t, err, errs.ErrInvalidModel)
	require.ErrorContains(t, err, ref)
	require.NotContains(t, err.Error(), "root:")
	require.NotContains(t, err.Error(), "SECRET")
	// A secret that looks like a commit hash: not quoted either.
	const hexSecret = "fedcba9876543210fedcba9876543210fedcba98"
	require.NoError(t, os.WriteFile(secret, []byte(hexSecret+"\n"), 0o600))
	_, err = Name("hf:org/tiny")
	require.ErrorIs(t, err, errs.ErrNotFound)
	require.NotContains(t, err.Error(), hexSecret)

	ol := t.TempDir()
	t.Setenv("OLLAMA_MODELS", ol)
	mp := filepath.Join(ol, "manifests", "registry.ollama.ai", "library", "tiny", "latest")
	require.NoError(t, os.MkdirAll(filepath.Dir(mp), 0o755))
	require.NoError(t, os.Symlink(secret, mp))
	_, err = Name("ollama:tiny")
	require.ErrorIs(t, err, errs.ErrInvalidModel)
	require.ErrorContains(t, err, mp)
	require.NotContains(t, err.Error(), "root")
	require.NotContains(t, err.Error(), "SECRET")
	// A manifest that is JSON, with a digest that is somebody's secret.
	require.NoError(t, os.Remove(mp))
	require.NoError(t, os.WriteFile(mp, []byte(`{"layers":[{"mediaType":"application/vnd.ollama.image.model","digest":"SECRET-DIGEST"}]}`), 0o644))
	_, err = Name("ollama:tiny")
	require.ErrorIs(t, err, errs.ErrInvalidModel)
	require.NotContains(t, err.Error(), "SECRET")
}

// A name that is not of the form is the caller's mistake (400 through the
// daemon), not the cache's.
func TestName_MalformedIsInvalidArgument(t *testing.T) {
	for _, n := range []string{"hf:", "hf:org/good@/x", "ollama:", "ollama:a/b/c/d", "ollama:a..b"} {
		_, err := Name(n)
		require.ErrorIs(t, err, errs.ErrInvalidArgument, n)
	}
}

// bounded runs f, failing the test (not hanging it) if f does not return
// within a generous bound.
func bounded(t *testing.T, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("resolving a name hangs on a FIFO in the cache")
	}
}

// A FIFO in a cache (as a ref, a manifest, a weights blob) is refused
// without being opened for a blocking read: opening one for reading waits
// for a writer, forever.
func TestName_FIFOsAreRefused(t *testing.T) {
	fifo := func(p string) {
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		mkfifo(t, p)
	}
	hf := hfLayout(t, "models--org--tiny", map[string][]string{commitA: {"config.json"}, commitB: {"config.json"}}, map[string]string{"main": commitA})
	t.Setenv("HF_HUB_CACHE", hf)
	repo := filepath.Join(hf, "models--org--tiny")
	fifo(filepath.Join(repo, "refs", "v2"))
	// The weights of commitA: a snapshot symlink to a FIFO blob.
	fifo(filepath.Join(repo, "blobs", "fifo"))
	require.NoError(t, os.Symlink("../../blobs/fifo", filepath.Join(repo, "snapshots", commitA, "model.safetensors")))
	// commitB: a FIFO as the weights file itself.
	fifo(filepath.Join(repo, "snapshots", commitB, "model.gguf"))

	ol := t.TempDir()
	t.Setenv("OLLAMA_MODELS", ol)
	h := strings.Repeat("ab", 32)
	fifo(filepath.Join(ol, "manifests", "registry.ollama.ai", "library", "fifo", "latest"))
	ollamaLayout(t, ol, []string{"registry.ollama.ai", "library", "tiny", "latest"},
		`{"layers":[{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:`+h+`"}]}`, "")
	fifo(filepath.Join(ol, "blobs", "sha256-"+h))

	for _, name := range []string{"hf:org/tiny@v2", "hf:org/tiny", "hf:org/tiny/model.safetensors", "hf:org/tiny@" + commitB, "ollama:fifo", "ollama:tiny"} {
		bounded(t, func() {
			_, err := Name(name)
			require.ErrorIs(t, err, errs.ErrInvalidModel, name)
			require.ErrorContains(t, err, "not a regular file", name)
		})
	}
}

// Whatever the name and whatever the files in the caches say (a manifest,
// a ref), resolving never panics and never leaves the caches.
func FuzzName(f *testing.F) {
	h := strings.Repeat("ab", 32)
	good := `{"layers":[{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:` + h + `"}]}`
	for _, s := range []string{"hf:org/tiny", "hf:org/tiny@v2/x.safetensors", "ollama:tiny:latest", "ollama:a/b/c:d", "hf:a/b@c/../../d", "x"} {
		f.Add(s, []byte(good), []byte(commitA))
	}
	f.Add("ollama:tiny", []byte(`{"layers":[{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:../../../x"}]}`), []byte("../../x"))
	f.Fuzz(func(t *testing.T, s string, manifest, ref []byte) {
		hf, ol := t.TempDir(), t.TempDir()
		t.Setenv("HF_HUB_CACHE", hf)
		t.Setenv("OLLAMA_MODELS", ol)
		mp := filepath.Join(ol, "manifests", "registry.ollama.ai", "library", "tiny", "latest")
		_ = os.MkdirAll(filepath.Dir(mp), 0o755)
		_ = os.WriteFile(mp, manifest, 0o644)
		_ = os.MkdirAll(filepath.Join(ol, "blobs"), 0o755)
		_ = os.WriteFile(filepath.Join(ol, "blobs", "sha256-"+h), []byte("GGUF"), 0o644)
		repo := filepath.Join(hf, "models--org--tiny")
		_ = os.MkdirAll(filepath.Join(repo, "refs"), 0o755)
		_ = os.MkdirAll(filepath.Join(repo, "snapshots", commitA), 0o755)
		_ = os.WriteFile(filepath.Join(repo, "snapshots", commitA, "model.safetensors"), nil, 0o644)
		_ = os.WriteFile(filepath.Join(repo, "refs", "main"), ref, 0o644)
		p, err := Name(s)
		if err != nil || !IsName(s) {
			return
		}
		if !strings.HasPrefix(p, hf+"/") && !strings.HasPrefix(p, ol+"/") {
			t.Fatalf("%q resolved to %q, outside the caches", s, p)
		}
	})
}
