// Package server is the HTTP API of warm serve: one process owns a cache
// directory (and L3) and serves every process on the machine, in any
// language, over a unix socket (or, with a bearer token, over TCP).
//
//	GET    /v1/models/{path...}          the model's tensors (JSON)
//	GET    /v1/tensor?path=P&name=N      a tensor's raw bytes; Range supported;
//	                                     X-Dtype, X-Shape, X-Served-By headers
//	POST   /v1/warm?path=P               warm a model into L2 (and L3): progress as JSON lines
//	GET    /v1/stats                     tier.Stats (JSON; api.Stats reads it)
//	GET    /metrics                      Prometheus text
//	GET    /v1/values/{ns}/{key...}      a value's bytes (X-Served-By)
//	PUT    /v1/values/{ns}/{key...}      store the body (X-TTL, X-Dtype, X-Shape)
//	DELETE /v1/values/{ns}/{key...}      delete it
//	DELETE /v1/values/{ns}               drop the namespace
//
// Paths are absolute (a relative one is 400) and must lie in one of the
// roots the daemon serves (Options.Roots; 403 otherwise).
//
// Errors are JSON, {"error": "...", "sentinel": "ErrNotFound"}, with the
// status the sentinel implies (404, 400, 403, 409, 413, 422, 503; 500 for
// the rest); package client turns them back into the errs sentinels.
//
// The routes, headers and bodies are package api's, which package client
// shares without linking this one.
package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/semaphore"

	"github.com/modelcache/modelcache/api"
	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/resolve"
	"github.com/modelcache/modelcache/tier"
)

// Limits on requests: headers and value bodies (how long they may take to
// arrive is in limits.go).
const (
	MaxHeaderBytes = 64 << 10
	MaxValueBytes  = 4 << 30
)

// Handler serves the API for c.
type Handler struct {
	c        *tier.Cache
	mux      *http.ServeMux
	shm      *shmCache
	token    string
	limits   limits
	spoolDir string
	pinned   *semaphore.Weighted // bytes of values read whole before answering
	roots    []string            // resolved
}

// Options configures a Handler.
type Options struct {
	// Token, if not empty, is the bearer token every request must carry
	// (for TCP listeners).
	Token string
	// ShmBytes bounds the shared memory kept for tensors handed out with
	// file descriptors (GET /v1/shm/tensor); default DefaultShmBytes.
	ShmBytes int64
	// Roots are the directories whose files clients may read by path
	// (warm serve --root). A path is resolved (symlinks, "..") before it
	// is checked; one outside every root is refused with errs.ErrForbidden
	// (403), and with no roots every path is. hf: and ollama: names may
	// also read their own cache (resolve.HFCache, resolve.OllamaModels).
	Roots []string

	// ShmPeerBytes bounds the shared memory the live processes of one
	// user (the socket peer's uid) may make the daemon create: past it,
	// its shared-memory requests are refused (ErrTooLarge, with
	// ShmReply.HTTP) and package client reads the bytes over HTTP. A
	// process's share ends when it exits. Default DefaultShmPeerBytes.
	ShmPeerBytes int64

	// MaxConnections bounds the connections of each server made by
	// Server(handler); default DefaultMaxConnections.
	MaxConnections int
	// IdleTimeout closes keep-alive connections idle this long; default
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// WriteStallTimeout ends a connection whose client takes in none of a
	// response write for this long; default DefaultWriteStallTimeout.
	WriteStallTimeout time.Duration
	// ReadStallTimeout ends a connection whose request body does not
	// deliver its next 256 KiB within it: bodies must keep arriving, but
	// may take as long as they need; default DefaultReadStallTimeout.
	ReadStallTimeout time.Duration
	// MaxConnectionsPerPeer bounds the connections of one peer (a uid on
	// the unix socket, an IP address on TCP) on each listener, so that no
	// user can take every slot; default a quarter of MaxConnections.
	MaxConnectionsPerPeer int
	// SpoolDir holds, deleted while open, the bodies of PUTs that come
	// without a Content-Length (chunked) until their length is known;
	// default os.TempDir(). warm serve uses the cache directory.
	SpoolDir string
}

// DefaultShmBytes is the default of Options.ShmBytes.
const DefaultShmBytes = 1 << 30

// New returns the API's handler for c. Close it after the server.
func New(c *tier.Cache, o *Options) *Handler {
	if o == nil {
		o = &Options{}
	}
	shm := o.ShmBytes
	if shm <= 0 {
		shm = DefaultShmBytes
	}
	h := &Handler{c: c, mux: http.NewServeMux(), shm: newShmCache(shm, o.ShmPeerBytes), token: o.Token, roots: resolveRoots(o.Roots),
		limits: limitsOf(o), spoolDir: o.SpoolDir, pinned: semaphore.NewWeighted(PinnedBytes)}
	if h.spoolDir == "" {
		h.spoolDir = os.TempDir()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(tier.NewCollector(c))
	h.mux.HandleFunc("GET "+api.PathModels+"{path...}", h.model)
	h.mux.HandleFunc("GET "+api.PathTensor, h.tensor)
	h.mux.HandleFunc("GET "+api.PathShmTensor, h.shmTensor)
	h.mux.HandleFunc("GET "+api.PathShmModel, h.shmModel)
	h.mux.HandleFunc("POST "+api.PathWarm, h.warm)
	h.mux.HandleFunc("GET "+api.PathStats, h.stats)
	h.mux.Handle("GET "+api.PathMetrics, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	h.mux.HandleFunc("GET "+api.PathValues+"{ns}/{key...}", h.getValue)
	h.mux.HandleFunc("PUT "+api.PathValues+"{ns}/{key...}", h.putValue)
	h.mux.HandleFunc("DELETE "+api.PathValues+"{ns}/{key...}", h.deleteValue)
	h.mux.HandleFunc("DELETE "+api.PathValues+"{ns}", h.dropNamespace)
	return h
}

// ServeHTTP serves the API, checking the bearer token if there is one.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w = newStallWriter(w, h.limits.stall)
	if r.Body != nil && r.Body != http.NoBody {
		// On a copy: net/http looks at its own request's body, as it
		// made it, to decide what of an unread body to discard.
		r = r.WithContext(r.Context())
		r.Body = newStallReader(r.Body, http.NewResponseController(w), h.limits.readStall)
	}
	if h.token != "" && r.Header.Get("Authorization") != "Bearer "+h.token {
		w.Header().Set("WWW-Authenticate", "Bearer")
		writeError(w, http.StatusUnauthorized, errors.New("missing or wrong bearer token"))
		return
	}
	h.mux.ServeHTTP(w, r)
}

// Close releases the shared memory the handler keeps; what clients have
// mapped stays valid.
func (h *Handler) Close() { h.shm.close() }

// Error is the JSON body of an error response.
//
// Deprecated: use api.Error.
type Error = api.Error

// status is the HTTP status of an error.
func status(err error) int {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return http.StatusRequestTimeout // a body that stopped arriving (stallReader)
	case errors.Is(err, errs.ErrNotFound), errors.Is(err, fs.ErrNotExist):
		return http.StatusNotFound
	case errors.Is(err, errs.ErrInvalidArgument):
		return http.StatusBadRequest
	case errors.Is(err, errs.ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, errs.ErrChanged):
		return http.StatusConflict
	case errors.Is(err, errs.ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, errs.ErrInvalidModel), errors.Is(err, errs.ErrUnsupported):
		return http.StatusUnprocessableEntity
	case errors.Is(err, errs.ErrClosed), errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func writeError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("Content-Length")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(api.Error{Error: err.Error(), Sentinel: sentinelOf(err)})
}

// NotExist is the sentinel name of fs.ErrNotExist.
//
// Deprecated: use api.NotExist.
const NotExist = api.NotExist

func sentinelOf(err error) string {
	if n := errs.Name(err); n != "" {
		return n
	}
	if errors.Is(err, fs.ErrNotExist) {
		return api.NotExist
	}
	return ""
}

func fail(w http.ResponseWriter, err error) { writeError(w, status(err), err) }

func badRequest(w http.ResponseWriter, format string, a ...any) {
	writeError(w, http.StatusBadRequest, fmt.Errorf("%w: "+format, append([]any{errs.ErrInvalidArgument}, a...)...))
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// TensorJSON describes one tensor in a model listing.
//
// Deprecated: use api.TensorInfo.
type TensorJSON = api.TensorInfo

// ModelJSON is the answer of GET /v1/models/{path}.
//
// Deprecated: use api.Model.
type ModelJSON = api.Model

// modelPath is the path of /v1/models/{path...}: absolute paths keep their
// leading slash (the pattern takes it off), names (hf:, ollama:) do not
// have one. Only those prefixes make a name: x:y.safetensors is the file
// /x:y.safetensors.
func modelPath(r *http.Request) string {
	p := r.PathValue("path")
	if resolve.IsName(p) {
		return p
	}
	return "/" + p
}

func (h *Handler) model(w http.ResponseWriter, r *http.Request) {
	path, ok := h.checked(w, modelPath(r))
	if !ok {
		return
	}
	m := h.openModel(w, r, path)
	if m == nil {
		return
	}
	defer m.Close()
	out := api.Model{Path: m.Path(), Version: m.Version(), Bytes: m.Bytes(), CachedOnly: m.CachedOnly(), Tensors: []api.TensorInfo{}}
	for _, t := range m.Tensors() {
		out.Tensors = append(out.Tensors, api.TensorInfo{Name: t.Name, DType: t.DType, Shape: t.Shape, Bytes: t.Bytes, File: t.File})
	}
	writeJSON(w, out)
}

// checked is the path to open for what the client named, checked against
// the roots (Handler.allow), or false with the error answered.
func (h *Handler) checked(w http.ResponseWriter, name string) (string, bool) {
	p, err := h.allow(name)
	if err != nil {
		fail(w, err)
		return "", false
	}
	return p, true
}

// openModel opens the model at path (checked), or answers with the error
// and returns nil.
func (h *Handler) openModel(w http.ResponseWriter, r *http.Request, path string) *tier.Model {
	m, err := h.c.Model(r.Context(), path)
	if err != nil {
		fail(w, err)
		return nil
	}
	return m
}

// tensor serves a tensor's bytes: from memory when the cache holds it
// whole, piecewise (a tensor reader) past tier.StreamAbove.
func (h *Handler) tensor(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	path, name := q.Get("path"), q.Get("name")
	if path == "" || !q.Has("name") {
		badRequest(w, "want ?path=P&name=N")
		return
	}
	path, ok := h.checked(w, path)
	if !ok {
		return
	}
	hdr := w.Header()
	if t, ok := h.c.InRAM(r.Context(), path, name); ok {
		hdr.Set("Content-Type", "application/octet-stream")
		hdr.Set(api.HeaderDType, t.DType)
		hdr.Set(api.HeaderShape, api.FormatShape(t.Shape))
		hdr.Set(api.HeaderServedBy, t.ServedBy.String())
		serveContent(w, r, bytes.NewReader(t.Bytes()))
		return
	}
	m := h.openModel(w, r, path)
	if m == nil {
		return
	}
	defer m.Close()
	info, ok := m.Info(name)
	if !ok {
		fail(w, fmt.Errorf("%s: tensor %s: %w", m.Path(), errs.Quote(name), errs.ErrNotFound))
		return
	}
	hdr.Set("Content-Type", "application/octet-stream")
	hdr.Set(api.HeaderDType, info.DType)
	hdr.Set(api.HeaderShape, api.FormatShape(info.Shape))
	if info.Bytes > tier.StreamAbove {
		tr, err := m.OpenTensor(r.Context(), name)
		if err != nil {
			fail(w, err)
			return
		}
		defer tr.Close()
		hdr.Set(api.HeaderServedBy, tr.ServedBy.String())
		serveContent(w, r, io.NewSectionReader(abortOnError{tr}, 0, tr.Size()))
		return
	}
	t, err := m.Tensor(r.Context(), name)
	if err != nil {
		fail(w, err)
		return
	}
	hdr.Set(api.HeaderServedBy, t.ServedBy.String())
	serveContent(w, r, bytes.NewReader(t.Bytes()))
}

// warm warms a model, writing a JSON line per tensor (and one with the
// totals first, and the result last).
func (h *Handler) warm(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Query().Get("path")
	if path == "" {
		badRequest(w, "want ?path=P")
		return
	}
	path, ok := h.checked(w, path)
	if !ok {
		return
	}
	m := h.openModel(w, r, path)
	if m == nil {
		return
	}
	defer m.Close()
	w.Header().Set("Content-Type", "application/x-ndjson")
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	progress := make(chan tier.WarmProgress, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for p := range progress {
			_ = enc.Encode(api.WarmProgress(p))
			if flusher != nil {
				flusher.Flush()
			}
		}
	}()
	res, err := m.Warm(r.Context(), &tier.WarmOptions{Progress: func(p tier.WarmProgress) { progress <- p }})
	close(progress)
	<-done
	if err != nil {
		// The status is sent: the error is the last line.
		_ = enc.Encode(api.Error{Error: err.Error(), Sentinel: sentinelOf(err)})
		return
	}
	_ = enc.Encode(struct {
		Result *api.WarmResult `json:"result"`
	}{(*api.WarmResult)(res)})
}

// stats answers tier.Stats, whose JSON api.Stats reads
// (TestStats_APIReadsEveryField).
func (h *Handler) stats(w http.ResponseWriter, r *http.Request) { writeJSON(w, h.c.Stats()) }

func (h *Handler) getValue(w http.ResponseWriter, r *http.Request) {
	v, err := h.c.OpenValue(r.Context(), r.PathValue("ns"), r.PathValue("key"))
	if err != nil {
		fail(w, err)
		return
	}
	defer v.Close()
	hdr := w.Header()
	hdr.Set("Content-Type", "application/octet-stream")
	hdr.Set(api.HeaderServedBy, v.ServedBy.String())
	if v.DType != "" {
		hdr.Set(api.HeaderDType, v.DType)
		hdr.Set(api.HeaderShape, api.FormatShape(v.Shape))
	}
	// An entry of L2 can be replaced while it is read (its chunks go):
	// the bytes are read before the status line where that is cheap, and
	// otherwise a read that fails after it aborts the connection, so that
	// no client takes a short body for a value.
	b, ok, err := h.pin(r, v)
	switch {
	case err != nil:
		fail(w, err)
	case ok:
		defer h.pinned.Release(int64(len(b)))
		serveContent(w, r, bytes.NewReader(b))
	default:
		serveContent(w, r, io.NewSectionReader(abortOnError{v}, 0, v.Size()))
	}
}

func (h *Handler) putValue(w http.ResponseWriter, r *http.Request) {
	po, err := api.ParsePutHeader(r.Header)
	if err != nil {
		fail(w, err)
		return
	}
	o := (*tier.PutOptions)(&po)
	ns, key := r.PathValue("ns"), r.PathValue("key")
	switch {
	case r.ContentLength > MaxValueBytes:
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("%w: a value of %d bytes (at most %d)", errs.ErrTooLarge, r.ContentLength, int64(MaxValueBytes)))
		return
	case r.ContentLength > tier.StreamAbove:
		// Streamed into L2 a chunk at a time (not kept in L1 or L3).
		err = h.c.PutReader(r.Context(), ns, key, r.Body, r.ContentLength, o)
	case r.ContentLength < 0:
		// Chunked: the length is known at the end (spooled past a MiB).
		err = h.putChunked(w, r, ns, key, o)
	default:
		// Read whole, bounded, and stored as Put stores (L1, L2, L3).
		b, rerr := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxValueBytes))
		if rerr != nil {
			fail(w, bodyErr(rerr))
			return
		}
		err = h.c.Put(r.Context(), ns, key, b, o)
	}
	if err != nil {
		fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) deleteValue(w http.ResponseWriter, r *http.Request) {
	if err := h.c.Delete(r.Context(), r.PathValue("ns"), r.PathValue("key")); err != nil {
		fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) dropNamespace(w http.ResponseWriter, r *http.Request) {
	if err := h.c.DropNamespace(r.Context(), r.PathValue("ns")); err != nil {
		fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
