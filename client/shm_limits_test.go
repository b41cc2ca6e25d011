//go:build linux

package client

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/modelcache/modelcache/server"
	"github.com/modelcache/modelcache/tier"
)

// A client that keeps every memfd it gets, asking for two tensors in turn
// from a daemon whose budget holds one: each request would make a new
// memfd (the last one evicted, but held). The daemon stops at its
// per-user share, and the bytes come over HTTP from then on, all right.
// Measured: the shared memory of the memfds that exist (held by the
// daemon, or mapped by the client: all in this process).
func TestShm_ClientKeepingMemfdsIsBounded(t *testing.T) {
	ctx := context.Background()
	a, b := fileBytes(t, "Const_61"), fileBytes(t, "Const_59")
	cache, err := tier.Open(&tier.Options{Dir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	defer cache.Close()
	peerMax := int64(4 * max(len(a), len(b)))
	h := server.New(cache, &server.Options{ShmBytes: int64(max(len(a), len(b))), ShmPeerBytes: peerMax, Roots: []string{"/"}})
	defer h.Close()
	socket := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", socket)
	require.NoError(t, err)
	srv := server.Server(h)
	go srv.Serve(l)
	defer srv.Close()
	c, err := Dial(socket)
	require.NoError(t, err)
	defer c.Close()
	before := memfdBytes(t)
	var held []*Mapped
	defer func() {
		for _, m := range held {
			m.Close()
		}
	}()
	overHTTP := 0
	for range 20 {
		for _, name := range []string{"Const_61", "Const_59"} {
			m, err := c.MapTensor(ctx, abs(t), name)
			require.NoError(t, err)
			held = append(held, m)
			require.Equal(t, fileBytes(t, name), m.Bytes())
			if m.heap {
				overHTTP++
			}
		}
	}
	grew := memfdBytes(t) - before
	t.Logf("memfds: %d bytes more; %d of 40 over HTTP", grew, overHTTP)
	// The share, the one memfd that crosses it, and page rounding.
	require.LessOrEqual(t, grew, peerMax+int64(max(len(a), len(b)))+8*4096)
	require.Positive(t, overHTTP)
	// Released when the process that held them is gone: here, the
	// mappings closed do not count, but the process lives on, so the
	// share stays used (documented).
}

// memfdBytes sums the sizes of the distinct modelcache memfds this
// process holds, by descriptor or by mapping.
func memfdBytes(t *testing.T) int64 {
	t.Helper()
	sizes := map[uint64]int64{}
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	for _, e := range ents {
		link, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || !strings.HasPrefix(link, "/memfd:modelcache") {
			continue
		}
		var st unix.Stat_t
		if fd, err := strconv.Atoi(e.Name()); err == nil && unix.Fstat(fd, &st) == nil {
			sizes[st.Ino] = st.Size
		}
	}
	f, err := os.Open("/proc/self/maps")
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset dev inode path
		fs := strings.Fields(sc.Text())
		if len(fs) < 6 || !strings.HasPrefix(fs[5], "/memfd:modelcache") {
			continue
		}
		lo, hi, _ := strings.Cut(fs[0], "-")
		start, _ := strconv.ParseUint(lo, 16, 64)
		end, _ := strconv.ParseUint(hi, 16, 64)
		ino, _ := strconv.ParseUint(fs[4], 10, 64)
		sizes[ino] = max(sizes[ino], int64(end-start))
	}
	require.NoError(t, sc.Err())
	var sum int64
	for _, s := range sizes {
		sum += s
	}
	return sum
}
