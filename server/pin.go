package server

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/tier"
)

// A value GET reads values up to PinBytes whole before it answers, so that
// the bytes it announces are the bytes of one version, whatever a PUT or
// DELETE does meanwhile; PinnedBytes bounds what all requests hold so at
// once (past it, and for larger values, the bytes stream and a value
// replaced mid-stream aborts the connection).
const (
	PinBytes    = 16 << 20
	PinnedBytes = 256 << 20
)

// pin reads v whole when it is worth it: from L2 (L1's bytes do not
// change), not too large, no Range asked for (its cost would not follow
// the bytes asked for), and within PinnedBytes. ok: b holds the value and
// its bytes count in h.pinned until the caller releases them.
func (h *Handler) pin(r *http.Request, v *tier.ValueReader) (b []byte, ok bool, err error) {
	n := v.Size()
	if v.ServedBy == tier.L1 || n > PinBytes || r.Header.Get("Range") != "" || !h.pinned.TryAcquire(n) {
		return nil, false, nil
	}
	b = make([]byte, n)
	if k, err := v.ReadAt(b, 0); k < len(b) || (err != nil && !errors.Is(err, io.EOF)) {
		h.pinned.Release(n)
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return nil, false, err
	}
	return b, true, nil
}

// spoolAbove is how much of a chunked PUT is read into memory before the
// rest goes to a spool file.
const spoolAbove = 1 << 20

// putChunked stores a body of unknown length: a short one from memory, a
// longer one spooled to a deleted file in the spool directory (memory a
// buffer's worth, whatever its size), then put as a PUT of that length
// would be. MaxValueBytes holds as it arrives.
func (h *Handler) putChunked(w http.ResponseWriter, r *http.Request, ns, key string, o *tier.PutOptions) error {
	body := http.MaxBytesReader(w, r.Body, MaxValueBytes)
	buf := make([]byte, spoolAbove)
	n, err := io.ReadFull(body, buf)
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return h.c.Put(r.Context(), ns, key, buf[:n], o)
	case err != nil:
		return bodyErr(err)
	}
	f, err := os.CreateTemp(h.spoolDir, ".warm-put-*")
	if err != nil {
		return fmt.Errorf("server: spooling a PUT of %s: %w", errs.Quote(key), err)
	}
	// Deleted at once: the file lives while it is open, and a crash
	// leaves nothing behind.
	_ = os.Remove(f.Name())
	defer f.Close()
	if _, err := f.Write(buf); err != nil {
		return fmt.Errorf("server: spooling a PUT of %s: %w", errs.Quote(key), err)
	}
	// io.CopyBuffer would hand the copy to the file's ReadFrom, which
	// takes no buffer: a writer without ReadFrom keeps it to buf.
	size, err := io.CopyBuffer(struct{ io.Writer }{f}, body, buf)
	if err != nil {
		return bodyErr(err)
	}
	size += spoolAbove
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if size <= tier.StreamAbove {
		// As a PUT with its length: read whole, and kept in L1 and L3.
		b := make([]byte, size)
		if _, err := io.ReadFull(f, b); err != nil {
			return err
		}
		return h.c.Put(r.Context(), ns, key, b, o)
	}
	return h.c.PutReader(r.Context(), ns, key, f, size, o)
}

// bodyErr is the error of a request body that could not be read: too
// large (past MaxValueBytes), or the client's failure.
func bodyErr(err error) error {
	var mb *http.MaxBytesError
	if errors.As(err, &mb) {
		return fmt.Errorf("%w: a value of more than %d bytes", errs.ErrTooLarge, mb.Limit)
	}
	return fmt.Errorf("%w: reading the body: %w", errs.ErrInvalidArgument, err)
}
