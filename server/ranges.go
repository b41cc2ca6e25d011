package server

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/modelcache/modelcache/errs"
)

// MaxRanges bounds the ranges of one Range request: each range of a value
// or tensor in L2 may decode a chunk of its own, so a request of thousands
// of one-byte ranges would cost thousands of chunks for a few bytes.
// Past it the answer is 416.
const MaxRanges = 16

// serveContent is http.ServeContent with at most MaxRanges ranges.
func serveContent(w http.ResponseWriter, r *http.Request, content io.ReadSeeker) {
	if n := countRanges(r.Header.Get("Range")); n > MaxRanges {
		if size, err := content.Seek(0, io.SeekEnd); err == nil {
			w.Header().Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
		}
		writeError(w, http.StatusRequestedRangeNotSatisfiable,
			fmt.Errorf("%w: %d ranges in one request (at most %d)", errs.ErrInvalidArgument, n, MaxRanges))
		return
	}
	http.ServeContent(w, r, "", time.Time{}, content)
}

// countRanges is how many ranges a Range header of bytes asks for: its
// comma-separated specs, empty ones apart. Another unit, or none, is 0
// (http.ServeContent ignores or refuses those).
func countRanges(h string) int {
	unit, specs, ok := strings.Cut(h, "=")
	if !ok || strings.TrimSpace(unit) != "bytes" {
		return 0
	}
	n := 0
	for spec := range strings.SplitSeq(specs, ",") {
		if strings.TrimSpace(spec) != "" {
			n++
		}
	}
	return n
}

// abortOnError reads r, and aborts the response when a read fails: the
// status line and length may be sent already, and a client must see a
// broken connection, not a short body. (An L2 entry replaced or deleted
// while it is read fails this way.)
type abortOnError struct{ r io.ReaderAt }

func (a abortOnError) ReadAt(p []byte, off int64) (int, error) {
	n, err := a.r.ReadAt(p, off)
	if err != nil && err != io.EOF {
		panic(http.ErrAbortHandler)
	}
	return n, err
}
