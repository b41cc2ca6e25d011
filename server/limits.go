package server

import (
	"container/list"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
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
	// DefaultReadStallTimeout: a request body that does not deliver its
	// next stallChunk bytes for this long ends the connection
	// (Options.ReadStallTimeout). Like the write side, it bounds stalls,
	// not how long a large PUT takes.
	DefaultReadStallTimeout = time.Minute
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
	maxConns, perPeer int
	idle              time.Duration
	stall, readStall  time.Duration
}

func limitsOf(o *Options) limits {
	l := limits{maxConns: o.MaxConnections, perPeer: o.MaxConnectionsPerPeer, idle: o.IdleTimeout,
		stall: o.WriteStallTimeout, readStall: o.ReadStallTimeout}
	if l.maxConns <= 0 {
		l.maxConns = DefaultMaxConnections
	}
	if l.perPeer <= 0 {
		l.perPeer = max(1, l.maxConns/4)
	}
	if l.readStall <= 0 {
		l.readStall = DefaultReadStallTimeout
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
	cl := &connLimiter{max: l.maxConns, perPeer: l.perPeer, open: map[net.Conn]*conn{}, waiting: list.New(), peers: map[string]int{}}
	return &http.Server{
		Handler:           h,
		MaxHeaderBytes:    MaxHeaderBytes,
		ReadHeaderTimeout: ReadHeaderTimeout,
		// No ReadTimeout: it would bound the whole request, cutting a
		// large PUT that arrives steadily, and (through net/http's
		// background read) cancel long answers; bodies have a stall bound
		// instead (stallReader).
		IdleTimeout: l.idle,
		ConnState:   cl.track,
		// The connection, for its peer's credentials (shared memory).
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
	}
}

// connLimiter bounds a server's connections, in all and per peer (a uid
// on a unix socket, an IP address on TCP). Past a bound, a new connection
// closes the one that has waited longest for a request (idle between
// requests, or new and silent) among the connections the bound counts
// (the peer's own, for the peer's bound); when all of those are busy
// with a request, the new one is closed at once. Closing at accept (not
// blocking Accept, as netutil.LimitListener does) keeps idle connections
// from holding the slots that requests need, and the peer bound keeps one
// user's busy connections from holding every other user's.
type connLimiter struct {
	mu      sync.Mutex // guards open, waiting and peers
	max     int
	perPeer int
	open    map[net.Conn]*conn
	waiting *list.List     // of *conn, longest waiting first
	peers   map[string]int // open connections by peer
	dropped atomic.Int64   // waiting connections closed for a new one
	refused atomic.Int64   // new connections closed: all busy
}

// conn is an open connection: its peer, and its element in waiting (nil
// while a request runs).
type conn struct {
	c    net.Conn
	peer string
	elem *list.Element
}

// track is the server's ConnState hook. StateNew runs in the accept loop,
// so it never blocks (SO_PEERCRED is one getsockopt).
func (l *connLimiter) track(c net.Conn, s http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch s {
	case http.StateNew:
		p := peerKey(c)
		if l.peers[p] >= l.perPeer && !l.dropWaiting(p) {
			l.refused.Add(1)
			_ = c.Close()
			return
		}
		if len(l.open) >= l.max && !l.dropWaiting("") {
			l.refused.Add(1)
			_ = c.Close()
			return
		}
		oc := &conn{c: c, peer: p}
		oc.elem = l.waiting.PushBack(oc)
		l.open[c] = oc
		l.peers[p]++
	case http.StateActive:
		if oc, ok := l.open[c]; ok && oc.elem != nil {
			l.waiting.Remove(oc.elem)
			oc.elem = nil
		}
	case http.StateIdle:
		if oc, ok := l.open[c]; ok && oc.elem == nil {
			oc.elem = l.waiting.PushBack(oc)
		}
		// The last response's write deadline must not cut the next one
		// short: a request sets its own (stallWriter).
		_ = c.SetWriteDeadline(time.Time{})
	case http.StateHijacked, http.StateClosed:
		if oc, ok := l.open[c]; ok {
			l.forget(oc)
		}
	}
}

// dropWaiting closes the connection of peer p ("": of any peer) that has
// waited longest for a request, and reports whether there was one.
func (l *connLimiter) dropWaiting(p string) bool {
	for e := l.waiting.Front(); e != nil; e = e.Next() {
		oc := e.Value.(*conn)
		if p == "" || oc.peer == p {
			l.forget(oc)
			l.dropped.Add(1)
			_ = oc.c.Close()
			return true
		}
	}
	return false
}

func (l *connLimiter) forget(oc *conn) {
	if oc.elem != nil {
		l.waiting.Remove(oc.elem)
		oc.elem = nil
	}
	delete(l.open, oc.c)
	if l.peers[oc.peer]--; l.peers[oc.peer] <= 0 {
		delete(l.peers, oc.peer)
	}
}

// peerKey names who is at the other end of c: a uid on a unix socket
// (peerUID), the IP address on TCP. All local users of a loopback TCP
// listener are one peer; the unix socket tells them apart.
func peerKey(c net.Conn) string {
	if uc, ok := c.(*net.UnixConn); ok {
		if uid, ok := peerUID(uc); ok {
			return "uid:" + strconv.FormatUint(uint64(uid), 10)
		}
		return "unix"
	}
	if host, _, err := net.SplitHostPort(c.RemoteAddr().String()); err == nil {
		return "ip:" + host
	}
	return c.RemoteAddr().String()
}

// stallReader gives a request body a read deadline per stallChunk bytes,
// so that a body that stops arriving ends its connection after stall,
// while one that arrives slowly but steadily is read whole. At the body's
// end the deadline is lifted: net/http then reads the connection in the
// background (to see a client go away), and a deadline there would cancel
// a long answer.
type stallReader struct {
	io.ReadCloser
	rc    *http.ResponseController
	stall time.Duration
	left  int // bytes until the next deadline
}

func newStallReader(body io.ReadCloser, rc *http.ResponseController, stall time.Duration) *stallReader {
	s := &stallReader{ReadCloser: body, rc: rc, stall: stall}
	s.extend()
	return s
}

func (s *stallReader) extend() {
	_ = s.rc.SetReadDeadline(time.Now().Add(s.stall))
	s.left = stallChunk
}

func (s *stallReader) Read(p []byte) (int, error) {
	if s.left <= 0 {
		s.extend()
	}
	if len(p) > s.left {
		p = p[:s.left]
	}
	n, err := s.ReadCloser.Read(p)
	s.left -= n
	if err == io.EOF {
		_ = s.rc.SetReadDeadline(time.Time{})
	}
	return n, err
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
