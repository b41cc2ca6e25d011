package server

import (
	"container/list"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/tier"
)

// Shared memory. GET /v1/shm/tensor on the unix socket answers with one
// message: a 4-byte length, a JSON ShmReply, and (on success) a file
// descriptor passed with SCM_RIGHTS: a sealed memfd holding the tensor's
// bytes, which the client maps read-only. The kernel counts the references:
// a mapping stays valid while the client holds it, whatever the daemon
// does, and is freed when the client unmaps it or dies. The daemon keeps
// the memfds of the tensors asked for last, within a byte budget, so that a
// tensor is copied into shared memory once, not per request.

// ShmReply describes the descriptor that follows, or the error.
type ShmReply struct {
	DType    string   `json:"dtype,omitempty"`
	Shape    []uint64 `json:"shape,omitempty"`
	Size     int64    `json:"size"`
	ServedBy string   `json:"served_by,omitempty"`
	// Tensors places each tensor of a whole model in the descriptor.
	Tensors  []ShmTensor `json:"tensors,omitempty"`
	Error    string      `json:"error,omitempty"`
	Sentinel string      `json:"sentinel,omitempty"`
}

// ShmTensor is one tensor's place in a model's descriptor.
type ShmTensor struct {
	Name   string   `json:"name"`
	DType  string   `json:"dtype"`
	Shape  []uint64 `json:"shape"`
	Offset int64    `json:"offset"`
	Size   int64    `json:"size"`
}

// shmEntry is one memfd; refs counts the requests sending it, so that
// eviction never closes a descriptor being sent.
type shmEntry struct {
	key   string
	fd    int
	size  int64
	refs  int
	dead  bool
	elem  *list.Element
	reply ShmReply // what the descriptor holds, Error empty
}

// shmCache keeps memfds by tensor, least recently asked for first out.
type shmCache struct {
	mu    sync.Mutex
	max   int64
	bytes int64
	byKey map[string]*shmEntry
	lru   *list.List // front: newest
}

func newShmCache(max int64) *shmCache {
	return &shmCache{max: max, byKey: map[string]*shmEntry{}, lru: list.New()}
}

// acquire returns the entry for key, with a reference the caller
// releases; fill makes its sealed memfd if the cache has none.
func (c *shmCache) acquire(key string, fill func() (fd int, size int64, reply ShmReply, err error)) (*shmEntry, error) {
	c.mu.Lock()
	if e, ok := c.byKey[key]; ok {
		e.refs++
		c.lru.MoveToFront(e.elem)
		c.mu.Unlock()
		return e, nil
	}
	c.mu.Unlock()
	fd, size, reply, err := fill()
	if err != nil {
		return nil, err
	}
	e := &shmEntry{key: key, fd: fd, size: size, refs: 1, reply: reply}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.byKey[key]; ok { // made meanwhile by another request
		unix.Close(fd)
		old.refs++
		return old, nil
	}
	e.elem = c.lru.PushFront(e)
	c.byKey[key] = e
	c.bytes += e.size
	for c.bytes > c.max && c.lru.Len() > 1 {
		v := c.lru.Back().Value.(*shmEntry)
		c.lru.Remove(v.elem)
		delete(c.byKey, v.key)
		c.bytes -= v.size
		v.dead = true
		if v.refs == 0 {
			unix.Close(v.fd)
		}
	}
	return e, nil
}

func (c *shmCache) release(e *shmEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.refs--; e.refs == 0 && e.dead {
		unix.Close(e.fd)
	}
}

func (c *shmCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.byKey {
		e.dead = true
		if e.refs == 0 {
			unix.Close(e.fd)
		}
	}
	c.byKey, c.bytes = map[string]*shmEntry{}, 0
	c.lru.Init()
}

// newMemfd is an empty memfd of size bytes, to be written and sealed.
func newMemfd(size int64) (int, error) {
	fd, err := unix.MemfdCreate("modelcache", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return -1, fmt.Errorf("server: memfd: %w", err)
	}
	if err := unix.Ftruncate(fd, size); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("server: memfd: %w", err)
	}
	return fd, nil
}

// pwriteAll writes b at off in fd.
func pwriteAll(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if err != nil {
			return fmt.Errorf("server: memfd: %w", err)
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// seal makes fd read-only for good: no process can change what it holds.
func seal(fd int) error {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_WRITE|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		return fmt.Errorf("server: sealing memfd: %w", err)
	}
	return nil
}

// sealedMemfd is a memfd holding data, sealed.
func sealedMemfd(data []byte) (int, error) {
	fd, err := newMemfd(int64(len(data)))
	if err != nil {
		return -1, err
	}
	if err := errors.Join(pwriteAll(fd, data, 0), seal(fd)); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// shmOnUnixOnly is the answer to a shared memory request over TCP: a
// descriptor crosses only a unix socket.
const shmOnUnixOnly = "shared memory (/v1/shm/*) is served on the unix socket only (warm serve --socket); over TCP, GET /v1/tensor"

// onUnixSocket reports whether r came on a unix socket, before anything
// is made for it.
func onUnixSocket(r *http.Request) bool {
	_, ok := r.Context().Value(http.LocalAddrContextKey).(*net.UnixAddr)
	return ok
}

// shmTensor answers on the hijacked connection: one message, the reply
// and the descriptor.
func (h *Handler) shmTensor(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	path, name := q.Get("path"), q.Get("name")
	hj, ok := w.(http.Hijacker)
	if !ok || !onUnixSocket(r) {
		badRequest(w, shmOnUnixOnly)
		return
	}
	var reply ShmReply
	var e *shmEntry
	var m *tier.Model
	var err error
	if path == "" || !q.Has("name") {
		err = fmt.Errorf("%w: want ?path=P&name=N", errs.ErrInvalidArgument)
	} else if path, err = h.allow(path); err == nil {
		m, err = h.c.Model(r.Context(), path)
	}
	if err == nil {
		defer m.Close()
		key := "t\x00" + m.Path() + "\x00" + m.Version() + "\x00" + name
		e, err = h.shm.acquire(key, func() (int, int64, ShmReply, error) {
			t, err := m.Tensor(r.Context(), name)
			if err != nil {
				return -1, 0, ShmReply{}, err
			}
			fd, err := sealedMemfd(t.Bytes())
			return fd, int64(len(t.Bytes())), ShmReply{DType: t.DType, Shape: t.Shape, Size: int64(len(t.Bytes())), ServedBy: t.ServedBy.String()}, err
		})
		if err == nil {
			defer h.shm.release(e)
			reply = e.reply
		}
	}
	h.sendFd(w, hj, reply, err, e)
}

// shmModel answers with one descriptor holding every tensor of the model
// in storage order (ShmReply.Tensors gives each one's place): one request
// and one mapping for a whole model.
func (h *Handler) shmModel(w http.ResponseWriter, r *http.Request) {
	hj, ok := w.(http.Hijacker)
	if !ok || !onUnixSocket(r) {
		badRequest(w, shmOnUnixOnly)
		return
	}
	path := r.URL.Query().Get("path")
	var e *shmEntry
	var m *tier.Model
	var err error
	if path == "" {
		err = fmt.Errorf("%w: want ?path=P", errs.ErrInvalidArgument)
	} else if path, err = h.allow(path); err == nil {
		m, err = h.c.Model(r.Context(), path)
	}
	if err == nil {
		defer m.Close()
		key := "m\x00" + m.Path() + "\x00" + m.Version()
		e, err = h.shm.acquire(key, func() (int, int64, ShmReply, error) {
			reply := ShmReply{Size: int64(m.Bytes())}
			var off int64
			for _, t := range m.Tensors() {
				reply.Tensors = append(reply.Tensors, ShmTensor{Name: t.Name, DType: t.DType, Shape: t.Shape, Offset: off, Size: int64(t.Bytes)})
				off += int64(t.Bytes)
			}
			fd, err := newMemfd(reply.Size)
			if err != nil {
				return -1, 0, reply, err
			}
			i := 0
			_, err = m.Load(r.Context(), nil, func(t *tier.Tensor) error {
				err := pwriteAll(fd, t.Bytes(), reply.Tensors[i].Offset)
				i++
				return err
			})
			if err == nil {
				err = seal(fd)
			}
			if err != nil {
				unix.Close(fd)
				return -1, 0, reply, err
			}
			return fd, reply.Size, reply, nil
		})
		if err == nil {
			defer h.shm.release(e)
		}
	}
	var reply ShmReply
	if e != nil {
		reply = e.reply
	}
	h.sendFd(w, hj, reply, err, e)
}

// sendFd hijacks the connection and sends the reply (or err) with e's
// descriptor, in one message.
func (h *Handler) sendFd(w http.ResponseWriter, hj http.Hijacker, reply ShmReply, err error, e *shmEntry) {
	if err != nil {
		reply, e = ShmReply{Error: err.Error(), Sentinel: sentinelOf(err)}, nil
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return
	}
	body, _ := json.Marshal(reply)
	msg := binary.LittleEndian.AppendUint32(nil, uint32(len(body)))
	msg = append(msg, body...)
	var oob []byte
	if e != nil && e.size > 0 {
		oob = unix.UnixRights(e.fd)
	}
	_, _, _ = uc.WriteMsgUnix(msg, oob, nil)
}
