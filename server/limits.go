package server

import (
	"container/list"
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Bounds on what one client can hold of the daemon (docs/SERVE.md,
// "Limits"). Options overrides the ones that have a field.
const (
	// DefaultMaxConnections bounds the connections of one listener
	// (Options.MaxConnections).
	DefaultMaxConnections = 1024
	// DefaultIdleTimeout: a keep-alive connection with no request for
	// this long is closed (Options.IdleTimeout).
	DefaultIdleTimeout = 2 * time.Minute
	// DefaultWriteStallTimeout: a response write that the client does
	// not take in for this long ends the connection
	// (Options.WriteStallTimeout). It bounds stalls, not the length of a
	// response: each write gets its own deadline.
	DefaultWriteStallTimeout = time.Minute
	// ReadHeaderTimeout: request headers must arrive within it.
	ReadHeaderTimeout = 10 * time.Second
)

// stallChunk is the most a response write sends under one deadline: the
// slowest client that keeps its connection reads stallChunk bytes per
// WriteStallTimeout.
const stallChunk = 256 << 10

// connKey is the request context's key of its connection.
type connKey struct{}

// limits are the Options that Server applies to the connections.
type limits struct {
	maxConns int
	idle     time.Duration
	stall    time.Duration
}

func limitsOf(o *Options) limits {
	l := limits{maxConns: o.MaxConnections, idle: o.IdleTimeout, stall: o.WriteStallTimeout}
	if l.maxConns <= 0 {
		l.maxConns = DefaultMaxConnections
	}
	if l.idle <= 0 {
		l.idle = DefaultIdleTimeout
	}
	if l.stall <= 0 {
		l.stall = DefaultWriteStallTimeout
	}
	return l
}

// Server is an http.Server with the API's limits: header size and
// timeouts, and, for a *Handler, its Options' connection bound, idle
// timeout and write stall timeout.
func Server(h http.Handler) *http.Server {
	l := limitsOf(&Options{})
	if hh, ok := h.(*Handler); ok {
		l = hh.limits
	}
	cl := &connLimiter{max: l.maxConns, open: map[net.Conn]*list.Element{}, waiting: list.New()}
	return &http.Server{
		Handler:           h,
		MaxHeaderBytes:    MaxHeaderBytes,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		IdleTimeout:       l.idle,
		ConnState:         cl.track,
		// The connection, for its peer's credentials (shared memory).
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
	}
}

// connLimiter bounds a server's connections. Past the bound, a new
// connection closes the one that has waited longest for a request (idle
// between requests, or new and silent); when every connection is busy
// with a request, the new one is closed at once. Closing at accept (not
// blocking Accept, as netutil.LimitListener does) keeps idle connections
// from holding the slots that requests need.
type connLimiter struct {
	mu      sync.Mutex
	max     int
	open    map[net.Conn]*list.Element // element in waiting, or nil while a request runs
	waiting *list.List                 // of net.Conn, longest waiting first
	dropped atomic.Int64               // waiting connections closed for a new one
	refused atomic.Int64               // new connections closed: all busy
}

// track is the server's ConnState hook. StateNew runs in the accept loop,
// so it never blocks.
func (l *connLimiter) track(c net.Conn, s http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch s {
	case http.StateNew:
		if len(l.open) >= l.max {
			e := l.waiting.Front()
			if e == nil {
				l.refused.Add(1)
				_ = c.Close()
				return
			}
			old := l.waiting.Remove(e).(net.Conn)
			delete(l.open, old)
			l.dropped.Add(1)
			_ = old.Close()
		}
		l.open[c] = l.waiting.PushBack(c)
	case http.StateActive:
		if e, ok := l.open[c]; ok && e != nil {
			l.waiting.Remove(e)
			l.open[c] = nil
		}
	case http.StateIdle:
		if e, ok := l.open[c]; ok && e == nil {
			l.open[c] = l.waiting.PushBack(c)
		}
		// The last response's write deadline must not cut the next one
		// short: a request sets its own (stallWriter).
		_ = c.SetWriteDeadline(time.Time{})
	case http.StateHijacked, http.StateClosed:
		if e, ok := l.open[c]; ok {
			if e != nil {
				l.waiting.Remove(e)
			}
			delete(l.open, c)
		}
	}
}

// stallWriter gives every write of a response its own deadline, so that a
// client that stops reading loses its connection after stall, while one
// that reads a long response slowly but steadily keeps it.
type stallWriter struct {
	http.ResponseWriter
	rc    *http.ResponseController
	stall time.Duration
}

func newStallWriter(w http.ResponseWriter, stall time.Duration) *stallWriter {
	s := &stallWriter{ResponseWriter: w, rc: http.NewResponseController(w), stall: stall}
	s.extend()
	return s
}

func (s *stallWriter) extend() { _ = s.rc.SetWriteDeadline(time.Now().Add(s.stall)) }

func (s *stallWriter) WriteHeader(code int) {
	s.extend()
	s.ResponseWriter.WriteHeader(code)
}

func (s *stallWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), stallChunk)
		s.extend()
		m, err := s.ResponseWriter.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	return n, nil
}

// Flush sends what is buffered, under a fresh deadline.
func (s *stallWriter) Flush() {
	s.extend()
	_ = s.rc.Flush()
}

// Unwrap lets http.ResponseController reach the connection (Hijack).
func (s *stallWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
