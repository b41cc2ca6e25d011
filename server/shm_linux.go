package server

import (
	"bytes"
	"container/list"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/internal/shmwire"
	"github.com/modelcache/modelcache/tier"
)

// errShmPeerLimit: the peer's user made the daemon create its share of
// shared memory; the bytes come over HTTP.
var errShmPeerLimit = fmt.Errorf("server: shared memory: this user's processes hold their share (Options.ShmPeerBytes); read over HTTP: %w", errs.ErrTooLarge)

// shmEntry is one memfd; refs counts the requests sending it, so that
// eviction never closes a descriptor being sent.
type shmEntry struct {
	key   string
	fd    int
	size  int64
	refs  int
	dead  bool
	elem  *list.Element
	reply shmwire.Reply // what the descriptor holds, Error empty
}

// shmCache keeps memfds by tensor, least recently asked for first out.
//
// The budget bounds the memfds the daemon holds, not those its clients
// hold: a memfd evicted here lives on in every process that keeps it, and
// the next request for it makes a new one. So the memfds a peer makes the
// daemon create are charged to the peer's user, and a user whose live
// processes were charged peerMax is refused (ShmReply.HTTP: the client
// reads over HTTP) until they exit. A process's charges end with it,
// since the kernel then frees what it held.
type shmCache struct {
	mu      sync.Mutex
	max     int64
	bytes   int64
	byKey   map[string]*shmEntry
	lru     *list.List // front: newest
	peerMax int64
	charges map[uint32][]shmCharge // by uid
	created atomic.Int64           // bytes of memfds made, ever
}

// shmCharge is a memfd made for one process, identified by pid and start
// time (pids are reused).
type shmCharge struct {
	pid   int32
	start string
	bytes int64
}

func newShmCache(max, peerMax int64) *shmCache {
	if peerMax <= 0 {
		peerMax = DefaultShmPeerBytes
	}
	return &shmCache{max: max, byKey: map[string]*shmEntry{}, lru: list.New(), peerMax: peerMax, charges: map[uint32][]shmCharge{}}
}

// peer is who asks: the socket peer's credentials.
type peer struct {
	uid uint32
	pid int32
}

// acquire returns the entry for key, with a reference the caller
// releases; fill makes its sealed memfd if the cache has none, charged to
// p.
func (c *shmCache) acquire(key string, p peer, fill func() (fd int, size int64, reply shmwire.Reply, err error)) (*shmEntry, error) {
	c.mu.Lock()
	if e, ok := c.byKey[key]; ok {
		e.refs++
		c.lru.MoveToFront(e.elem)
		c.mu.Unlock()
		return e, nil
	}
	// The check is before fill (the size is not known yet): a user may
	// pass peerMax by the one memfd that crosses it.
	if c.chargedLocked(p.uid) >= c.peerMax {
		c.mu.Unlock()
		return nil, errShmPeerLimit
	}
	c.mu.Unlock()
	fd, size, reply, err := fill()
	if err != nil {
		return nil, err
	}
	c.created.Add(size)
	e := &shmEntry{key: key, fd: fd, size: size, refs: 1, reply: reply}
	c.mu.Lock()
	defer c.mu.Unlock()
	// At least a page: an empty memfd costs an inode, and its charge a
	// slot here.
	c.charges[p.uid] = append(c.charges[p.uid], shmCharge{pid: p.pid, start: procStart(p.pid), bytes: max(size, 4096)})
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

// chargedLocked is what uid's live processes were charged; the charges
// of processes that exited are dropped. mu is held.
func (c *shmCache) chargedLocked(uid uint32) int64 {
	var sum int64
	live := c.charges[uid][:0]
	starts := map[int32]string{}
	for _, ch := range c.charges[uid] {
		s, ok := starts[ch.pid]
		if !ok {
			s = procStart(ch.pid)
			starts[ch.pid] = s
		}
		if s != "" && s == ch.start {
			live = append(live, ch)
			sum += ch.bytes
		}
	}
	if len(live) == 0 {
		delete(c.charges, uid)
	} else {
		c.charges[uid] = live
	}
	return sum
}

// procStart is the start time of process pid (field 22 of
// /proc/PID/stat), "" when it is gone. pid 0 (credentials unknown) is
// never gone.
func procStart(pid int32) string {
	if pid == 0 {
		return "0"
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/stat")
	if err != nil {
		return ""
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

// peerOf is the credentials of the peer of the request's connection
// (SO_PEERCRED); uid and pid 0 when unknown.
func peerOf(r *http.Request) peer {
	uc, ok := r.Context().Value(connKey{}).(*net.UnixConn)
	if !ok {
		return peer{}
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return peer{}
	}
	var cred *unix.Ucred
	_ = raw.Control(func(fd uintptr) { cred, _ = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if cred == nil {
		return peer{}
	}
	return peer{uid: cred.Uid, pid: cred.Pid}
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
	hj := http.NewResponseController(w)
	if !onUnixSocket(r) {
		badRequest(w, shmOnUnixOnly)
		return
	}
	var reply shmwire.Reply
	var e *shmEntry
	var m *tier.Model
	var err error
	p := peerOf(r)
	if path == "" || !q.Has("name") {
		err = fmt.Errorf("%w: want ?path=P&name=N", errs.ErrInvalidArgument)
	} else if path, err = h.allow(path); err == nil {
		m, err = h.c.Model(r.Context(), path)
	}
	if err == nil {
		defer m.Close()
		key := "t\x00" + m.Path() + "\x00" + m.Version() + "\x00" + name
		e, err = h.shm.acquire(key, p, func() (int, int64, shmwire.Reply, error) {
			t, err := m.Tensor(r.Context(), name)
			if err != nil {
				return -1, 0, shmwire.Reply{}, err
			}
			fd, err := sealedMemfd(t.Bytes())
			return fd, int64(len(t.Bytes())), shmwire.Reply{DType: t.DType, Shape: t.Shape, Size: int64(len(t.Bytes())), ServedBy: t.ServedBy.String()}, err
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
	hj := http.NewResponseController(w)
	if !onUnixSocket(r) {
		badRequest(w, shmOnUnixOnly)
		return
	}
	path := r.URL.Query().Get("path")
	var e *shmEntry
	var m *tier.Model
	var err error
	p := peerOf(r)
	if path == "" {
		err = fmt.Errorf("%w: want ?path=P", errs.ErrInvalidArgument)
	} else if path, err = h.allow(path); err == nil {
		m, err = h.c.Model(r.Context(), path)
	}
	if err == nil {
		defer m.Close()
		key := "m\x00" + m.Path() + "\x00" + m.Version()
		e, err = h.shm.acquire(key, p, func() (int, int64, shmwire.Reply, error) {
			reply := shmwire.Reply{Size: int64(m.Bytes())}
			var off int64
			for _, t := range m.Tensors() {
				reply.Tensors = append(reply.Tensors, shmwire.Tensor{Name: t.Name, DType: t.DType, Shape: t.Shape, Offset: off, Size: int64(t.Bytes)})
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
	var reply shmwire.Reply
	if e != nil {
		reply = e.reply
	}
	h.sendFd(w, hj, reply, err, e)
}

// sendFd hijacks the connection and sends the reply (or err) with e's
// descriptor, in one message.
func (h *Handler) sendFd(w http.ResponseWriter, hj *http.ResponseController, reply shmwire.Reply, err error, e *shmEntry) {
	if err != nil {
		reply, e = shmwire.Reply{Error: err.Error(), Sentinel: sentinelOf(err), HTTP: errors.Is(err, errShmPeerLimit)}, nil
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
	// A client that does not read its answer loses it.
	_ = uc.SetWriteDeadline(time.Now().Add(h.limits.stall))
	body, _ := json.Marshal(reply)
	msg := binary.LittleEndian.AppendUint32(nil, uint32(len(body)))
	msg = append(msg, body...)
	var oob []byte
	if e != nil && e.size > 0 {
		oob = unix.UnixRights(e.fd)
	}
	_, _, _ = uc.WriteMsgUnix(msg, oob, nil)
}
