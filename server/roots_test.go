//go:build linux

package server

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/tier"
)

const testModel = "../testdata/models/posenet.bf16.safetensors"

// secretContent is what the files no client may read hold; no answer may
// carry it.
const secretContent = "TOP-SECRET-DO-NOT-SERVE root:$6$hash:19000:0:99999:7:::\n"

// daemon is a Handler served on a real unix socket, as warm serve serves
// it, and an HTTP client that dials the socket.
type daemon struct {
	h      *Handler
	c      *tier.Cache
	socket string
	hc     *http.Client
}

func startDaemon(t *testing.T, o *Options) *daemon {
	t.Helper()
	c, err := tier.Open(&tier.Options{Dir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	socket := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", socket)
	require.NoError(t, err)
	h := New(c, o)
	srv := Server(h)
	go srv.Serve(l)
	t.Cleanup(func() {
		srv.Close()
		h.Close()
		c.Close()
	})
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	t.Cleanup(hc.CloseIdleConnections)
	return &daemon{h: h, c: c, socket: socket, hc: hc}
}

type answer struct {
	code int
	body string
	err  Error
}

func (d *daemon) do(t *testing.T, method, target string) answer {
	t.Helper()
	req, err := http.NewRequest(method, "http://x"+target, nil)
	require.NoError(t, err)
	resp, err := d.hc.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	a := answer{code: resp.StatusCode, body: string(b)}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		_ = json.Unmarshal(b, &a.err)
	}
	return a
}

// shm asks for shared memory on a connection of its own and returns the
// daemon's reply (the descriptor, if any, is dropped with the connection).
func (d *daemon) shm(t *testing.T, target string) ShmReply {
	t.Helper()
	conn, err := net.Dial("unix", d.socket)
	require.NoError(t, err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", target)
	require.NoError(t, err)
	br := bufio.NewReader(conn)
	var n [4]byte
	_, err = io.ReadFull(br, n[:])
	require.NoError(t, err)
	body := make([]byte, binary.LittleEndian.Uint32(n[:]))
	_, err = io.ReadFull(br, body)
	require.NoError(t, err)
	var reply ShmReply
	require.NoError(t, json.Unmarshal(body, &reply))
	return reply
}

func q(s string) string { return url.QueryEscape(s) }

// tree lays out a root holding a model, and beside it (outside the root)
// a secret file, with the ways a client may try to reach it from inside.
func tree(t testing.TB) (root, model, secret string) {
	t.Helper()
	base := t.TempDir()
	root = filepath.Join(base, "models")
	outside := filepath.Join(base, "private")
	require.NoError(t, os.MkdirAll(filepath.Join(root, "sub"), 0o755))
	require.NoError(t, os.MkdirAll(outside, 0o700))
	secret = filepath.Join(outside, "shadow")
	require.NoError(t, os.WriteFile(secret, []byte(secretContent), 0o600))
	b, err := os.ReadFile(testModel)
	require.NoError(t, err)
	model = filepath.Join(root, "model.safetensors")
	require.NoError(t, os.WriteFile(model, b, 0o644))
	require.NoError(t, os.Symlink(secret, filepath.Join(root, "link-to-secret")))
	require.NoError(t, os.Symlink(outside, filepath.Join(root, "sub", "dir-link")))
	return root, model, secret
}

// What a client may read by path: files in a root, resolved; never a file
// outside, however it is named, and on no endpoint. Nothing refused is
// opened or cached.
func TestServer_RootsRefuseWhatLiesOutside(t *testing.T) {
	root, model, secret := tree(t)
	d := startDaemon(t, &Options{Roots: []string{root}})
	t.Chdir(filepath.Dir(secret))
	// Dangling: whoever may write where it points can put a file there
	// between the check and the open.
	require.NoError(t, os.Symlink(filepath.Join(filepath.Dir(secret), "later"), filepath.Join(root, "dangling")))
	require.NoError(t, os.Symlink("dangling", filepath.Join(root, "dangling-relative")))

	names := map[string]string{
		"the file itself":          secret,
		"a symlink in the root":    filepath.Join(root, "link-to-secret"),
		"a directory symlink":      filepath.Join(root, "sub", "dir-link", "shadow"),
		"..":                       filepath.Join(root, "..", "private", "shadow"),
		"/proc/self/root":          "/proc/self/root" + secret,
		"/proc/self/cwd":           "/proc/self/cwd/shadow",
		"an absent file outside":   filepath.Join(filepath.Dir(secret), "absent"),
		"a symlink outside a root": "/proc/self/root" + filepath.Join(root, "link-to-secret"),
		"a dangling symlink":       filepath.Join(root, "dangling"),
		"a link to a dangling one": filepath.Join(root, "dangling-relative"),
		"below a dangling symlink": filepath.Join(root, "dangling", "x", "model.safetensors"),
	}
	for what, p := range names {
		for _, target := range []string{
			"/v1/tensor?name=-&path=" + q(p),
			"/v1/models" + p,
		} {
			a := d.do(t, "GET", target)
			require.Equal(t, http.StatusForbidden, a.code, "%s: %s: %s", what, target, a.body)
			require.Equal(t, "ErrForbidden", a.err.Sentinel, what)
			require.Contains(t, a.err.Error, "outside every root", what)
			require.NotContains(t, a.body, "TOP-SECRET", what)
		}
		a := d.do(t, "POST", "/v1/warm?path="+q(p))
		require.Equal(t, http.StatusForbidden, a.code, what)
		for _, target := range []string{"/v1/shm/tensor?name=-&path=" + q(p), "/v1/shm/model?path=" + q(p)} {
			reply := d.shm(t, target)
			require.Equal(t, "ErrForbidden", reply.Sentinel, "%s: %s", what, target)
			require.NotContains(t, reply.Error, "TOP-SECRET")
		}
	}
	// The message names what the client named, not where it leads.
	a := d.do(t, "GET", "/v1/tensor?name=-&path="+q(filepath.Join(root, "link-to-secret")))
	require.NotContains(t, a.err.Error, secret)

	st := d.c.Stats()
	require.Zero(t, st.Requests, "a refused path reached the cache")
	require.Zero(t, st.L1.Entries)
	require.Zero(t, len(d.h.shm.byKey), "shared memory was made for a refused path")

	// In the root, directly or by a symlink from outside it: served.
	a = d.do(t, "GET", "/v1/tensor?name=Const_61&path="+q(model))
	require.Equal(t, http.StatusOK, a.code, a.body)
	require.Len(t, a.body, 24576)
	link := filepath.Join(t.TempDir(), "m.safetensors")
	require.NoError(t, os.Symlink(model, link))
	a = d.do(t, "GET", "/v1/models"+link)
	require.Equal(t, http.StatusOK, a.code, a.body)
	var mj ModelJSON
	require.NoError(t, json.Unmarshal([]byte(a.body), &mj))
	require.Len(t, mj.Tensors, 62)
	require.Equal(t, model, mj.Path, "opened where the link led when it was checked")
	a = d.do(t, "GET", "/v1/models"+filepath.Join(root, "sub", "..", "model.safetensors"))
	require.Equal(t, http.StatusOK, a.code, a.body)
}

// Resolving a path costs system calls by the component: a client's path
// is bounded (PATH_MAX) before anything is resolved, and a dangling
// symlink that points into a root is what it points to (a deleted HF blob
// whose tensors are cached).
func TestServer_LongPathsAndDanglingLinks(t *testing.T) {
	root, model, _ := tree(t)
	d := startDaemon(t, &Options{Roots: []string{root}})
	deep := root + strings.Repeat("/a", 3000) + "/x"
	a := d.do(t, "GET", "/v1/tensor?name=-&path="+q(deep))
	require.Equal(t, http.StatusBadRequest, a.code, a.body)
	require.Equal(t, "ErrInvalidArgument", a.err.Sentinel)
	require.Less(t, len(a.body), 1024, "the answer quotes the path whole")

	gone := filepath.Join(root, "gone.safetensors")
	require.NoError(t, os.Symlink(filepath.Join(root, "sub", "blob"), gone))
	a = d.do(t, "GET", "/v1/models"+gone)
	require.Equal(t, http.StatusNotFound, a.code, a.body)
	// The blob comes back: served through the link.
	require.NoError(t, os.Link(model, filepath.Join(root, "sub", "blob")))
	a = d.do(t, "GET", "/v1/models"+gone)
	require.Equal(t, http.StatusOK, a.code, a.body)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// With no root, no file is read by path, and the answer says how to
// allow some; names still read their caches.
func TestServer_NoRootsNoPaths(t *testing.T) {
	_, model, _ := tree(t)
	hf := hfCache(t, "org", "tiny", map[string]string{"model.safetensors": ""})
	t.Setenv("HF_HUB_CACHE", hf)
	d := startDaemon(t, nil)
	for _, target := range []string{"/v1/tensor?name=Const_61&path=" + q(model), "/v1/models" + model} {
		a := d.do(t, "GET", target)
		require.Equal(t, http.StatusForbidden, a.code, a.body)
		require.Equal(t, "ErrForbidden", a.err.Sentinel)
		require.Contains(t, a.err.Error, "--root")
	}
	a := d.do(t, "GET", "/v1/models/hf:org/tiny")
	require.Equal(t, http.StatusOK, a.code, a.body)
	a = d.do(t, "GET", "/v1/tensor?name=Const_61&path=hf:org/tiny")
	require.Equal(t, http.StatusOK, a.code, a.body)
	require.Len(t, a.body, 24576)
}

// hfCache lays out a hub cache with one snapshot of org/name whose files
// are symlinks into blobs; a file given a target ("" for the test model)
// links there instead.
func hfCache(t *testing.T, org, name string, files map[string]string) string {
	t.Helper()
	hub := t.TempDir()
	const sha = "0123456789abcdef0123456789abcdef01234567"
	repo := filepath.Join(hub, "models--"+org+"--"+name)
	snap := filepath.Join(repo, "snapshots", sha)
	require.NoError(t, os.MkdirAll(snap, 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(repo, "blobs"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(repo, "refs"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(repo, "refs", "main"), []byte(sha), 0o644))
	b, err := os.ReadFile(testModel)
	require.NoError(t, err)
	for f, target := range files {
		if target == "" {
			target = filepath.Join(repo, "blobs", "b-"+f)
			require.NoError(t, os.WriteFile(target, b, 0o644))
		}
		require.NoError(t, os.Symlink(target, filepath.Join(snap, f)))
	}
	return hub
}

// A snapshot's symlink may point anywhere: a name reads only what lies in
// its cache (or a root), a sharded snapshot's shards included.
func TestServer_HFSnapshotSymlinkEscape(t *testing.T) {
	root, _, secret := tree(t)
	hf := hfCache(t, "org", "evil", map[string]string{"model.safetensors": secret})
	t.Setenv("HF_HUB_CACHE", hf)
	d := startDaemon(t, &Options{Roots: []string{root}})
	for _, target := range []string{"/v1/models/hf:org/evil", "/v1/tensor?name=-&path=hf:org/evil", "/v1/tensor?name=-&path=hf:org/evil/model.safetensors"} {
		a := d.do(t, "GET", target)
		require.Equal(t, http.StatusForbidden, a.code, "%s: %s", target, a.body)
		require.Equal(t, "ErrForbidden", a.err.Sentinel)
		require.NotContains(t, a.body, "TOP-SECRET")
	}

	// A sharded snapshot whose second shard leads out of the cache.
	idx := `{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}`
	ip := filepath.Join(t.TempDir(), "index.json")
	require.NoError(t, os.WriteFile(ip, []byte(idx), 0o644))
	hf = hfCache(t, "org", "sharded", map[string]string{
		"model.safetensors.index.json":     ip, // outside too: the first refusal
		"model-00001-of-00002.safetensors": "",
		"model-00002-of-00002.safetensors": secret,
	})
	t.Setenv("HF_HUB_CACHE", hf)
	a := d.do(t, "GET", "/v1/models/hf:org/sharded")
	require.Equal(t, http.StatusForbidden, a.code, a.body)
	// The index in the cache, the shard still outside.
	snap := filepath.Dir(must(filepath.EvalSymlinks(filepath.Join(hf, "models--org--sharded", "snapshots", "0123456789abcdef0123456789abcdef01234567", "model-00001-of-00002.safetensors"))))
	ipIn := filepath.Join(snap, "index-blob")
	require.NoError(t, os.WriteFile(ipIn, []byte(idx), 0o644))
	link := filepath.Join(hf, "models--org--sharded", "snapshots", "0123456789abcdef0123456789abcdef01234567", "model.safetensors.index.json")
	require.NoError(t, os.Remove(link))
	require.NoError(t, os.Symlink(ipIn, link))
	a = d.do(t, "GET", "/v1/models/hf:org/sharded")
	require.Equal(t, http.StatusForbidden, a.code, a.body)
	require.Equal(t, "ErrForbidden", a.err.Sentinel)
	require.Zero(t, d.c.Stats().Requests)

	// A ref that is a symlink to the secret: an error, without its bytes.
	repo := filepath.Join(hf, "models--org--sharded")
	require.NoError(t, os.Remove(filepath.Join(repo, "refs", "main")))
	require.NoError(t, os.Symlink(secret, filepath.Join(repo, "refs", "main")))
	a = d.do(t, "GET", "/v1/models/hf:org/sharded")
	require.Equal(t, http.StatusUnprocessableEntity, a.code, a.body)
	require.NotContains(t, a.body, "TOP-SECRET")

	// An Ollama blob that links out of Ollama's models.
	ol := t.TempDir()
	t.Setenv("OLLAMA_MODELS", ol)
	h := strings.Repeat("ab", 32)
	mp := filepath.Join(ol, "manifests", "registry.ollama.ai", "library", "evil", "latest")
	require.NoError(t, os.MkdirAll(filepath.Dir(mp), 0o755))
	require.NoError(t, os.WriteFile(mp, []byte(`{"layers":[{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:`+h+`"}]}`), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(ol, "blobs"), 0o755))
	require.NoError(t, os.Symlink(secret, filepath.Join(ol, "blobs", "sha256-"+h)))
	for _, target := range []string{"/v1/models/ollama:evil", "/v1/tensor?name=-&path=ollama:evil"} {
		a = d.do(t, "GET", target)
		require.Equal(t, http.StatusForbidden, a.code, a.body)
		require.NotContains(t, a.body, "TOP-SECRET")
	}
	require.Zero(t, d.c.Stats().Requests)
}

// Only hf: and ollama: are names: x:y.safetensors is a file, and a
// relative path is refused (the daemon's working directory is not the
// client's), never read from the daemon's.
func TestServer_RelativePathsAreRefused(t *testing.T) {
	root, model, _ := tree(t)
	b, err := os.ReadFile(model)
	require.NoError(t, err)
	cwd := t.TempDir()
	for _, f := range []string{"x:y.safetensors", "rel.safetensors"} {
		require.NoError(t, os.WriteFile(filepath.Join(cwd, f), b, 0o644))
	}
	t.Chdir(cwd)
	d := startDaemon(t, &Options{Roots: []string{root, cwd}})
	for _, p := range []string{"x:y.safetensors", "rel.safetensors", "./rel.safetensors", "sub/../rel.safetensors"} {
		for _, target := range []string{"/v1/tensor?name=Const_61&path=" + q(p), "/v1/shm/tensor?name=Const_61&path=" + q(p), "/v1/shm/model?path=" + q(p)} {
			var sentinel, msg string
			if strings.HasPrefix(target, "/v1/shm/") {
				reply := d.shm(t, target)
				sentinel, msg = reply.Sentinel, reply.Error
			} else {
				a := d.do(t, "GET", target)
				require.Equal(t, http.StatusBadRequest, a.code, "%s: %s", target, a.body)
				sentinel, msg = a.err.Sentinel, a.err.Error
			}
			require.Equal(t, "ErrInvalidArgument", sentinel, target)
			require.Contains(t, msg, "relative path", target)
		}
		a := d.do(t, "POST", "/v1/warm?path="+q(p))
		require.Equal(t, http.StatusBadRequest, a.code, a.body)
	}
	// /v1/models/x:y.safetensors is /x:y.safetensors, not ./x:y.safetensors.
	a := d.do(t, "GET", "/v1/models/x:y.safetensors")
	require.Equal(t, http.StatusForbidden, a.code, a.body)
	require.Equal(t, "ErrForbidden", a.err.Sentinel)
	require.Zero(t, d.c.Stats().Requests)
}

// Shared memory over TCP is a 400 that names the unix socket, and makes
// no memfd.
func TestServer_ShmOverTCPIsRefused(t *testing.T) {
	root, model, _ := tree(t)
	c, err := tier.Open(&tier.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	defer c.Close()
	h := New(c, &Options{Roots: []string{root}})
	defer h.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := Server(h)
	go srv.Serve(l)
	defer srv.Close()
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	for _, target := range []string{"/v1/shm/tensor?name=Const_61&path=" + q(model), "/v1/shm/model?path=" + q(model)} {
		resp, err := hc.Get("http://" + l.Addr().String() + target)
		require.NoError(t, err, "an empty reply")
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, string(b))
		var e Error
		require.NoError(t, json.Unmarshal(b, &e), string(b))
		require.Equal(t, "ErrInvalidArgument", e.Sentinel)
		require.Contains(t, e.Error, "unix socket")
	}
	require.Zero(t, len(h.shm.byKey), "a memfd was made for a request that cannot receive it")
	require.Zero(t, c.Stats().Requests)
}

// The sentinel crosses the API as itself.
func TestServer_ForbiddenIs403(t *testing.T) {
	require.Equal(t, http.StatusForbidden, status(fmt.Errorf("x: %w", errs.ErrForbidden)))
	require.Equal(t, "ErrForbidden", errs.Name(forbidden("/x", "why")))
	require.Equal(t, errs.ErrForbidden, errs.ByName("ErrForbidden"))
}

// Whatever a client names, what allow lets the cache open resolves into a
// root (or the name's cache), and what it refuses is ErrForbidden or
// ErrInvalidArgument, never a panic.
func FuzzAllow(f *testing.F) {
	for _, s := range []string{"ROOT/model.safetensors", "ROOT/link-to-secret", "ROOT/sub/dir-link/shadow", "ROOT/../private/shadow",
		"/proc/self/root/ROOT/link-to-secret", "rel.safetensors", "x:y", "hf:org/tiny", "hf:org/tiny/../../x", "ollama:x", "/", "ROOT", "ROOT/sub/..//./model.safetensors"} {
		f.Add(s)
	}
	root, _, _ := tree(f)
	f.Setenv("HF_HUB_CACHE", f.TempDir())
	f.Setenv("OLLAMA_MODELS", f.TempDir())
	h := &Handler{roots: resolveRoots([]string{root})}
	f.Fuzz(func(t *testing.T, s string) {
		name := strings.ReplaceAll(s, "ROOT", root)
		p, err := h.allow(name)
		if err != nil {
			return
		}
		real, err := realPath(filepath.Clean(p))
		if err != nil {
			return // a component vanished: nothing to open
		}
		caches := resolveRoots([]string{root, os.Getenv("HF_HUB_CACHE"), os.Getenv("OLLAMA_MODELS")})
		if !inside(real, caches) {
			t.Fatalf("%q: allowed %q, which resolves to %q, outside the roots", name, p, real)
		}
	})
}
