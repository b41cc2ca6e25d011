// Package api is the wire of warm serve: the routes, headers and JSON
// bodies that package server answers with and package client reads. It
// imports the standard library and errs only, so that a program that dials
// the daemon links none of the cache's engine (Badger, Redis, Prometheus).
//
// Each body is the JSON of the daemon's own type: Stats that of tier.Stats,
// WarmProgress and WarmResult those of tier's, PutOptions travels in
// headers (PutHeader). Structs whose fields match a tier or l1/l2 struct
// one for one convert to it (api.PutOptions(o), l2.Stats(s.L2)); server's
// tests check that every body still matches.
package api

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/modelcache/modelcache/errs"
)

// Routes. Those that end with "/" take arguments: ModelPath, ValuePath and
// NamespacePath complete them.
const (
	// GET PathModels + the model's absolute path without its leading
	// slash, or a name (hf:ORG/NAME, ollama:NAME): a Model.
	PathModels = "/v1/models/"
	// GET ?path=P&name=N: a tensor's raw bytes (Range supported), with
	// HeaderDType, HeaderShape and HeaderServedBy.
	PathTensor = "/v1/tensor"
	// GET ?path=P&name=N on the unix socket: a ShmReply and a memfd.
	PathShmTensor = "/v1/shm/tensor"
	// GET ?path=P on the unix socket: a ShmReply placing every tensor, and
	// a memfd.
	PathShmModel = "/v1/shm/model"
	// POST ?path=P: JSON lines, a WarmProgress each, then {"result":
	// WarmResult} or an Error.
	PathWarm = "/v1/warm"
	// GET: Stats.
	PathStats = "/v1/stats"
	// GET: Prometheus text.
	PathMetrics = "/metrics"
	// GET, PUT, DELETE ValuePath(ns, key): a value's bytes; DELETE
	// NamespacePath(ns) drops the namespace.
	PathValues = "/v1/values/"
)

// Headers of tensors and values.
const (
	HeaderDType    = "X-Dtype"
	HeaderShape    = "X-Shape"     // dimensions, comma-separated: 1,1,384,32
	HeaderServedBy = "X-Served-By" // the tier: l1, l2, l3, source, shared, fill
	HeaderTTL      = "X-TTL"       // of a PUT: a Go duration (24h)
)

// ModelPath is the route of the model listing of path, an absolute path or
// a name, each of its segments escaped.
func ModelPath(path string) string {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return PathModels + strings.Join(parts, "/")
}

// ValuePath is the route of the value under key in namespace ns.
func ValuePath(ns, key string) string {
	return PathValues + url.PathEscape(ns) + "/" + url.PathEscape(key)
}

// NamespacePath is the route of namespace ns (DELETE drops it).
func NamespacePath(ns string) string { return PathValues + url.PathEscape(ns) }

// Error is the JSON body of an error answer (and the last line of a warm
// that failed). Sentinel names the errs sentinel it wraps (errs.Name), or
// NotExist.
type Error struct {
	Error    string `json:"error"`
	Sentinel string `json:"sentinel,omitempty"`
}

// NotExist is the sentinel name of fs.ErrNotExist (a model file that is
// not there), which is not one of errs'.
const NotExist = "fs.ErrNotExist"

// TensorInfo describes one tensor in a model listing.
type TensorInfo struct {
	Name  string   `json:"name"`
	DType string   `json:"dtype"`
	Shape []uint64 `json:"shape"`
	Bytes uint64   `json:"bytes"`
	File  string   `json:"file"`
}

// Model is the answer of GET PathModels: a model as the daemon's cache
// sees it.
type Model struct {
	Path       string       `json:"path"`
	Version    string       `json:"version"`
	Bytes      uint64       `json:"bytes"`
	CachedOnly bool         `json:"cached_only"`
	Tensors    []TensorInfo `json:"tensors"`
}

// FormatShape is shape as HeaderShape carries it.
func FormatShape(shape []uint64) string {
	parts := make([]string, len(shape))
	for i, d := range shape {
		parts[i] = strconv.FormatUint(d, 10)
	}
	return strings.Join(parts, ",")
}

// errShape: a HeaderShape that is not a list of dimensions.
var errShape = errors.New("api: a shape is unsigned integers separated by commas")

// ParseShape parses a HeaderShape; "" is no shape.
func ParseShape(s string) ([]uint64, error) {
	if s == "" {
		return nil, nil
	}
	var out []uint64
	for _, p := range strings.Split(s, ",") {
		d, err := strconv.ParseUint(strings.TrimSpace(p), 10, 64)
		if err != nil {
			return nil, errShape
		}
		out = append(out, d)
	}
	return out, nil
}

// PutOptions describes a value being stored, as tier.PutOptions (see it
// for what each field means), which it converts to. Through the daemon a
// negative TTL is not sent: the value gets its namespace's TTL.
type PutOptions struct {
	TTL   time.Duration
	DType string
	Shape []uint64
}

// PutHeader is the request header of a PUT that carries o (nil: none).
func PutHeader(o *PutOptions) http.Header {
	hdr := http.Header{}
	if o == nil {
		return hdr
	}
	if o.TTL > 0 {
		hdr.Set(HeaderTTL, o.TTL.String())
	}
	if o.DType != "" {
		hdr.Set(HeaderDType, o.DType)
	}
	if len(o.Shape) > 0 {
		hdr.Set(HeaderShape, FormatShape(o.Shape))
	}
	return hdr
}

// ParsePutHeader is the PutOptions a PUT's header carries; a malformed one
// is errs.ErrInvalidArgument.
func ParsePutHeader(h http.Header) (PutOptions, error) {
	o := PutOptions{DType: h.Get(HeaderDType)}
	var err error
	if s := h.Get(HeaderShape); s != "" {
		if o.Shape, err = ParseShape(s); err != nil {
			return PutOptions{}, fmt.Errorf("%w: shape %q", errs.ErrInvalidArgument, s)
		}
	}
	if s := h.Get(HeaderTTL); s != "" {
		if o.TTL, err = time.ParseDuration(s); err != nil || o.TTL < 0 {
			return PutOptions{}, fmt.Errorf("%w: %s %q is not a duration", errs.ErrInvalidArgument, HeaderTTL, s)
		}
	}
	return o, nil
}
